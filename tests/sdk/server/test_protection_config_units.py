"""The middleware's parts on their own: configuration validation, the verified-token cache, the
rate limiter, the SSE rewriter (property-tested over arbitrary chunkings), list filtering,
routing-header comparison and Cache-Control parsing. No network."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdk.access_token import (
    AccessToken,
    InvalidToken,
    VerifiedTokenCache,
    check_claims,
    token_hash,
    verify_access_token,
)
from sdk.capabilities import CapabilitySet
from sdk.jws import PrivateKey
from sdk.server import ProtectionConfig, ToolRateLimiter, bearer_challenge
from sdk.server import rpc as rpcmod
from sdk.server.issuer import cache_lifetime, metadata_urls
from sdk.server.list_filter import ListFilter

ISS = "https://idp.example"
AUD = "https://mcp.example/mcp"


# --- configuration ----------------------------------------------------------------------------------

def test_config_defaults_are_the_safe_ones() -> None:
    c = ProtectionConfig(issuer=ISS, resource=AUD)
    assert (c.tool_rate, c.clock_skew, c.log_tool_arguments, c.mcp_path) == (3.0, 60, False, "/mcp")
    assert c.forward_authorization is False and c.revocation_fail_closed_after is not None
    assert c.resource_metadata_url == "https://mcp.example/.well-known/oauth-protected-resource/mcp"
    assert c.metadata_paths == {"/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"}


@pytest.mark.parametrize("bad", [
    {"issuer": "ftp://idp"}, {"issuer": ISS + "/"}, {"issuer": "http://idp.example"},  # plain http off loopback
    {"resource": "not a url"}, {"resource": AUD + "#frag"}, {"mcp_path": "mcp"},
    {"scopes_supported": "tools/call:echo"}, {"scopes_supported": ["tools/call"]},
    {"clock_skew": -1}, {"clock_skew": 3600}, {"max_body_size": 0}, {"token_cache_size": -1},
    {"tool_rate": 0}, {"tool_rate": True}, {"tool_rate_overrides": {"x": -1}},
    {"revocation_poll_interval": 0}, {"revocation_fail_closed_after": 1, "revocation_poll_interval": 5},
    {"audit": "log"}, {"public_paths": ["health"]}, {"jwks_min_refetch_interval": -5},
])
def test_bad_configuration_fails_loudly(bad: dict[str, Any]) -> None:
    kw: dict[str, Any] = {"issuer": ISS, "resource": AUD, **bad}
    with pytest.raises(ValueError):
        ProtectionConfig(**kw)


def test_plain_http_is_fine_on_loopback_and_opt_in_elsewhere() -> None:
    ProtectionConfig(issuer="http://127.0.0.1:8000", resource="http://[::1]:9000/mcp")
    ProtectionConfig(issuer="http://localhost:8000", resource="http://localhost:9000/mcp")
    ProtectionConfig(issuer="http://idp.lan", resource="http://mcp.lan/mcp", allow_insecure_http=True)


def test_challenge_quoting_never_breaks_the_header() -> None:
    c = ProtectionConfig(issuer=ISS, resource=AUD)
    h = bearer_challenge(c, error="invalid_token", description='bad "token"\\\r\nX-Injected: 1', scope=["a:b", "a:b"])
    assert "\r" not in h and "\n" not in h and '\\' not in h
    assert h == ('Bearer resource_metadata="https://mcp.example/.well-known/oauth-protected-resource/mcp", '
                 'scope="a:b", error="invalid_token", error_description="bad tokenX-Injected: 1"')


# --- claims and the cache -----------------------------------------------------------------------------

def _claims(**kw: Any) -> dict[str, Any]:
    now = int(time.time())
    c = {"iss": ISS, "aud": AUD, "sub": "s", "client_id": "c", "iat": now, "exp": now + 300, "jti": "j",
         "scope": "tools/call:echo"}
    c.update(kw)
    return {k: v for k, v in c.items() if v is not None}


def test_verify_access_token_round_trip_and_alg_pinning() -> None:
    key = PrivateKey.generate("EdDSA")
    token = key.sign(_claims())
    at = verify_access_token(token, {key.kid: key.public}, issuer=ISS, audience=AUD)
    assert isinstance(at, AccessToken) and at.scope.allows("tools/call", "echo") and at.kid == key.kid
    with pytest.raises(InvalidToken):
        verify_access_token(token, {key.kid: key.public}, issuer=ISS, audience=AUD + "x")
    with pytest.raises(InvalidToken):
        verify_access_token(token, {key.kid: key.public}, issuer=ISS + "x", audience=AUD)


@pytest.mark.parametrize("value", [float("nan"), 1e300, -1e300, "1", None, [1]])
def test_numeric_claims_must_be_sane_numbers(value: Any) -> None:
    with pytest.raises(InvalidToken):
        check_claims(_claims(exp=value), issuer=ISS, audience=AUD, now=time.time())


def test_cache_is_bounded_honours_exp_and_revocation() -> None:
    cache = VerifiedTokenCache(max_size=2, leeway=0)
    now = time.time()
    tokens = [check_claims(_claims(jti=f"j{i}", exp=int(now) + 10 * (i + 1)), issuer=ISS, audience=AUD, now=now)
              for i in range(3)]
    for i, t in enumerate(tokens):
        cache.put(token_hash(f"tok{i}"), t)
    assert len(cache) == 2 and cache.get(token_hash("tok0"), now) is None  # least recently used evicted
    assert cache.get(token_hash("tok1"), now) is tokens[1]
    assert cache.get(token_hash("tok1"), now + 25) is None  # past exp: dropped
    assert cache.get(token_hash("tok2"), now, lambda jti: jti == "j2") is None  # revoked: dropped
    assert len(cache) == 0
    cache.put(token_hash("a"), tokens[2])
    assert cache.discard_jtis({"j2"}) == 1 and len(cache) == 0
    off = VerifiedTokenCache(max_size=0)
    off.put(token_hash("a"), tokens[0])
    assert len(off) == 0


# --- rate limiter --------------------------------------------------------------------------------------

def test_token_bucket_refills_at_the_rate_and_overrides_have_their_own_bucket() -> None:
    now = [100.0]
    rl = ToolRateLimiter(3.0, overrides={"slow": 0.5, "free": None}, max_clients=2, clock=lambda: now[0])
    assert [rl.acquire("a", "t") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = rl.acquire("a", "t")
    assert wait == pytest.approx(1 / 3)
    assert ToolRateLimiter.retry_after_header(wait) == "1"
    now[0] += 1 / 3
    assert rl.acquire("a", "t") == 0.0
    assert rl.acquire("a", "free") == 0.0 and rl.acquire("a", "free") == 0.0
    assert rl.acquire("a", "slow") == 0.0 and rl.acquire("a", "slow") == pytest.approx(2.0)
    assert ToolRateLimiter.retry_after_header(2.0) == "2"
    assert rl.acquire("b", "t") == 0.0  # another client
    assert len(rl._buckets) <= 2  # bounded


# --- list filtering and the SSE rewriter ---------------------------------------------------------------

CAPS = CapabilitySet.parse("tools/call:echo tools/call:git-* resources/read:file:///docs/**")
TOOLS = {"tools": [{"name": n} for n in ("echo", "rm", "git-log", "git/x")] + [{"nope": 1}, "junk"], "nextCursor": "c"}


def test_filter_result_keeps_only_allowed_items_and_other_members() -> None:
    out = rpcmod.filter_result(CAPS, "tools/list", TOOLS)
    assert out == {"tools": [{"name": "echo"}, {"name": "git-log"}], "nextCursor": "c"}
    res = {"resources": [{"uri": "file:///docs/a"}, {"uri": "file:///docs/../etc/x"}, {"uri": "file:///etc/y"}]}
    assert rpcmod.filter_result(CAPS, "resources/list", res) == {"resources": [{"uri": "file:///docs/a"}]}
    tpl = {"resourceTemplates": [{"uriTemplate": "file:///{path}"}, {"uriTemplate": "file:///docs/{x}"},
                                 {"uriTemplate": "file:///etc/{x}"}, {"uriTemplate": "{+any}"}]}
    kept = [t["uriTemplate"] for t in rpcmod.filter_result(CAPS, "resources/templates/list", tpl)["resourceTemplates"]]
    assert kept == ["file:///{path}", "file:///docs/{x}", "{+any}"]  # may expand into /docs/: listed


def _sse(events: list[dict[str, Any]], sep: bytes) -> bytes:
    out = b""
    for i, e in enumerate(events):
        out += b"event: message" + sep + b"id: " + str(i).encode() + sep + b"data: " + json.dumps(e).encode() + sep + sep
    return out


async def _run_filter(chunks: list[bytes], list_ids: dict[str, str]) -> bytes:
    sent: list[dict[str, Any]] = []

    async def send(m: dict[str, Any]) -> None:
        sent.append(m)

    f = ListFilter(send, CAPS, list_ids, max_buffer=1 << 20)
    await f({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    for i, c in enumerate(chunks):
        await f({"type": "http.response.body", "body": c, "more_body": i < len(chunks) - 1})
    assert sent[-1]["more_body"] is False
    return b"".join(m.get("body", b"") for m in sent[1:])


def _events(raw: bytes) -> list[Any]:
    out = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [ln[5:].strip() for ln in block.split(b"\n") if ln.startswith(b"data:")]
        if data:
            out.append(json.loads(b"\n".join(data)))
    return out


@settings(max_examples=150, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12), sep=st.sampled_from([b"\n", b"\r\n"]))
def test_sse_filtering_is_the_same_whatever_the_chunking(cuts: list[int], sep: bytes) -> None:
    events = [
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}},
        {"jsonrpc": "2.0", "id": 5, "result": {"echo": "not a list"}},
        {"jsonrpc": "2.0", "id": 1, "result": TOOLS},
    ]
    raw = _sse(events, sep)
    points = sorted({min(c, len(raw)) for c in cuts})
    chunks = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    out = anyio.run(_run_filter, chunks, {"1": "tools/list"})
    got = _events(out)
    assert got[0] == events[0] and got[1] == events[1]
    assert [t["name"] for t in got[2]["result"]["tools"]] == ["echo", "git-log"]
    assert out.count(b"id: ") == 3


def test_unreadable_json_list_response_is_withheld() -> None:
    async def main() -> bytes:
        sent: list[dict[str, Any]] = []

        async def send(m: dict[str, Any]) -> None:
            sent.append(m)

        f = ListFilter(send, CAPS, {"1": "tools/list"}, max_buffer=1 << 20)
        await f({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await f({"type": "http.response.body", "body": b'{"tools": [', "more_body": False})
        return sent[-1]["body"]

    assert b"withheld" in anyio.run(main)


# --- routing headers ------------------------------------------------------------------------------------

def _msgs(obj: Any) -> tuple[list[rpcmod.Message], bool]:
    return rpcmod.parse_messages(json.dumps(obj).encode(), max_batch=10)


def test_routing_header_rules() -> None:
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
    msgs, batch = _msgs({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "é", "_meta": meta}})
    good = [(b"mcp-protocol-version", b"2026-07-28"), (b"mcp-method", b"tools/call"),
            (b"mcp-name", b"=?base64?w6k=?=")]
    assert rpcmod.check_routing_headers(good, msgs, batch) == "2026-07-28"
    for bad in ([good[0], good[1]], [good[0], good[2]], [*good, (b"mcp-name", b"=?base64?w6k=?=")],
                [good[0], good[1], (b"mcp-name", b"=?base64?w6k?=")],  # non-canonical base64
                [(b"mcp-protocol-version", b"2027-01-01"), good[1], good[2]]):
        with pytest.raises(rpcmod.RPCRefusal) as exc:
            rpcmod.check_routing_headers(bad, msgs, batch)
        assert exc.value.code == rpcmod.HEADER_MISMATCH and exc.value.status == 400
    legacy, _ = _msgs({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert rpcmod.check_routing_headers([], legacy, False) is None
    assert rpcmod.check_routing_headers([(b"mcp-protocol-version", b"2025-06-18")], legacy, False) is None
    with pytest.raises(rpcmod.RPCRefusal):  # an unknown version header routes modern at the server: headers required
        rpcmod.check_routing_headers([(b"mcp-protocol-version", b"2099-01-01")], legacy, False)


def test_metadata_urls_and_cache_lifetime() -> None:
    assert metadata_urls("https://idp.example/tenant") == [
        "https://idp.example/.well-known/oauth-authorization-server/tenant",
        "https://idp.example/.well-known/openid-configuration/tenant",
        "https://idp.example/tenant/.well-known/openid-configuration",
    ]
    assert cache_lifetime({"cache-control": "public, max-age=300"}, 10, 1000) == 300
    assert cache_lifetime({"cache-control": "max-age=999999"}, 10, 1000) == 1000
    assert cache_lifetime({"cache-control": "no-store"}, 10, 1000) == 0
    assert cache_lifetime({}, 10, 1000) == 10


def test_every_option_is_documented() -> None:
    import dataclasses
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "sdk-server.md").read_text()
    missing = [f.name for f in dataclasses.fields(ProtectionConfig) if f"`{f.name}`" not in doc]
    assert not missing, f"docs/sdk-server.md does not document: {missing}"


def test_the_mcp_endpoint_is_the_path_and_one_trailing_slash_nothing_else() -> None:
    from sdk.server import MCPEndpoint, route_path

    ep = MCPEndpoint("/mcp/")
    assert ep.path == "/mcp" and ep.matches("/mcp") and ep.matches("/mcp/")
    for other in ("//mcp", "/mcp//", "/./mcp", "/MCP", "/mcp;x", "/mcp/.", "/x/../mcp", "/mcp%2F", "", "mcp"):
        assert not ep.matches(other), other
    assert MCPEndpoint("/").matches("/") and not MCPEndpoint("/").matches("//")
    assert route_path({"path": "/api/mcp", "root_path": "/api"}) == "/mcp"
    assert ep.serves({"path": "/api/mcp/", "root_path": "/api"})
    assert not ep.serves({"path": "/api//mcp", "root_path": "/api"})
    config = ProtectionConfig(issuer="http://127.0.0.1:1", resource="http://127.0.0.1:2/mcp", mcp_path="/rpc")
    assert config.is_mcp_endpoint("/rpc/") and not config.is_mcp_endpoint("/mcp")
    with pytest.raises(ValueError):
        MCPEndpoint("mcp")


def test_session_pins_are_bounded_per_client_and_never_evict_another_clients_pin() -> None:
    from sdk.server import SessionPins

    pins = SessionPins(max_sessions=4, max_per_client=3)
    alice, mallory = ("alice", "a"), ("mallory", "m")
    pins.pin("a1", alice)
    for i in range(50):
        pins.pin(f"m{i}", mallory)
    assert pins.owner("a1") == alice and len(pins) == 4  # mallory only ever evicted her own
    assert [pins.owner(f"m{i}") for i in (46, 47, 48, 49)] == [None, mallory, mallory, mallory]
    pins.pin("a1", mallory)  # an id keeps its first owner
    assert pins.owner("a1") == alice
    pins.forget("a1")
    assert pins.owner("a1") is None and len(pins) == 3
