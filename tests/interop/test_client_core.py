"""The sans-IO core of sdk.client, stepped by hand: no network, no HTTP library."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs

import pytest

from sdk.client._core import (
    LOCK,
    UNLOCK,
    Authorize,
    Core,
    CoreConfig,
    HttpResponse,
    Send,
    TokenError,
    metadata_url,
)
from sdk.jws import PrivateKey, b64url_decode

ISSUER = "https://idp.example"
META = HttpResponse(200, {}, json.dumps({
    "issuer": ISSUER, "token_endpoint": ISSUER + "/token", "grant_types_supported": ["client_credentials"],
    "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
}).encode())


def token_response(value: str, scope: str, expires_in: int = 300) -> HttpResponse:
    body = {"access_token": value, "token_type": "Bearer", "expires_in": expires_in, "scope": scope}
    return HttpResponse(200, {}, json.dumps(body).encode())


class Stepper:
    """Runs Core.request_flow, recording the steps and answering them from a script."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.steps: list[Any] = []

    def run(self, answers: list[Any]) -> list[Any]:
        flow = self.core.request_flow()
        self.steps = []
        reply: Any = None
        answers = list(answers)
        try:
            step = next(flow)
            while True:
                self.steps.append(step)
                reply = None if step in (LOCK, UNLOCK) else answers.pop(0)
                step = flow.send(reply)
        except StopIteration:
            pass
        assert not answers, f"unused answers: {answers}"
        return self.steps


def core(**kw: Any) -> Core:
    clock = kw.pop("clock", lambda: 0.0)
    return Core(CoreConfig(issuer=ISSUER, client_id="c 1", auth_method=kw.pop("auth_method", "client_secret_basic"),
                           client_secret=kw.pop("client_secret", "s:ecret"), clock=clock, **kw))


def test_first_request_discovers_then_asks_for_the_configured_scope_and_resource() -> None:
    c = core(scope="tools/call:a", resource="https://mcp.example/mcp")
    steps = Stepper(c).run([META, token_response("T1", "tools/call:a"), (200, [])])
    assert steps[0] == LOCK and steps[3] == UNLOCK
    discovery, token = steps[1].request, steps[2].request
    assert discovery.url == "https://idp.example/.well-known/oauth-authorization-server"
    assert token.method == "POST" and token.url == ISSUER + "/token"
    assert parse_qs(token.body.decode()) == {"grant_type": ["client_credentials"], "scope": ["tools/call:a"],
                                             "resource": ["https://mcp.example/mcp"]}
    # RFC 6749 §2.3.1: form-urlencoded before base64 ("c 1" -> "c%201", "s:ecret" -> "s%3Aecret")
    assert base64.b64decode(token.headers["authorization"][6:]) == b"c%201:s%3Aecret"
    assert steps[4] == Authorize(c.token)  # type: ignore[arg-type]
    # The next request reuses the token: no Send at all.
    assert [type(s) for s in Stepper(c).run([(200, [])])] == [str, str, Authorize]


def test_step_up_union_and_refusal_bookkeeping() -> None:
    c = core(scope="tools/call:a")
    Stepper(c).run([META, token_response("T1", "tools/call:a"), (200, [])])
    challenge = ['Bearer error="insufficient_scope", scope="tools/call:b"']
    steps = Stepper(c).run([(403, challenge), token_response("T2", "tools/call:a tools/call:b"), (200, [])])
    sends = [s for s in steps if isinstance(s, Send)]
    assert len(sends) == 1 and parse_qs(sends[0].request.body.decode())["scope"] == ["tools/call:a tools/call:b"]
    assert [s.token.value for s in steps if isinstance(s, Authorize)] == ["T1", "T2"]
    assert c.scope == "tools/call:a tools/call:b"
    refused = HttpResponse(400, {}, b'{"error":"invalid_scope","error_description":"no"}')
    steps = Stepper(c).run([(403, ['Bearer error="insufficient_scope", scope="tools/call:z"']), refused, (403, [])])
    assert [s.token.value for s in steps if isinstance(s, Authorize)] == ["T2", "T2"]  # resent with the held token
    assert "tools/call:a tools/call:b tools/call:z" in c.refused_scopes
    steps = Stepper(c).run([(403, ['Bearer error="insufficient_scope", scope="tools/call:z"'])])
    assert not any(isinstance(s, Send) for s in steps)  # not asked again


def test_a_403_without_insufficient_scope_or_for_held_scope_is_final() -> None:
    c = core(scope="tools/call:a")
    Stepper(c).run([META, token_response("T1", "tools/call:a"), (200, [])])
    for challenge in ([], ['Bearer error="invalid_token"'], ['Bearer error="insufficient_scope", scope="tools/call:a"']):
        assert not any(isinstance(s, Send) for s in Stepper(c).run([(403, challenge)]))


def test_refresh_margin() -> None:
    now = [0.0]
    c = core(refresh_margin=30, clock=lambda: now[0])
    Stepper(c).run([META, token_response("T1", "x", expires_in=300), (200, [])])
    now[0] = 269.0
    assert not any(isinstance(s, Send) for s in Stepper(c).run([(200, [])]))
    now[0] = 271.0
    steps = Stepper(c).run([token_response("T2", "x"), (200, [])])
    assert [s.token.value for s in steps if isinstance(s, Authorize)] == ["T2"]


def test_private_key_jwt_assertion() -> None:
    key = PrivateKey.generate("EdDSA")
    c = core(auth_method="private_key_jwt", client_secret=None, private_key=key, wall_clock=lambda: 1_700_000_000)
    steps = Stepper(c).run([META, token_response("T1", "x"), (200, [])])
    form = parse_qs(steps[2].request.body.decode())
    assert form["client_assertion_type"] == ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"]
    header, claims, _ = form["client_assertion"][0].split(".")
    assert json.loads(b64url_decode(header)) == {"alg": "EdDSA", "kid": key.kid, "typ": "JWT"}
    claims = json.loads(b64url_decode(claims))
    assert claims["iss"] == claims["sub"] == "c 1" and claims["aud"] == ISSUER
    assert claims["exp"] - claims["iat"] == 60 and len(claims["jti"]) >= 16
    assert "authorization" not in steps[2].request.headers


@pytest.mark.parametrize(("response", "message"), [
    (HttpResponse(200, {}, b'{"issuer": "https://evil.example", "token_endpoint": "https://evil.example/t"}'),
     "expected exactly"),
    (HttpResponse(404, {}, b""), "HTTP 404"),
    (HttpResponse(200, {}, b"not json"), "not JSON"),
    (HttpResponse(200, {}, json.dumps({"issuer": ISSUER, "token_endpoint": ISSUER + "/t",
                                       "token_endpoint_auth_methods_supported": ["private_key_jwt"]}).encode()),
     "does not support client_secret_basic"),
])
def test_bad_metadata_is_a_discovery_error(response: HttpResponse, message: str) -> None:
    with pytest.raises(TokenError, match=message):
        Stepper(core()).run([response])


@pytest.mark.parametrize("body", [b"{}", b'{"access_token": "x", "token_type": "DPoP"}', b"[]"])
def test_malformed_token_responses(body: bytes) -> None:
    with pytest.raises(TokenError):
        Stepper(core()).run([META, HttpResponse(200, {}, body)])


def test_metadata_url_inserts_the_well_known_before_the_issuer_path() -> None:
    assert metadata_url("https://idp.example/tenant/a") == \
        "https://idp.example/.well-known/oauth-authorization-server/tenant/a"


def test_concurrent_step_ups_keep_each_others_capabilities() -> None:
    c = core(scope="tools/call:a")
    Stepper(c).run([META, token_response("T1", "tools/call:a"), (200, [])])
    t1 = c.token
    assert t1 is not None
    # Task A steps up to a+b; task B, challenged for c while holding T1, must not drop b.
    flow = c.ensure_token(scope=c.step_up_scope(t1, 403, ['Bearer error="insufficient_scope", scope="tools/call:b"']))
    req = next(flow)
    with pytest.raises(StopIteration):
        flow.send(token_response("T2", "tools/call:a tools/call:b"))
    wanted_by_b = c.step_up_scope(t1, 403, ['Bearer error="insufficient_scope", scope="tools/call:c"'])
    assert wanted_by_b == "tools/call:a tools/call:c"
    flow = c.ensure_token(scope=wanted_by_b)
    req = next(flow)
    assert parse_qs(req.body.decode())["scope"] == ["tools/call:a tools/call:b tools/call:c"]
