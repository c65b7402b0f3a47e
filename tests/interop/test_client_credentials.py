"""sdk.client.ClientCredentials against a real IdP process and a tiny resource server of our own.

The resource server does not verify signatures (that is the server SDK's job, tested elsewhere):
it reads the token's claims to decide, answers RFC 6750 challenges, and records what it saw.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sdk.client import (
    ClientCredentials,
    DiscoveryError,
    InvalidClientError,
    InvalidScopeError,
    InvalidTargetError,
    TokenError,
    parse_www_authenticate,
)
from sdk.jws import PrivateKey

from .conftest import IDP_TOKEN_TTL, IdP, ThreadedServer, claims_of, count_requests

AUD = "http://127.0.0.1:1/mcp"  # the resource URI the test clients ask for (never contacted)


class ResourceApp:
    """``GET /r?need=<scope-token>`` answers 200 when the token's scope holds ``need``."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []  # claims of every token presented
        self.rejected: set[str] = set()  # tokens answered 401 invalid_token (as if revoked)
        self.lock = threading.Lock()
        self.app = Starlette(routes=[Route("/r", self.handle, methods=["GET", "POST"])])

    async def handle(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return Response(status_code=401, headers={"WWW-Authenticate": 'Bearer resource_metadata="x"'})
        token = auth[len("Bearer "):]
        if token in self.rejected:
            return Response(status_code=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        claims = claims_of(token)
        with self.lock:
            self.seen.append(claims)
        need = request.query_params.get("need")
        if request.query_params.get("always403") or (need and need not in claims["scope"].split()):
            challenge = f'Bearer error="insufficient_scope", scope="{need}", resource_metadata="x"'
            return Response(status_code=403, headers={"WWW-Authenticate": challenge})
        return JSONResponse({"scope": claims["scope"], "aud": claims["aud"], "jti": claims["jti"],
                             "body": (await request.body()).decode()})


@pytest.fixture(scope="module")
def resource() -> Any:
    app = ResourceApp()
    with ThreadedServer(app.app) as server:
        app.url = server.url + "/r"  # type: ignore[attr-defined]
        yield app


@pytest.fixture
def client(idp: IdP) -> tuple[str, str | None]:
    """A client with capabilities tools/call:a tools/call:b and audience AUD."""
    return idp.register("client", capabilities="tools/call:a tools/call:b", audiences=(AUD,))


# --- obtaining a token --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_token_has_exactly_the_configured_scope_and_resource(idp: IdP, resource: Any, method: str) -> None:
    client_id, secret = idp.register("client", capabilities="tools/call:a tools/call:b", audiences=(AUD,),
                                     auth_method=method)
    creds = ClientCredentials(idp.url, client_id, client_secret=secret, auth_method=method,
                              scope="tools/call:a", resource=AUD)
    with httpx.Client(auth=creds.httpx_auth()) as http:
        answer = http.get(resource.url).json()
    assert answer["scope"] == "tools/call:a"  # not the client's full capabilities
    assert answer["aud"] == AUD
    claims = claims_of(creds.token.value)  # type: ignore[union-attr]
    assert claims["client_id"] == client_id and claims["iss"] == idp.url


def test_without_scope_the_registered_capabilities_are_granted(idp: IdP, resource: Any, client: Any) -> None:
    creds = ClientCredentials(idp.url, client[0], client_secret=client[1], resource=AUD)
    with httpx.Client(auth=creds.httpx_auth()) as http:
        assert set(http.get(resource.url).json()["scope"].split()) == {"tools/call:a", "tools/call:b"}


def test_private_key_jwt(idp: IdP, resource: Any) -> None:
    key = PrivateKey.generate("ES256")
    probe = ClientCredentials(idp.url, "x", private_key=key)
    client_id, secret = idp.register("pkjwt-client", capabilities="tools/call:a", audiences=(AUD,),
                                     auth_method="private_key_jwt", jwks=probe.public_jwks())
    assert secret is None
    creds = ClientCredentials(idp.url, client_id, private_key=key, scope="tools/call:a", resource=AUD)
    with httpx.Client(auth=creds.httpx_auth()) as http:
        first = http.get(resource.url).json()
        creds.invalidate()  # a second assertion must carry a new jti (the IdP accepts each once)
        second = http.get(resource.url).json()
    assert first["scope"] == second["scope"] == "tools/call:a"
    assert first["jti"] != second["jti"] and creds.token_requests == 2


def test_private_key_jwt_from_pem_ed25519(idp: IdP, resource: Any, tmp_path: Any) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    raw = ed25519.Ed25519PrivateKey.generate()
    pem = raw.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "key.pem").write_bytes(pem)
    jwks = ClientCredentials(idp.url, "x", private_key=pem).public_jwks()
    client_id, _ = idp.register("pkjwt-ed", capabilities="tools/call:a", audiences=(AUD,),
                                auth_method="private_key_jwt", jwks=jwks)
    creds = ClientCredentials(idp.url, client_id, private_key=tmp_path / "key.pem", resource=AUD)
    assert claims_of(creds.get_token().value)["client_id"] == client_id


# --- caching and refresh ------------------------------------------------------------------------


def test_one_token_request_for_many_sync_calls(idp: IdP, resource: Any, client: Any) -> None:
    creds = ClientCredentials(idp.url, client[0], client_secret=client[1], scope="tools/call:a", resource=AUD)
    token_hits, hooks, _ = count_requests("/token")
    with httpx.Client(auth=creds.httpx_auth(), event_hooks=hooks) as http:
        jtis = {http.post(resource.url, content=f"call {i}").json()["jti"] for i in range(25)}
    assert len(jtis) == 1 and len(token_hits) == 1 and creds.token_requests == 1


def test_one_token_request_for_many_concurrent_async_calls(idp: IdP, resource: Any, client: Any) -> None:
    creds = ClientCredentials(idp.url, client[0], client_secret=client[1], scope="tools/call:a", resource=AUD)
    token_hits, _, ahooks = count_requests("/token")

    async def main() -> set[str]:
        async with creds.httpx2_async_client(event_hooks=ahooks) as http:
            answers = await asyncio.gather(*(http.post(resource.url, content=f"{i}") for i in range(30)))
        return {a.json()["jti"] for a in answers}

    assert len(asyncio.run(main())) == 1
    assert asyncio.run(main()) and len(token_hits) == 1  # a second event loop reuses the cache too


def test_httpx_and_httpx2_adapters_share_the_cache(idp: IdP, resource: Any, client: Any) -> None:
    creds = ClientCredentials(idp.url, client[0], client_secret=client[1], resource=AUD)
    with httpx.Client(auth=creds.httpx_auth()) as http:
        a = http.get(resource.url).json()["jti"]
    with httpx2.Client(auth=creds.httpx2_auth()) as http2:
        b = http2.get(resource.url).json()["jti"]
    assert a == b and creds.token_requests == 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_refreshed_before_expiry(idp: IdP, resource: Any, client: Any) -> None:
    clock = FakeClock()
    creds = ClientCredentials(idp.url, client[0], client_secret=client[1], resource=AUD, refresh_margin=20, clock=clock)
    with httpx.Client(auth=creds.httpx_auth()) as http:
        first = http.get(resource.url).json()["jti"]
        clock.now += IDP_TOKEN_TTL - 20 - 1  # just inside the margin's edge: still reused
        assert http.get(resource.url).json()["jti"] == first and creds.token_requests == 1
        clock.now += 2  # now within 20 s of expiry: refreshed before it expires
        second = http.get(resource.url).json()["jti"]
    assert second != first and creds.token_requests == 2


def test_margin_is_capped_at_half_the_lifetime(idp: IdP, resource: Any, client: Any) -> None:
    clock = FakeClock()
    creds = ClientCredentials(idp.url, client[0], client_secret=client[1], resource=AUD,
                              refresh_margin=10 * IDP_TOKEN_TTL, clock=clock)
    with httpx.Client(auth=creds.httpx_auth()) as http:
        http.get(resource.url)
        clock.now += IDP_TOKEN_TTL / 2 - 1
        http.get(resource.url)
        assert creds.token_requests == 1  # a huge margin does not mean a token per request
        clock.now += 2
        http.get(resource.url)
        assert creds.token_requests == 2


# --- step-up (403 insufficient_scope) ------------------------------------------------------------


def test_step_up_asks_for_the_union_once_and_retries(idp: IdP, resource: Any, client: Any) -> None:
    creds = ClientCredentials(idp.url, client[0], client_secret=client[1], scope="tools/call:a", resource=AUD)
    before = len(resource.seen)
    with httpx.Client(auth=creds.httpx_auth()) as http:
        r = http.get(resource.url, params={"need": "tools/call:b"})
        assert r.status_code == 200
        assert r.json()["scope"] == "tools/call:a tools/call:b"
        assert creds.token_requests == 2 and len(resource.seen) - before == 2  # refused once, retried once
        # The grown scope is kept: later calls and refreshes need no new challenge.
        assert http.get(resource.url, params={"need": "tools/call:a"}).status_code == 200
        creds.invalidate()
        assert http.get(resource.url, params={"need": "tools/call:b"}).status_code == 200
    assert creds.token_requests == 3 and creds.scope == "tools/call:a tools/call:b"


def test_step_up_with_httpx2_async(idp: IdP, resource: Any, client: Any) -> None:
    creds = ClientCredentials(idp.url, client[0], client_secret=client[1], scope="tools/call:a", resource=AUD)

    async def main() -> list[int]:
        async with creds.httpx2_async_client() as http:
            rs = await asyncio.gather(*(http.get(resource.url, params={"need": "tools/call:b"}) for _ in range(5)))
        return [r.status_code for r in rs]

    assert asyncio.run(main()) == [200] * 5
    # Concurrent challenges are served by one step-up (the lock re-checks the cached token).
    assert creds.token_requests == 2


def test_step_up_refused_by_the_idp_returns_the_403(idp: IdP, resource: Any, client: Any) -> None:
    creds = ClientCredentials(idp.url, client[0], client_secret=client[1], scope="tools/call:a", resource=AUD)
    before = len(resource.seen)
    with httpx.Client(auth=creds.httpx_auth()) as http:
        r = http.get(resource.url, params={"need": "tools/call:zzz"})  # not a registered capability
        assert r.status_code == 403 and "insufficient_scope" in r.headers["www-authenticate"]
        assert creds.token_requests == 2  # the first token, then the refused union
        assert len(resource.seen) - before == 2  # resent once so the caller gets the server's 403
        assert http.get(resource.url, params={"need": "tools/call:zzz"}).status_code == 403
        assert creds.token_requests == 2  # a refused union is not asked for again
        assert len(resource.seen) - before == 3
        assert http.get(resource.url, params={"need": "tools/call:a"}).status_code == 200
    assert creds.scope == "tools/call:a"


def test_step_up_at_most_once_per_request(idp: IdP, resource: Any, client: Any) -> None:
    creds = ClientCredentials(idp.url, client[0], client_secret=client[1], scope="tools/call:a", resource=AUD)
    before = len(resource.seen)
    with httpx.Client(auth=creds.httpx_auth()) as http:
        r = http.get(resource.url, params={"need": "tools/call:b", "always403": "1"})
    assert r.status_code == 403 and len(resource.seen) - before == 2 and creds.token_requests == 2


def test_step_up_can_be_switched_off(idp: IdP, resource: Any, client: Any) -> None:
    creds = ClientCredentials(idp.url, client[0], client_secret=client[1], scope="tools/call:a", resource=AUD,
                              step_up=False)
    with httpx.Client(auth=creds.httpx_auth()) as http:
        assert http.get(resource.url, params={"need": "tools/call:b"}).status_code == 403
    assert creds.token_requests == 1


# --- 401 after a token worked (revoked / key rotated) ----------------------------------------------


def test_a_token_that_worked_and_is_then_refused_is_replaced_once(idp: IdP, resource: Any, client: Any) -> None:
    creds = ClientCredentials(idp.url, client[0], client_secret=client[1], resource=AUD)
    with httpx.Client(auth=creds.httpx_auth()) as http:
        first = http.get(resource.url).json()["jti"]
        resource.rejected.add(creds.token.value)  # type: ignore[union-attr]
        r = http.get(resource.url)
        assert r.status_code == 200 and r.json()["jti"] != first and creds.token_requests == 2


def test_a_token_that_never_worked_is_not_replaced_in_a_loop(idp: IdP, resource: Any, client: Any) -> None:
    creds = ClientCredentials(idp.url, client[0], client_secret=client[1], resource=AUD)
    token = creds.get_token()
    resource.rejected.add(token.value)
    with httpx.Client(auth=creds.httpx_auth()) as http:
        assert http.get(resource.url).status_code == 401
        assert http.get(resource.url).status_code == 401
    assert creds.token_requests == 1


# --- errors ---------------------------------------------------------------------------------------


def test_wrong_secret_is_a_clear_invalid_client_error(idp: IdP, resource: Any, client: Any) -> None:
    creds = ClientCredentials(idp.url, client[0], client_secret="wrong", resource=AUD)
    with httpx.Client(auth=creds.httpx_auth()) as http, pytest.raises(InvalidClientError) as err:
        http.get(resource.url)
    assert err.value.error == "invalid_client" and err.value.status == 401
    assert client[0] in str(err.value) and "client authentication failed" in str(err.value)


def test_wrong_auth_method_is_refused(idp: IdP, client: Any) -> None:
    creds = ClientCredentials(idp.url, client[0], client_secret=client[1], auth_method="client_secret_post",
                              resource=AUD)
    with pytest.raises(InvalidClientError, match="client_secret_basic"):
        creds.get_token()


def test_scope_beyond_the_capabilities_is_refused(idp: IdP, client: Any) -> None:
    creds = ClientCredentials(idp.url, client[0], client_secret=client[1], scope="tools/call:c", resource=AUD)
    with pytest.raises(InvalidScopeError, match="exceeds"):
        creds.get_token()


def test_unregistered_resource_is_refused(idp: IdP, client: Any) -> None:
    creds = ClientCredentials(idp.url, client[0], client_secret=client[1], resource="http://other.test/mcp")
    with pytest.raises(InvalidTargetError, match="audience"):
        asyncio.run(creds.aget_token())


def test_issuer_must_match_metadata_exactly(idp: IdP, client: Any) -> None:
    creds = ClientCredentials(idp.url + "/", client[0], client_secret=client[1], resource=AUD)
    with pytest.raises(DiscoveryError, match="RFC 8414"):
        creds.get_token()


def test_token_error_surfaces_through_the_mcp_2x_client(idp: IdP, client: Any) -> None:
    from mcp import Client

    creds = ClientCredentials(idp.url, client[0], client_secret="wrong", resource=AUD)

    async def main() -> None:
        async with Client(creds.mcp_transport(AUD), mode="legacy"):
            pass  # pragma: no cover

    with pytest.raises(BaseException) as err:  # the SDK may wrap it in an exception group
        asyncio.run(main())
    assert "invalid_client" in _flatten(err.value)


def _flatten(exc: BaseException) -> str:
    parts = [f"{type(exc).__name__}: {exc}"]
    for sub in getattr(exc, "exceptions", ()):
        parts.append(_flatten(sub))
    if exc.__cause__ is not None:
        parts.append(_flatten(exc.__cause__))
    return "\n".join(parts)


def test_configuration_errors() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ClientCredentials("http://idp", "c")
    with pytest.raises(ValueError, match="exactly one"):
        ClientCredentials("http://idp", "c", client_secret="s", private_key=PrivateKey.generate())
    with pytest.raises(ValueError, match="needs private_key"):
        ClientCredentials("http://idp", "c", client_secret="s", auth_method="private_key_jwt")
    with pytest.raises(ValueError, match="invalid scope token"):
        ClientCredentials("http://idp", "c", client_secret="s", scope='tools/call:"x"')
    with pytest.raises(ValueError, match="http"):
        ClientCredentials("idp", "c", client_secret="s")
    assert issubclass(InvalidClientError, TokenError)


# --- WWW-Authenticate parsing (RFC 9110 §11.6.1, RFC 6750 §3) -------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ('Bearer error="insufficient_scope", scope="tools/call:a tools/call:b"',
     [("bearer", {"error": "insufficient_scope", "scope": "tools/call:a tools/call:b"})]),
    ('Basic realm="x", Bearer realm="y",error=invalid_token',
     [("basic", {"realm": "x"}), ("bearer", {"realm": "y", "error": "invalid_token"})]),
    ('bearer   SCOPE = "a \\"b\\"" , resource_metadata="http://h/.well-known/oauth-protected-resource/mcp"',
     [("bearer", {"scope": 'a "b"', "resource_metadata": "http://h/.well-known/oauth-protected-resource/mcp"})]),
    ("Bearer", [("bearer", {})]),
    ('=,"', []),
    ('Bearer error="unterminated', [("bearer", {"error": "unterminated"})]),
])
def test_parse_www_authenticate(value: str, expected: list[Any]) -> None:
    assert parse_www_authenticate([value]) == expected


def test_a_silent_idp_times_out(client: Any) -> None:
    """Token requests made inside an auth flow carry their own timeout (they would otherwise have none)."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        issuer = f"http://127.0.0.1:{silent.getsockname()[1]}"
        creds = ClientCredentials(issuer, client[0], client_secret=client[1], timeout=0.5)
        with httpx.Client(auth=creds.httpx_auth(), timeout=None) as http, pytest.raises(httpx.ReadTimeout):
            http.get(issuer + "/anything")
