// Drive a CBST-protected MCP server with the official TypeScript client (@modelcontextprotocol/sdk).
//
// Same protocol as ../py_driver.py: the first line of stdin is a JSON object
//   {"url": ..., "auth": {"issuer", "client_id", "client_secret", "scope", "resource"} | {"token"},
//    "ops": [{"id", "op": "list_tools" | "call_tool" | "list_resources" | "read_resource" |
//             "list_prompts" | "get_prompt" | "pause", ...}]}
// stdout gets JSON lines: {"event": "token", "token"} once a token is obtained, {"id", "ok"} or
// {"id", "error"} per op ("connect" first), {"event": "paused"} while a pause op waits for a line
// on stdin, {"event": "done"} at the end.
//
// The token comes from the IdP by the client credentials grant (RFC 6749 §4.4) with
// client_secret_basic, the token endpoint discovered from RFC 8414 metadata — plain fetch.

import { createInterface } from "node:readline";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const describe = (err) => `${err?.name ?? "Error"}: ${err?.message ?? String(err)}${err?.code !== undefined ? ` (code ${err.code})` : ""}`;

async function getToken(auth) {
  const meta = await fetch(`${auth.issuer}/.well-known/oauth-authorization-server`);
  if (!meta.ok) throw new Error(`metadata: HTTP ${meta.status}`);
  const { issuer, token_endpoint: tokenEndpoint } = await meta.json();
  if (issuer !== auth.issuer) throw new Error(`metadata issuer ${issuer} != ${auth.issuer}`);
  const form = new URLSearchParams({ grant_type: "client_credentials" });
  if (auth.scope) form.set("scope", auth.scope);
  if (auth.resource) form.set("resource", auth.resource);
  // RFC 6749 §2.3.1: client id and secret are form-urlencoded before base64.
  const basic = Buffer.from(`${encodeURIComponent(auth.client_id)}:${encodeURIComponent(auth.client_secret)}`).toString("base64");
  const res = await fetch(tokenEndpoint, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", authorization: `Basic ${basic}` },
    body: form,
  });
  const body = await res.json();
  if (!res.ok) throw new Error(`token endpoint: HTTP ${res.status} ${body.error}: ${body.error_description}`);
  return body.access_token;
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
    case "list_prompts":
      return (await client.listPrompts()).prompts.map((p) => p.name).sort();
    case "get_prompt": {
      const result = await client.getPrompt({ name: op.name, arguments: op.arguments ?? {} });
      return result.messages.length ? result.messages[0].content.text : "";
    }
    default:
      throw new Error(`unknown op ${op.op}`);
  }
}

async function main() {
  const config = JSON.parse((await lines.next()).value);
  let token = config.auth.token;
  try {
    if (!token) {
      token = await getToken(config.auth);
      emit({ event: "token", token });
    }
  } catch (err) {
    emit({ id: "connect", error: describe(err) });
    return;
  }
  const transport = new StreamableHTTPClientTransport(new URL(config.url), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  const client = new Client({ name: "cbst-interop-ts", version: "0.0.0" });
  try {
    await client.connect(transport);
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
    try {
      emit({ id: op.id, ok: await runOp(client, op) });
    } catch (err) {
      emit({ id: op.id, error: describe(err) });
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
