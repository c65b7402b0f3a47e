// Drive a CBST-protected MCP server with an official TypeScript client doing its OWN OAuth:
// @modelcontextprotocol/sdk 1.x ("sdk": "v1") or @modelcontextprotocol/client 2.x ("sdk": "v2"),
// or mcp-remote (a stdio proxy doing the OAuth; "auth.kind": "mcp-remote") driven by the v1 client.
//
// Same line protocol as ../py_driver.py. stdin, first line — one JSON object:
//   {"sdk": "v1" | "v2", "url": "http://127.0.0.1:P/mcp",
//    "auth": {"kind": "client_credentials", "client_id", "client_secret", "issuer", "scope"?}
//          | {"kind": "interactive", "redirect_uri", "client_name"?, "client_metadata_url"?,
//             "client_id"? (pre-registered, public), "scope"? (asked for up front with the SDK's auth())}
//          | {"kind": "mcp-remote", "args": [...], "config_dir"},
//    "ops": [{"id", "op": "list_tools" | "call_tool" | ... | "pause" | "expire_access_token"}]}
// stdout — JSON lines: {"id", "ok"} / {"id", "error"} per op ("connect" first);
//   {"event": "authorize", "url"} when the client sends the person to the authorization endpoint:
//     the test answers with one line {"callback": "<the redirect URI with code, state, iss>"} or
//     {"error": "..."}; {"event": "registered", "client_id"}; {"event": "tokens", "access_token",
//   "scope", "refresh_token"}; {"event": "reauthorized", "id"} when an op needed a new authorization;
//   {"event": "paused"}; {"event": "done"} at the end.
// Nothing here is specific to CBST: it is what a host application writes around the SDK.

import { createInterface } from "node:readline";
import { randomBytes } from "node:crypto";

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const describe = (err) => {
  let text = `${err?.name ?? "Error"}: ${err?.message ?? String(err)}${err?.code !== undefined ? ` (code ${err.code})` : ""}`;
  if (err?.cause) text += ` | cause: ${describe(err.cause)}`;
  return text;
};
const readLine = async () => {
  const next = await lines.next();
  if (next.done) throw new Error("stdin closed");
  return JSON.parse(next.value);
};

async function loadSdk(which) {
  if (which === "v2") {
    const m = await import("@modelcontextprotocol/client");
    const stdio = await import("@modelcontextprotocol/client/stdio");
    return { ...m, StdioClientTransport: stdio.StdioClientTransport, v2: true };
  }
  const [client, http, stdio, auth, ext] = await Promise.all([
    import("@modelcontextprotocol/sdk/client/index.js"),
    import("@modelcontextprotocol/sdk/client/streamableHttp.js"),
    import("@modelcontextprotocol/sdk/client/stdio.js"),
    import("@modelcontextprotocol/sdk/client/auth.js"),
    import("@modelcontextprotocol/sdk/client/auth-extensions.js"),
  ]);
  return {
    Client: client.Client, StreamableHTTPClientTransport: http.StreamableHTTPClientTransport,
    StdioClientTransport: stdio.StdioClientTransport, UnauthorizedError: auth.UnauthorizedError, auth: auth.auth,
    ClientCredentialsProvider: ext.ClientCredentialsProvider, v2: false,
  };
}

const reportTokens = (tokens) => emit({ event: "tokens", access_token: tokens.access_token,
                                         scope: tokens.scope ?? null, refresh_token: tokens.refresh_token ?? null });

/** An in-memory OAuthClientProvider for the authorization code flow, "redirecting" through the test. */
class HeadlessProvider {
  constructor(cfg) {
    this.cfg = cfg;
    this._client = cfg.client_id ? { client_id: cfg.client_id } : undefined;
    if (cfg.client_metadata_url) this.clientMetadataUrl = cfg.client_metadata_url;
    this.callback = undefined; // the redirect URI the person's browser came back to
  }
  get redirectUrl() { return this.cfg.redirect_uri; }
  get clientMetadata() {
    return {
      client_name: this.cfg.client_name ?? "cbst-interop-ts",
      redirect_uris: [this.cfg.redirect_uri],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    };
  }
  state() { this._state = randomBytes(16).toString("base64url"); return this._state; }
  clientInformation() { return this._client; }
  saveClientInformation(info) { this._client = info; emit({ event: "registered", client_id: info.client_id }); }
  tokens() { return this._tokens; }
  saveTokens(tokens) { this._tokens = tokens; reportTokens(tokens); }
  saveCodeVerifier(v) { this._verifier = v; }
  codeVerifier() { return this._verifier; }
  invalidateCredentials(scope) { emit({ event: "invalidate", scope }); if (scope === "all" || scope === "tokens") this._tokens = undefined; }
  async redirectToAuthorization(url) {
    emit({ event: "authorize", url: url.href });
    const answer = await readLine();
    if (answer.error) throw new Error(`authorization failed: ${answer.error}`);
    const cb = new URL(answer.callback);
    // The SDK leaves `state` to the host (it does not see the callback): check it here.
    if (cb.searchParams.get("state") !== this._state) throw new Error("state mismatch in the authorization response");
    this.callback = cb;
  }
}

/** mcp-remote's stderr: when it prints an authorization URL, the person opens it and the browser
 * lands on mcp-remote's own callback server (a plain GET of the final redirect). */
function watchMcpRemote(stream) {
  const rl = createInterface({ input: stream });
  rl.on("line", async (line) => {
    process.stderr.write(`[mcp-remote] ${line}\n`);
    const m = line.trim().match(/^(https?:\/\/\S+\/authorize\?\S+)$/);
    if (!m) return;
    emit({ event: "authorize", url: m[1] });
    try {
      const answer = await readLine();
      if (answer.error) return;
      const res = await fetch(answer.callback);
      emit({ event: "callback_delivered", status: res.status });
    } catch (err) {
      emit({ event: "callback_failed", error: describe(err) });
    }
  });
}

const text = (content) => (content ?? []).map((c) => c.text ?? "").join("");

async function runOp(client, op) {
  switch (op.op) {
    case "list_tools":
      return (await client.listTools()).tools.map((t) => t.name).sort();
    case "call_tool": {
      const result = await client.callTool({ name: op.name, arguments: op.arguments ?? {} });
      return { text: text(result.content), is_error: Boolean(result.isError) };
    }
    case "list_resources":
      return (await client.listResources()).resources.map((r) => r.uri).sort();
    case "read_resource":
      return (await client.readResource({ uri: op.uri })).contents.map((c) => c.text ?? "").join("");
    default:
      throw new Error(`unknown op ${op.op}`);
  }
}

async function main() {
  const config = JSON.parse((await lines.next()).value);
  const sdk = await loadSdk(config.sdk ?? "v1");
  const url = new URL(config.url);
  const a = config.auth;
  let provider;
  if (a.kind === "client_credentials") {
    // The SDK's provider as is; only its token store reports to the test.
    class Reporting extends sdk.ClientCredentialsProvider {
      saveTokens(tokens) { super.saveTokens(tokens); reportTokens(tokens); }
    }
    provider = new Reporting({ clientId: a.client_id, clientSecret: a.client_secret, scope: a.scope,
                               expectedIssuer: a.issuer });
  } else if (a.kind === "interactive") {
    provider = new HeadlessProvider(a);
  }
  const makeTransport = () => {
    if (a.kind === "mcp-remote") {
      // BROWSER=true: the opener "succeeds" without a browser; the person is played by the test,
      // from the authorization URL mcp-remote prints for people whose browser did not open.
      const t = new sdk.StdioClientTransport({
        command: process.execPath, args: a.args, stderr: a.interactive ? "pipe" : "inherit",
        env: { ...process.env, MCP_REMOTE_CONFIG_DIR: a.config_dir, BROWSER: "true" },
      });
      if (a.interactive) watchMcpRemote(t.stderr);
      return t;
    }
    return new sdk.StreamableHTTPClientTransport(url, { authProvider: provider });
  };
  let transport, client;
  const finish = async () => {
    // The person came back: hand the code (and RFC 9207 iss) to the SDK, which redeems it.
    const cb = provider?.callback;
    if (!cb) return false;
    provider.callback = undefined;
    if (sdk.v2) await transport.finishAuth(cb.searchParams);
    else await transport.finishAuth(cb.searchParams.get("code"));
    return true;
  };
  const connect = async () => {
    transport = makeTransport();
    client = new sdk.Client({ name: "cbst-interop-ts-oauth", version: "0.0.0" });
    await client.connect(transport);
  };

  try {
    if (a.kind === "interactive" && a.scope) {
      // A host that knows what it needs asks for it up front (e.g. offline_access, which a server
      // never puts in its challenges): the SDK's own auth(), before the first connect.
      const result = await sdk.auth(provider, { serverUrl: url, scope: a.scope });
      if (result === "REDIRECT") {
        transport = makeTransport();
        await finish();
      }
    }
    try {
      await connect();
    } catch (err) {
      if (!(err instanceof sdk.UnauthorizedError) || !(await finish())) throw err;
      await connect(); // a new transport with the tokens the code bought
    }
    emit({ id: "connect", ok: { protocol_version: transport.protocolVersion ?? null } });
  } catch (err) {
    emit({ id: "connect", error: describe(err) });
    return;
  }
  for (const op of config.ops) {
    if (op.op === "pause") {
      emit({ event: "paused" });
      await lines.next();
      continue;
    }
    if (op.op === "expire_access_token") {
      // The access token stops being good (expired, revoked): the next request draws a 401 and the
      // SDK must use the refresh token.
      provider._tokens = { ...provider._tokens, access_token: "expired-" + randomBytes(8).toString("hex") };
      emit({ id: op.id, ok: true });
      continue;
    }
    try {
      emit({ id: op.id, ok: await runOp(client, op) });
    } catch (err) {
      // A step-up: the SDK sent the person to consent again and threw; finish and retry once.
      if (err instanceof sdk.UnauthorizedError && provider?.callback) {
        try {
          await finish();
          emit({ event: "reauthorized", id: op.id });
          emit({ id: op.id, ok: await runOp(client, op) });
        } catch (err2) {
          emit({ id: op.id, error: describe(err2) });
        }
      } else {
        emit({ id: op.id, error: describe(err) });
      }
    }
  }
  try {
    await client.close();
  } catch (err) {
    emit({ event: "close_error", error: describe(err) });
  }
}

main()
  .catch((err) => emit({ event: "fatal", error: describe(err) }))
  .finally(() => {
    emit({ event: "done" });
    process.exit(0);
  });
