"""An MCP client that calls a CBST-protected server with a capability token from the IdP.

With the IdP running (``make run``) and the example server running
(``.venv/bin/python examples/server.py --port 9000``), register a client and call the server::

    .venv/bin/idp clients add demo-client --capabilities "tools/call:echo resources/read:file:///docs/**" \\
        --audience http://127.0.0.1:9000/mcp --json > demo-client.json
    .venv/bin/python examples/client.py --credentials demo-client.json

It asks the IdP for a token (client credentials grant, scope = ``--scope`` or every registered
capability, ``resource`` = the server URL), lists what the token lets it see, and calls a tool::

    .venv/bin/python examples/client.py --credentials demo-client.json --call add '{"a": 1, "b": 2}'
    .venv/bin/python examples/client.py --credentials demo-client.json --read file:///docs/readme.md

Credentials come from ``--credentials FILE`` (the JSON ``idp clients add --json`` prints), or
``--client-id``/``--client-secret``, or ``--client-id``/``--key-file`` (``private_key_jwt``),
or the environment (``CBST_ISSUER``, ``CBST_CLIENT_ID``, ``CBST_CLIENT_SECRET``,
``CBST_PRIVATE_KEY_FILE``, ``CBST_SCOPE``, ``CBST_SERVER``). A refused call is printed with the
server's reason; with ``--scope`` narrower than the registration, a call beyond it makes the
client step up (ask the IdP for the union of its scope and the challenged one) once.

``--mode legacy`` forces the handshake generation (``initialize``); the default ``auto`` uses
the 2026-07-28 generation when the server offers it.

Bad input is a usage error; an IdP or server that is down or broken is one line on stderr and
exit status 1 (``--verbose`` also prints the MCP SDK's own log records).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import httpx2

from sdk.client import ClientCredentials, TokenError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--issuer", default=env("CBST_ISSUER", "http://127.0.0.1:8000"), help="the IdP (issuer URL)")
    p.add_argument("--server", default=env("CBST_SERVER", "http://127.0.0.1:9000/mcp"),
                   help="the MCP endpoint; also the token's resource (audience) unless --resource is given")
    p.add_argument("--resource", default=env("CBST_RESOURCE"), help="resource URI to ask a token for")
    p.add_argument("--credentials", type=Path, help="JSON from `idp clients add --json` (client_id, client_secret)")
    p.add_argument("--client-id", default=env("CBST_CLIENT_ID"))
    p.add_argument("--client-secret", default=env("CBST_CLIENT_SECRET"))
    p.add_argument("--key-file", type=Path, default=env("CBST_PRIVATE_KEY_FILE"),
                   help="PEM private key (EC P-256 or Ed25519) for private_key_jwt")
    p.add_argument("--scope", default=env("CBST_SCOPE"),
                   help="capabilities to ask for, space-separated (default: all the client is registered for)")
    p.add_argument("--mode", choices=["auto", "legacy"], default="auto")
    p.add_argument("--call", nargs="+", metavar=("TOOL", "ARGS_JSON"), help="call a tool (default: echo)")
    p.add_argument("--read", metavar="URI", help="read a resource")
    p.add_argument("--prompt", nargs="+", metavar=("NAME", "ARGS_JSON"), help="get a prompt")
    p.add_argument("--verbose", "-v", action="store_true", help="also print the MCP SDK's log records")
    args = p.parse_args(argv)
    # Bad input is a usage error here, before any request is made.
    for option in ("issuer", "server", "resource"):
        value = getattr(args, option)
        if value is not None and (urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc):
            p.error(f"--{option} must be an http(s) URL, got {value!r}")
    for option in ("call", "prompt"):
        values = getattr(args, option)
        if values is None:
            continue
        if len(values) > 2:
            p.error(f"--{option} takes a name and at most one ARGS_JSON")
        try:
            arguments = json.loads(values[1]) if len(values) == 2 else {}
        except ValueError as exc:
            p.error(f"--{option} ARGS_JSON is not JSON ({exc}): {values[1]!r}")
        if not isinstance(arguments, dict):
            p.error(f"--{option} ARGS_JSON must be a JSON object, e.g. '{{\"a\": 1}}', got {values[1]!r}")
        setattr(args, option, (values[0], arguments))
    return args


def credentials_from(args: argparse.Namespace) -> ClientCredentials:
    """The client's credentials, or SystemExit with one line saying what is wrong."""
    client_id, secret = args.client_id, args.client_secret
    if args.credentials is not None:
        path = args.credentials
        try:
            doc = json.loads(path.read_text())
        except OSError as exc:
            raise SystemExit(f"cannot read the credentials {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise SystemExit(f"{path} is not JSON ({exc}); give the output of `idp clients add --json`") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("client_id"), str):
            raise SystemExit(f"{path} has no client_id; give the output of `idp clients add --json`")
        client_id, secret = doc["client_id"], doc.get("client_secret", secret)
    if not client_id:
        raise SystemExit("no client: give --credentials FILE, or --client-id with --client-secret or --key-file")
    resource = args.resource or args.server
    if args.key_file is not None:
        try:
            return ClientCredentials(args.issuer, client_id, private_key=args.key_file, scope=args.scope,
                                     resource=resource)
        except OSError as exc:
            raise SystemExit(f"cannot read the private key {args.key_file}: {exc.strerror}") from None
        except ValueError as exc:
            raise SystemExit(f"cannot use the private key {args.key_file}: {exc}") from None
    if not secret:
        raise SystemExit("no secret: give --client-secret (or CBST_CLIENT_SECRET), or --key-file for private_key_jwt")
    try:
        return ClientCredentials(args.issuer, client_id, client_secret=secret, scope=args.scope, resource=resource)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


async def step(label: str, coro: Any) -> Any:
    try:
        result = await coro
    except TokenError:
        raise
    except Exception as exc:
        print(f"{label}: refused — {exc}")
        return None
    return result


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.verbose:
        # The MCP SDK logs the failures it raises (with tracebacks); main reports them in one line.
        logging.getLogger("mcp").setLevel(logging.CRITICAL + 1)
    creds = credentials_from(args)
    try:
        token = await creds.aget_token()
    except TokenError as exc:
        print(f"no token: {exc}", file=sys.stderr)
        return 1
    except (httpx2.HTTPError, OSError) as exc:
        print(f"cannot reach the IdP at {args.issuer}: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    print(f"token for {creds.client_id}: scope {token.scope!r}, audience {token.resource}")

    try:
        return await session(client_for(creds, args), creds, args)
    except Exception as exc:
        if (cause := _find(exc, (httpx2.TransportError, OSError))) is not None:
            print(f"cannot reach the MCP server at {args.server}: {cause or type(cause).__name__}", file=sys.stderr)
        elif (cause := _find(exc, (TokenError,))) is not None:  # a step-up the IdP refused, or an IdP gone
            print(f"no token: {cause}", file=sys.stderr)
        else:  # not an MCP server, or a broken one (an error page from a proxy...)
            cause = _find(exc, (Exception,)) or exc
            reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            print(f"the MCP server at {args.server} failed: {reason}", file=sys.stderr)
        return 1


def _find(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of ``kinds`` in ``exc`` or, depth first, the groups it holds."""
    inner = getattr(exc, "exceptions", None)
    if inner is None:
        return exc if isinstance(exc, kinds) else None
    for sub in inner:
        if (found := _find(sub, kinds)) is not None:
            return found
    return None


def client_for(creds: Any, args: argparse.Namespace) -> Any:
    from mcp import Client

    return Client(creds.mcp_transport(args.server), mode=args.mode)


async def session(mcp_client: Any, creds: Any, args: argparse.Namespace) -> int:
    asked = creds.scope
    async with mcp_client as client:
        print(f"connected: protocol {client.protocol_version}")
        if tools := await step("tools/list", client.list_tools()):
            print("tools:", ", ".join(t.name for t in tools.tools) or "(none)")
        if resources := await step("resources/list", client.list_resources()):
            print("resources:", ", ".join(str(r.uri) for r in resources.resources) or "(none)")
        if prompts := await step("prompts/list", client.list_prompts()):
            print("prompts:", ", ".join(p.name for p in prompts.prompts) or "(none)")

        name, arguments = args.call or ("echo", {"text": "hello from examples/client.py"})
        if result := await step(f"tools/call {name}", client.call_tool(name, arguments)):
            text = "".join(getattr(c, "text", "") for c in result.content)
            print(f"tools/call {name}: {text}{'  (tool error)' if result.is_error else ''}")
        if args.read and (content := await step(f"resources/read {args.read}", client.read_resource(args.read))):
            print(f"resources/read {args.read}:", "".join(getattr(c, "text", "") for c in content.contents))
        if args.prompt:
            pname, parguments = args.prompt
            if prompt := await step(f"prompts/get {pname}", client.get_prompt(pname, parguments)):
                print(f"prompts/get {pname}:", prompt.messages[0].content.text if prompt.messages else "")
    if creds.scope != asked:
        print(f"stepped up to scope {creds.scope!r}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
