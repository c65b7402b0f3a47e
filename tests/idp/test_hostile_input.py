"""Hostile input at /token, /introspect and /revoke never produces a 5xx.

Hypothesis generates form bodies, content types, Authorization headers and JWT-shaped strings
(client assertions and tokens with hostile JSON inside). Every answer must be a 2xx or an
RFC 6749 §5.2 error object with ``no-store``; requests that carry no valid credentials must not
write anything. Kept small (a few seconds per database).
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from idp_testing import AUDIENCE, ISSUER
from joserfc.jwk import ECKey
from test_token_endpoint import FORM, Env, assert_rfc6749_error_charset, basic, env  # noqa: F401 - env is a fixture

from sdk.jws import b64url_encode

FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
ENDPOINTS = ("/token", "/introspect", "/revoke")
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PARAMS = ["grant_type", "client_id", "client_secret", "client_assertion", "client_assertion_type", "scope",
          "resource", "token", "token_type_hint", "audience", "code"]


@pytest.fixture(scope="module")
def targets(env: Env) -> dict[str, Any]:
    """A secret client and a private_key_jwt client whose ids the fuzzer may use."""
    secret_client, secret = env.register()
    key = ECKey.generate_key("P-256", parameters={"kid": "fuzz"})
    key_client, _ = env.register(auth_method="private_key_jwt", jwks={"keys": [key.as_dict(private=False)]})
    return {"secret_client": secret_client, "secret": secret, "key_client": key_client,
            "kid": env.provider.keys.signer().kid}


def check(resp: Any) -> None:
    assert resp.status_code < 500, (resp.status_code, resp.text)
    if resp.status_code >= 400:
        body = resp.json()
        assert isinstance(body.get("error"), str), body
        if "error_description" in body:
            assert_rfc6749_error_charset(body)
        if resp.status_code not in (404, 405):
            assert resp.headers.get("cache-control") == "no-store"


# --- strategies ---------------------------------------------------------------------------------

text = st.one_of(st.text(st.characters(exclude_categories=("Cs",)), max_size=80),
                 st.text(st.sampled_from("\x00\x7f\u00ff\u2028\ufeff%:+ .\\\"'"), max_size=8))
names = st.one_of(st.sampled_from(PARAMS), text)
values = st.one_of(text, st.sampled_from(["client_credentials", JWT_BEARER, AUDIENCE, "tools/call:*", "a.b.c", ""]),
                   st.text(alphabet="%0123456789abcdefABCDEF+&=;", max_size=40))
pairs = st.lists(st.tuples(names, values), max_size=12)
content_types = st.one_of(
    st.sampled_from([FORM, FORM + "; charset=utf-8", FORM.upper(), "application/json", "text/plain", "",
                     "multipart/form-data; boundary=x", "application/x-www-form-urlencoded;;", "*/*"]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=40),
)
header_bytes = st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b""))
authorizations = st.one_of(
    st.none(),
    st.binary(max_size=90).map(lambda b: b"Basic " + base64.b64encode(b)),
    st.tuples(text, text).map(lambda t: basic(t[0], t[1]).encode()),
    header_bytes,
    header_bytes.map(lambda b: b"Basic " + b),
    st.sampled_from([b"Basic", b"Basic ", b"basic Og==", b"Bearer x", b"Basic ====", b"Digest a=b"]),
)


def _post(env: Env, path: str, body: bytes, content_type: str | None, authorization: bytes | None) -> Any:
    headers: dict[str, Any] = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if authorization is not None:
        headers["Authorization"] = authorization
    return env.http.post(path, content=body, headers=headers)


@FUZZ
@given(path=st.sampled_from(ENDPOINTS), form=pairs, raw=st.one_of(st.none(), st.binary(max_size=200)),
       content_type=st.one_of(st.none(), content_types), authorization=authorizations)
def test_fuzzed_forms_and_headers_never_5xx_and_write_nothing(env: Env, path: str, form: list[tuple[str, str]],
                                                              raw: bytes | None, content_type: str | None,
                                                              authorization: bytes | None) -> None:
    before = env.counts()
    body = raw if raw is not None else urllib.parse.urlencode(form).encode()
    check(_post(env, path, body, content_type, authorization))
    assert env.counts() == before


@FUZZ
@given(path=st.sampled_from(ENDPOINTS), form=st.dictionaries(st.sampled_from(PARAMS[5:] + ["grant_type"]), values, max_size=6),
       extra=pairs)
def test_fuzzed_requests_from_an_authenticated_client_never_5xx(env: Env, targets: dict[str, Any], path: str,
                                                                 form: dict[str, str], extra: list[tuple[str, str]]) -> None:
    auth = basic(targets["secret_client"].client_id, targets["secret"]).encode()
    body = urllib.parse.urlencode(list(form.items()) + extra).encode()
    resp = _post(env, path, body, FORM, auth)
    check(resp)
    assert resp.status_code in (200, 400, 401, 413), resp.text


@FUZZ
@given(path=st.sampled_from(ENDPOINTS), name=st.sampled_from([p for p in PARAMS if p != "resource"]),
       first=st.one_of(st.just(""), values), second=st.one_of(st.just(""), values), extra=pairs)
def test_fuzzed_repeated_parameter_is_invalid_request_even_with_an_empty_copy(
        env: Env, targets: dict[str, Any], path: str, name: str, first: str, second: str, extra: list[tuple[str, str]]) -> None:
    """RFC 6749 §3.1: a parameter sent twice is refused, whatever either copy holds (empty included)."""
    auth = basic(targets["secret_client"].client_id, targets["secret"]).encode()
    body = urllib.parse.urlencode([("grant_type", "client_credentials"), (name, first), *extra, (name, second)]).encode()
    before = env.counts()
    resp = _post(env, path, body, FORM, auth)
    check(resp)
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request", resp.text
    assert env.counts() == before


# JSON values a hostile JWT may carry: wrong types, huge numbers, NaN/Infinity, deep nesting.
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(), text)
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(text, inner, max_size=4)), max_leaves=12)


def _segment(obj: Any) -> str:
    return b64url_encode(json.dumps(obj).encode())


@st.composite
def jwt_like(draw: Any, iss: str, kid: str) -> str:
    header = draw(st.one_of(
        st.fixed_dictionaries({"alg": st.sampled_from(["ES256", "EdDSA", "RS256", "HS256", "none", "PS256"]),
                               "kid": st.one_of(st.just(kid), json_value)},
                              optional={"typ": json_value, "crit": json_value, "jku": json_value, "jwk": json_value,
                                        "b64": json_value, "x5c": json_value}),
        json_value))
    now = 1_800_000_000
    claims = draw(st.one_of(
        st.fixed_dictionaries({"iss": st.one_of(st.just(iss), json_value), "sub": st.one_of(st.just(iss), json_value)},
                              optional={"aud": st.one_of(st.just(ISSUER), json_value), "exp": st.one_of(st.just(now), json_value),
                                        "nbf": json_value, "iat": json_value, "jti": json_value}),
        json_value))
    nest = draw(st.integers(0, 3))
    # Deep nesting that still fits the 8 KiB assertion limit (json's recursion limit is ~1000).
    h = "[" * 1500 + "]" * 1500 if nest == 1 else None
    p = '{"a":' * 1100 + "1" + "}" * 1100 if nest == 2 else None
    header_seg = b64url_encode(h.encode()) if h else _segment(header)
    payload_seg = b64url_encode(p.encode()) if p else _segment(claims)
    signature = draw(st.one_of(st.binary(max_size=80).map(b64url_encode), st.text(max_size=10)))
    return f"{header_seg}.{payload_seg}.{signature}"


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")  # joserfc, verifying EdDSA-labelled assertions
@FUZZ
@given(data=st.data())
def test_fuzzed_client_assertions_never_5xx_and_write_nothing(env: Env, targets: dict[str, Any], data: Any) -> None:
    assertion = data.draw(jwt_like(targets["key_client"].client_id, "fuzz"))
    path = data.draw(st.sampled_from(ENDPOINTS))
    before = env.counts()
    resp = env.http.post(path, data={"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER,
                                     "client_assertion": assertion, "token": "x"})
    check(resp)
    assert resp.status_code in (400, 401), resp.text
    assert env.counts() == before


@FUZZ
@given(data=st.data())
def test_fuzzed_tokens_at_introspection_and_revocation_never_5xx(env: Env, targets: dict[str, Any], data: Any) -> None:
    token = data.draw(st.one_of(jwt_like(targets["secret_client"].client_id, targets["kid"]), text))
    path = data.draw(st.sampled_from(("/introspect", "/revoke")))
    before = env.counts()
    resp = env.http.post(path, data={"token": token} if token else {},
                         headers={"Authorization": basic(targets["secret_client"].client_id, targets["secret"])})
    check(resp)
    if path == "/introspect" and resp.status_code == 200:
        assert resp.json() == {"active": False}
    assert env.counts() == before


@pytest.mark.parametrize("path", ENDPOINTS)
def test_deeply_nested_json_in_a_jwt_is_refused_not_5xx(env: Env, targets: dict[str, Any], path: str) -> None:
    """Python's json module raises RecursionError (not ValueError) on deep nesting."""
    deep = b64url_encode(b"[" * 1500 + b"]" * 1500)
    for jwt_text in (f"{deep}.e30.AAAA", f"{_segment({'alg': 'ES256', 'kid': targets['kid'], 'typ': 'at+jwt'})}.{deep}.AAAA"):
        resp = env.http.post(path, data={"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER,
                                         "client_assertion": jwt_text})
        check(resp)
        assert resp.json()["error"] == "invalid_client"
        if path != "/token":
            resp = env.http.post(path, data={"token": jwt_text},
                                 headers={"Authorization": basic(targets["secret_client"].client_id, targets["secret"])})
            check(resp)
            assert resp.status_code == 200


@pytest.mark.parametrize("raw", ["a\x00b:secret", "a%00b:secret", "\x00:\x00", "%00:x"])
def test_nul_in_basic_client_id_is_invalid_client_not_5xx(env: Env, raw: str) -> None:
    """PostgreSQL refuses text with NUL; the lookup must not turn that into a server error."""
    before = env.counts()
    header = "Basic " + base64.b64encode(raw.encode()).decode()
    for path in ENDPOINTS:
        resp = env.http.post(path, data={"grant_type": "client_credentials", "token": "x"}, headers={"Authorization": header})
        check(resp)
        assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"
    assert env.counts() == before


def test_nul_or_lone_surrogate_in_client_assertion_iss_is_invalid_client_not_5xx(env: Env) -> None:
    before = env.counts()
    for iss in ("a\x00b", "\x00", "\ud800", "a\udfffb", "\x1b[31m"):  # NUL, lone surrogates, control
        assertion = f"{_segment({'alg': 'ES256', 'kid': 'k'})}.{_segment({'iss': iss, 'sub': iss, 'aud': ISSUER})}.AAAA"
        resp = env.http.post("/token", data={"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER,
                                             "client_assertion": assertion})
        check(resp)
        assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"
    assert env.counts() == before
