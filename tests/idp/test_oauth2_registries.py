"""The protocol layer's shape: grants and client-authentication methods are registries the token
endpoint dispatches on and the metadata lists; handlers get one OAuthRequest; ``idp.oauth2``
holds no SQL.

A throwaway grant and a throwaway authentication method are registered by fixtures (one
module's worth of code and one registration line each) and seen dispatched and advertised.
"""

from __future__ import annotations

import ast
import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Literal

import pytest
from idp_testing import ROOT
from test_token_endpoint import Env, assert_oauth_error, basic, env  # noqa: F401 - env is a fixture

from idp import clock
from idp.oauth2 import access_token, client_auth, grants
from idp.oauth2.client import ClientRecord
from idp.oauth2.client_auth.base import Credentials, usable
from idp.oauth2.errors import InvalidClient
from idp.oauth2.request import OAuthRequest
from idp.oauth2.stores import Stores

ECHO = "urn:example:params:oauth:grant-type:echo"
RFC8414 = "/.well-known/oauth-authorization-server"


class EchoGrant:
    """A made-up grant: a token whose scope is the client's capabilities, audience the ``echo`` parameter."""

    grant_type = ECHO
    parameters: Mapping[str, bool] = {"echo": True}
    seen: ClassVar[list[OAuthRequest]] = []

    def issue(self, stores: Stores, client: ClientRecord, request: OAuthRequest) -> dict[str, Any]:
        self.seen.append(request)
        return access_token.build_claims(issuer=stores.settings.issuer, client_id=client.client_id,
                                         subject=client.client_id,
                                         audience=request.form.get("echo") or "", scope=client.capabilities.to_scope(),
                                         ttl=60, now=clock.now())


class HeaderAuth:
    """A made-up client-authentication method: ``X-Test-Client: <client_id> <secret>``."""

    name = "x_test_header"
    credential: Literal["secret"] = "secret"
    signing_alg_values = ("XS1",)
    challenge: Mapping[str, str] = {}

    def present(self, request: OAuthRequest) -> bool:
        return "x-test-client" in request.headers

    def credentials(self, request: OAuthRequest) -> Credentials:
        client_id, _, secret = request.headers["x-test-client"].partition(" ")
        return Credentials(client_id, secret)

    def verify(self, stores: Stores, credentials: Credentials) -> ClientRecord:
        client = stores.clients.get(credentials.client_id)
        if client is None or not client.check_secret(credentials.proof):
            raise InvalidClient("client authentication failed")
        return usable(client, self)


@pytest.fixture
def echo_grant() -> Iterator[EchoGrant]:
    grant = EchoGrant()
    grant.seen.clear()
    grants.register(grant)
    try:
        yield grant
    finally:
        grants.unregister(ECHO)


@pytest.fixture
def header_auth() -> Iterator[HeaderAuth]:
    method = HeaderAuth()
    client_auth.register(method)
    try:
        yield method
    finally:
        client_auth.unregister(method.name)


def test_a_registered_grant_is_dispatched_audited_and_advertised(env: Env, echo_grant: EchoGrant) -> None:
    client, secret = env.register()
    auth = {"Authorization": basic(client.client_id, secret)}
    assert ECHO in env.http.get(RFC8414).json()["grant_types_supported"]
    resp = env.http.post("/token", data={"grant_type": ECHO, "echo": "https://echo.example/"}, headers=auth)
    assert resp.status_code == 200, resp.text
    [request] = echo_grant.seen
    assert request.form.get("echo") == "https://echo.example/" and request.method == "POST"
    jti = json.loads(_payload(resp.json()["access_token"]))["jti"]
    [record] = env.audit("token.issued", jti=jti)
    assert json.loads(record["data"])["grant_type"] == ECHO
    # Its required parameter is checked by the endpoint, before client authentication.
    assert_oauth_error(env.http.post("/token", data={"grant_type": ECHO}), 400, "invalid_request")


def test_an_unregistered_grant_is_unsupported_and_not_advertised(env: Env) -> None:
    client, secret = env.register()
    assert ECHO not in env.http.get(RFC8414).json()["grant_types_supported"]
    resp = env.http.post("/token", data={"grant_type": ECHO, "echo": "x"},
                         headers={"Authorization": basic(client.client_id, secret)})
    assert_oauth_error(resp, 400, "unsupported_grant_type")


def test_a_registered_auth_method_authenticates_and_is_advertised(env: Env, header_auth: HeaderAuth) -> None:
    client, secret = env.register(auth_method=header_auth.name)
    assert secret
    doc = env.http.get(RFC8414).json()
    for endpoint in ("token", "introspection", "revocation"):
        assert header_auth.name in doc[f"{endpoint}_endpoint_auth_methods_supported"]
        assert "XS1" in doc[f"{endpoint}_endpoint_auth_signing_alg_values_supported"]
    form = {"grant_type": "client_credentials"}
    resp = env.http.post("/token", data=form, headers={"X-Test-Client": f"{client.client_id} {secret}"})
    assert resp.status_code == 200, resp.text
    bad = env.http.post("/token", data=form, headers={"X-Test-Client": f"{client.client_id} nope"})
    assert_oauth_error(bad, 401, "invalid_client")
    # Two methods in one request are still refused; the registered method still binds the client.
    both = env.http.post("/token", data={"grant_type": "client_credentials"},
                         headers={"X-Test-Client": f"{client.client_id} {secret}",
                                  "Authorization": basic(client.client_id, secret)})
    assert_oauth_error(both, 400, "invalid_request")


def test_metadata_lists_exactly_the_registries(env: Env) -> None:
    doc = env.http.get(RFC8414).json()
    assert doc["grant_types_supported"] == list(grants.GRANTS)
    for endpoint in ("token", "introspection", "revocation"):
        # Introspection answers authenticated callers only: no public clients ("none").
        methods = [m for m in client_auth.METHODS if endpoint != "introspection" or m != "none"]
        assert doc[f"{endpoint}_endpoint_auth_methods_supported"] == methods
        assert doc[f"{endpoint}_endpoint_auth_signing_alg_values_supported"] == client_auth.signing_alg_values()


def _payload(token: str) -> str:
    from sdk.jws import b64url_decode

    return b64url_decode(token.split(".")[1]).decode()


# ---------------------------------------------------------------------------------------------
# One request object, built from the ASGI scope
# ---------------------------------------------------------------------------------------------


def _asgi(app: Any, scope: dict[str, Any], body: bytes) -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"])


def test_oauth_request_carries_peer_tls_client_certificate_and_dpop(env: Env, echo_grant: EchoGrant) -> None:
    client, secret = env.register()
    pem = "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n"
    scope: dict[str, Any] = {
        "type": "http", "method": "POST", "path": "/token", "scheme": "https", "root_path": "",
        "server": ("127.0.0.1", 8443), "client": ("203.0.113.7", 50000), "query_string": b"",
        "headers": [(b"host", b"idp.example.test"), (b"content-type", b"application/x-www-form-urlencoded"),
                    (b"authorization", basic(client.client_id, secret).encode()), (b"dpop", b"eyJ.proof.sig")],
        "extensions": {"tls": {"client_cert_chain": [pem, "-----BEGIN CERTIFICATE-----\nCA\n"], "tls_version": 0x0304}},
    }
    status, body = _asgi(env.http.app, scope, f"grant_type={ECHO}&echo=https%3A%2F%2Fe.example%2F".encode())
    assert status == 200, body
    [request] = echo_grant.seen
    assert request.url == "https://idp.example.test/token" and request.path == "/token"
    assert request.remote_addr == "203.0.113.7"
    assert request.client_cert == pem
    assert request.dpop == "eyJ.proof.sig"
    # Without the TLS extension or a DPoP header: None.
    del scope["extensions"]
    scope["headers"] = [h for h in scope["headers"] if h[0] != b"dpop"]
    assert _asgi(env.http.app, scope, f"grant_type={ECHO}&echo=x".encode())[0] == 200
    assert echo_grant.seen[1].client_cert is None and echo_grant.seen[1].dpop is None


def test_repeated_dpop_header_is_invalid_request(env: Env) -> None:
    client, secret = env.register()
    before = env.counts()
    resp = env.http.post("/token", data={"grant_type": "client_credentials"},
                         headers=[("Authorization", basic(client.client_id, secret)),
                                  ("DPoP", "a.b.c"), ("DPoP", "d.e.f")])
    assert_oauth_error(resp, 400, "invalid_request")
    assert env.counts() == before


# ---------------------------------------------------------------------------------------------
# Protocol apart from storage
# ---------------------------------------------------------------------------------------------


def test_oauth2_package_never_imports_sqlalchemy() -> None:
    package = ROOT / "idp" / "oauth2"
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            assert not any(n.split(".")[0] in ("sqlalchemy", "sqlmodel") for n in names), f"{path}: {names}"
    # Nor transitively: importing every module of it loads neither SQLAlchemy nor the SQL stores.
    code = ("import importlib, pkgutil, sys, idp.oauth2 as o\n"
            "for m in pkgutil.walk_packages(o.__path__, 'idp.oauth2.'): importlib.import_module(m.name)\n"
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('sqlalchemy', 'sqlmodel') "
            "or k in ('idp.clients', 'idp.provider', 'idp.audit', 'idp.revocations', 'idp.assertion_jtis')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]", out
