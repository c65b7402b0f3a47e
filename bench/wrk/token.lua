-- wrk script: POST /token (client_credentials) with HTTP Basic client authentication.
--
-- Configured through the environment (set by bench/token_endpoint.py):
--   BENCH_TOKEN_PATH   request path, e.g. /token
--   BENCH_AUTH         value of the Authorization header, e.g. "Basic YmVuY2g6..."
--   BENCH_BODY         application/x-www-form-urlencoded body
--   BENCH_RESULT_FILE  if set, done() writes one JSON object with the summary there
--
-- Every response's status is counted per thread; done() adds them up so the runner can
-- refuse a run where the server answered anything but 200 (a fast 401 is not a token).

local path = os.getenv("BENCH_TOKEN_PATH") or "/token"
local auth = os.getenv("BENCH_AUTH") or ""
local body = os.getenv("BENCH_BODY") or ""
local result_file = os.getenv("BENCH_RESULT_FILE")

wrk.method = "POST"
wrk.path = path
wrk.body = body
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = auth
wrk.headers["Accept"] = "application/json"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok = 0
  not_ok = 0
  statuses = {}
end

-- One pre-formatted request, reused (wrk.format is evaluated once per thread here).
local req = nil
function request()
  if req == nil then
    req = wrk.format(nil, nil, nil, nil)
  end
  return req
end

function response(status, headers, resp_body)
  if status == 200 then
    ok = ok + 1
  else
    not_ok = not_ok + 1
    local k = tostring(status)
    statuses[k] = (statuses[k] or 0) + 1
  end
end

function done(summary, latency, requests)
  local total_ok, total_not_ok = 0, 0
  local codes = {}
  for _, t in ipairs(threads) do
    total_ok = total_ok + (t:get("ok") or 0)
    total_not_ok = total_not_ok + (t:get("not_ok") or 0)
    local s = t:get("statuses")
    if s then
      for k, v in pairs(s) do codes[k] = (codes[k] or 0) + v end
    end
  end
  local parts = {}
  for k, v in pairs(codes) do table.insert(parts, string.format('"%s": %d', k, v)) end
  local e = summary.errors
  local out = string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"ok": %d, "not_ok": %d, "other_statuses": {%s}, ' ..
    '"latency_us": {"min": %d, "mean": %.2f, "max": %d, "stdev": %.2f, ' ..
    '"p50": %d, "p75": %d, "p90": %d, "p99": %d, "p999": %d}}',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    total_ok, total_not_ok, table.concat(parts, ", "),
    latency.min, latency.mean, latency.max, latency.stdev,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9))
  if result_file and result_file ~= "" then
    local f = assert(io.open(result_file, "w"))
    f:write(out)
    f:close()
  else
    io.write("BENCH_RESULT " .. out .. "\n")
  end
end
