#!/usr/bin/env python3
"""Overhead of CBSTMiddleware on a real MCP ``tools/call`` round trip over HTTP.

Two servers, side by side, each its own uvicorn process on loopback, identical except for the
protection: the example MCP server (official ``mcp`` SDK, streamable HTTP, JSON responses,
stateless) bare, and the same wrapped by ``CBSTMiddleware`` (tool rate limit off, so the
benchmark measures verification and enforcement, not throttling). A real IdP (``idp serve``)
issues the token and serves the JWKS and revocation list.

The request is a 2026-07-28 ``tools/call`` of ``echo`` (per-request ``_meta`` envelope,
``Mcp-Method``/``Mcp-Name`` headers) — one self-contained POST, one JSON response — byte for
byte the same to both servers (bearer token included; the bare server ignores it). The
protected server sees the same token on every request (a session's steady state: cached
verification); the bench also reports the cold path (a fresh token per request) separately.

Measured in rounds, medians over rounds:
  latency   sequential requests, one keep-alive connection per server, alternating between the
            servers request by request (A B B A ...): p50, p99
  server CPU  utime+stime of each server process per request during the latency runs
  throughput  ``--concurrency`` concurrent keep-alive connections (asyncio httpx), requests/s

Target (issue 3): ≤ 10% added p50 latency.

Run: .venv/bin/python bench/mcp_overhead.py [--quick] [--rounds N] [--requests N]
Writes bench/results/mcp_overhead.md and bench/results/mcp_overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))
from _common import RESULTS_DIR, dist_version, git_info, machine_info, now_iso  # noqa: E402

MODERN = "2026-07-28"


def log(msg: str) -> None:
    print(f"[mcp_overhead] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited ({proc.returncode})")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


# --- server mode (a child process) -----------------------------------------------------------------

def serve(kind: str, port: int, issuer: str) -> None:
    import importlib.util

    import uvicorn

    spec = importlib.util.spec_from_file_location("example_server", REPO / "examples" / "server.py")
    assert spec and spec.loader
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    from sdk.server import ProtectionConfig

    resource = f"http://127.0.0.1:{port}/mcp"
    if kind == "plain":
        app = example.build_mcp().streamable_http_app(stateless_http=True, json_response=True)
    else:
        config = ProtectionConfig(issuer=issuer, resource=resource, tool_rate=None, audit=lambda e: None)
        app = example.create_app(config, stateless=True, json_response=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- the bench ------------------------------------------------------------------------------------------

class Proc:
    def __init__(self, argv: list[str], env: dict[str, str], url: str, log_path: Path) -> None:
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=REPO)
        self.url = url
        try:
            wait_http(url, self.proc)
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def start_idp(tmp: Path) -> tuple[Proc, str, tuple[str, str], object]:
    from idp.config import Settings
    from idp.provider import Provider

    port = free_port()
    kek = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    settings = Settings(issuer=f"http://127.0.0.1:{port}", database_url=f"sqlite:///{tmp / 'idp.db'}",
                        keys_dir=tmp / "keys", keystore_kek=kek, log_json=True)
    provider = Provider.open(settings)
    env = {"IDP_ISSUER": settings.issuer, "IDP_DATABASE_URL": settings.database_url,
           "IDP_KEYS_DIR": str(settings.keys_dir), "IDP_KEYSTORE_KEK": kek, "IDP_LOG_LEVEL": "warning",
           "IDP_ACCESS_TOKEN_TTL": "3600"}
    proc = Proc([sys.executable, "-m", "idp.cli", "serve", "--host", "127.0.0.1", "--port", str(port)], env,
                 settings.issuer + "/healthz", tmp / "idp.log")
    return proc, settings.issuer, ("", ""), provider


def token_for(issuer: str, provider: object, resource: str, n: int = 1) -> list[str]:
    import httpx

    record, secret = provider.clients.add(f"bench-{secrets.token_hex(4)}", capabilities="tools/call:echo",  # type: ignore[attr-defined]
                                          audiences=[resource], auth_method="client_secret_basic")
    out = []
    with httpx.Client(timeout=10) as c:
        for _ in range(n):
            r = c.post(issuer + "/token", data={"grant_type": "client_credentials", "resource": resource},
                       auth=(record.client_id, secret))
            r.raise_for_status()
            out.append(r.json()["access_token"])
    return out


def body() -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "echo", "arguments": {"text": "hello"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                  "io.modelcontextprotocol/clientCapabilities": {}}}}).encode()


def headers(token: str | None) -> dict[str, str]:
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
         "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "echo"}
    if token:
        h["Authorization"] = f"Bearer {token}"
    return h


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ab_latency(urls: dict[str, str], tokens: dict[str, list[str | None]], n: int) -> dict[str, list[float]]:
    """Sequential requests alternating between the servers (A B B A A B ...), one keep-alive
    connection each, so that noise from other processes hits both alike."""
    import httpx

    payload = body()
    kinds = list(urls)
    hs = {k: [headers(t) for t in tokens[k]] for k in kinds}
    out: dict[str, list[float]] = {k: [] for k in kinds}
    clients = {k: httpx.Client(timeout=30) for k in kinds}
    try:
        for i in range(n):
            order = kinds if i % 2 == 0 else kinds[::-1]
            for k in order:
                t0 = time.perf_counter()
                r = clients[k].post(urls[k], content=payload, headers=hs[k][i % len(hs[k])])
                out[k].append(time.perf_counter() - t0)
                if r.status_code != 200 or b'"hello"' not in r.content:
                    raise RuntimeError(f"{urls[k]}: unexpected answer {r.status_code} {r.text[:200]}")
    finally:
        for c in clients.values():
            c.close()
    return out


def latency_run(url: str, tokens: list[str | None], n: int) -> list[float]:
    import httpx

    payload = body()
    hs = [headers(t) for t in tokens]
    out = []
    with httpx.Client(timeout=30) as c:
        for i in range(n):
            t0 = time.perf_counter()
            r = c.post(url, content=payload, headers=hs[i % len(hs)])
            out.append(time.perf_counter() - t0)
            if r.status_code != 200 or b'"hello"' not in r.content:
                raise RuntimeError(f"{url}: unexpected answer {r.status_code} {r.text[:200]}")
    return out


async def _throughput(url: str, token: str | None, concurrency: int, seconds: float) -> float:
    import httpx

    payload, h = body(), headers(token)
    count = 0
    deadline = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            r = await client.post(url, content=payload, headers=h)
            if r.status_code != 200:
                raise RuntimeError(f"{url}: {r.status_code}")
            count += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return count / (time.perf_counter() - t0)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def render(result: dict) -> tuple[str, float]:
    """The markdown report (and the paired added p50) from a result dict; fills its summaries."""
    lat = result["rounds"]["latency_s"]
    thr = result["rounds"]["rps"]
    cpu = result["rounds"]["server_cpu_s_per_request"]
    m = result["meta"]
    rounds, n, concurrency, seconds = m["rounds"], m["requests_per_round"], m["concurrency"], m["throughput_seconds"]
    summary: dict = {}
    for kind, rows in lat.items():
        summary[kind] = {k: statistics.median(r[k] for r in rows) * 1e3 for k in ("p50", "p99", "mean")}
        if kind in thr:
            summary[kind]["rps"] = statistics.median(thr[kind])
            summary[kind]["server_cpu_us"] = statistics.median(cpu[kind]) * 1e6
    # Rounds are interleaved, so compare pairwise: the median over rounds of the per-round
    # difference cancels drift in the machine's load between rounds (unpaired medians do not).
    paired = [p["p50"] / q["p50"] - 1 for p, q in zip(lat["protected"], lat["plain"], strict=True)]
    paired_us = [(p["p50"] - q["p50"]) * 1e6 for p, q in zip(lat["protected"], lat["plain"], strict=True)]
    paired_cpu = [(p - q) * 1e6 for p, q in zip(cpu["protected"], cpu["plain"], strict=True)]
    paired_rps = [p / q - 1 for p, q in zip(thr["protected"], thr["plain"], strict=True)]
    added = statistics.median(paired)
    result["summary_ms"] = summary
    result["added_p50"] = added
    result["paired"] = {"added_p50_ratio": paired, "added_p50_us": paired_us, "added_server_cpu_us": paired_cpu,
                        "throughput_ratio": paired_rps}
    s = summary
    lines = [
        "# CBSTMiddleware overhead on an MCP tools/call round trip (bench/mcp_overhead.py)", "",
        f"{m['generated']}, Python {m['python']}, mcp {m['versions']['mcp']}, uvicorn {m['versions']['uvicorn']}; "
        f"{m['machine'].get('nproc')} cores ({m['machine'].get('cpu_model', '?')}); {rounds} interleaved rounds of "
        f"{n} sequential requests per server; throughput with {concurrency} connections for {seconds:g} s per "
        f"round; medians over rounds{' (quick)' if m['quick'] else ''}.", "",
        "Same example server (official SDK, stateless, JSON responses), each in its own uvicorn process; the "
        "request is a 2026-07-28 `tools/call` of `echo`, byte for byte the same to both servers (the bare one "
        "ignores the bearer token). The client, both servers and the IdP share the machine's cores.", "",
        "Latency: sequential requests alternating between the two servers (A B B A ...) so that noise "
        "from other processes hits both alike. Server CPU: utime+stime of the server process per "
        "request during the latency runs (10 ms tick resolution over the run).", "",
        "| server | p50 ms | p99 ms | mean ms | server CPU µs/req | req/s (c=%d) |" % concurrency,
        "|---|---:|---:|---:|---:|---:|",
        f"| plain | {s['plain']['p50']:.3f} | {s['plain']['p99']:.3f} | {s['plain']['mean']:.3f} | "
        f"{s['plain']['server_cpu_us']:.0f} | {s['plain']['rps']:.0f} |",
        f"| protected (token cached) | {s['protected']['p50']:.3f} | {s['protected']['p99']:.3f} | "
        f"{s['protected']['mean']:.3f} | {s['protected']['server_cpu_us']:.0f} | {s['protected']['rps']:.0f} |",
        f"| protected, new token every request | {s['protected-cold']['p50']:.3f} | {s['protected-cold']['p99']:.3f} | "
        f"{s['protected-cold']['mean']:.3f} | – | – |", "",
        "Added cost, paired per round (median over rounds of protected − plain in the same round; "
        "the table's columns are unpaired medians):", "",
        f"- p50 latency: **{added * 100:+.1f}%** ({statistics.median(paired_us):+.0f} µs; per round "
        f"{', '.join(f'{x * 100:+.1f}%' for x in paired)}) — target ≤ 10%: "
        f"{'met' if added <= 0.10 else 'NOT met'}",
        f"- server CPU: {statistics.median(paired_cpu):+.0f} µs/request",
        f"- throughput at c={concurrency}: {statistics.median(paired_rps) * 100:+.1f}% (client, servers "
        "and IdP share 2 cores, so this mostly follows the server CPU per request)", "",
    ]
    return "\n".join(lines), added


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--serve", choices=["plain", "protected"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--issuer", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--requests", type=int, help="sequential requests per round and server")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seconds", type=float, help="throughput run per round and server")
    ap.add_argument("--render-only", action="store_true", help="rewrite the .md from the last .json")
    args = ap.parse_args()
    if args.render_only:
        result = json.loads((RESULTS_DIR / "mcp_overhead.json").read_text())
        md, added = render(result)
        (RESULTS_DIR / "mcp_overhead.md").write_text(md)
        (RESULTS_DIR / "mcp_overhead.json").write_text(json.dumps(result, indent=2))
        log(f"added p50 {added * 100:+.1f}%; rewrote {RESULTS_DIR / 'mcp_overhead.md'}")
        return
    if args.serve:
        serve(args.serve, args.port, args.issuer)
        return
    rounds = args.rounds or (3 if args.quick else 9)
    n = args.requests or (300 if args.quick else 1500)
    seconds = args.seconds or (2.0 if args.quick else 5.0)

    with tempfile.TemporaryDirectory(prefix="cbst-bench-") as d:
        tmp = Path(d)
        idp, issuer, _, provider = start_idp(tmp)
        procs = [idp]
        try:
            servers = {}
            for kind in ("plain", "protected"):
                port = free_port()
                p = Proc([sys.executable, str(Path(__file__).resolve()), "--serve", kind, "--port", str(port),
                          "--issuer", issuer], {}, f"http://127.0.0.1:{port}/", tmp / f"{kind}.log")
                procs.append(p)
                servers[kind] = f"http://127.0.0.1:{port}/mcp"
            resource = servers["protected"]
            token = token_for(issuer, provider, resource)[0]
            cold_tokens = token_for(issuer, provider, resource, n=min(n, 400))
            # identical requests to both servers (the bare one ignores the Authorization header):
            # only the middleware differs
            toks = {"plain": [token], "protected": [token]}
            for kind, url in servers.items():  # warm up both (JWKS fetch, imports, JIT-free caches)
                latency_run(url, toks[kind], 100)
            lat: dict[str, list[dict]] = {"plain": [], "protected": [], "protected-cold": []}
            thr: dict[str, list[float]] = {"plain": [], "protected": []}
            cpu: dict[str, list[float]] = {"plain": [], "protected": []}
            pids = {"plain": procs[1].proc.pid, "protected": procs[2].proc.pid}
            for r in range(rounds):
                before = {k: cpu_seconds(pid) for k, pid in pids.items()}
                res = ab_latency(servers, toks, n)
                for kind, xs in res.items():
                    cpu[kind].append((cpu_seconds(pids[kind]) - before[kind]) / n)
                    lat[kind].append({"p50": statistics.median(xs), "p99": pct(xs, 0.99), "mean": statistics.fmean(xs)})
                xs = latency_run(servers["protected"], cold_tokens, len(cold_tokens))  # each token seen once
                lat["protected-cold"].append({"p50": statistics.median(xs), "p99": pct(xs, 0.99),
                                              "mean": statistics.fmean(xs)})
                cold_tokens = token_for(issuer, provider, resource, n=len(cold_tokens))
                for kind, url in servers.items():
                    thr[kind].append(asyncio.run(_throughput(url, toks[kind][0], args.concurrency, seconds)))
                log(f"round {r + 1}/{rounds}: p50 plain {lat['plain'][-1]['p50'] * 1e3:.3f} ms, protected "
                    f"{lat['protected'][-1]['p50'] * 1e3:.3f} ms; rps plain {thr['plain'][-1]:.0f}, "
                    f"protected {thr['protected'][-1]:.0f}")
        finally:
            for p in reversed(procs):
                p.stop()
            provider.engine.dispose()  # type: ignore[attr-defined]

    result = {
        "meta": {"generated": now_iso(), "machine": machine_info(), "git": git_info(), "python": sys.version.split()[0],
                 "versions": {p: dist_version(p) for p in ("mcp", "uvicorn", "starlette", "httpx", "cryptography")},
                 "rounds": rounds, "requests_per_round": n, "concurrency": args.concurrency,
                 "throughput_seconds": seconds, "quick": args.quick},
        "rounds": {"latency_s": lat, "rps": thr, "server_cpu_s_per_request": cpu},
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    md, added = render(result)
    (RESULTS_DIR / "mcp_overhead.json").write_text(json.dumps(result, indent=2))
    (RESULTS_DIR / "mcp_overhead.md").write_text(md)
    log(f"added p50 {added * 100:+.1f}%; wrote {RESULTS_DIR / 'mcp_overhead.md'}")


if __name__ == "__main__":
    main()
