"""RFC 7591 dynamic client registration at ``POST /register``: valid requests register an
unreviewed client without capabilities; invalid redirect URIs and metadata are refused with the
RFC 7591 §3.2.2 errors and store nothing; oversized bodies are 413; a flood from one address is
throttled (429) while other addresses still register; the cap on unused clients evicts the
oldest unused ones and keeps clients in use. SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from registration_testing import PYTHON_SDK_REQUEST, count_clients, idp, mark_used, served, settings_for
from starlette.testclient import TestClient

from idp.oauth2.client import DYNAMIC
from idp.provider import Provider


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[tuple[Provider, TestClient]]:
    with idp(db_url, tmp_path) as pair:
        yield pair


@pytest.fixture
def local(tmp_path: Path) -> Iterator[tuple[Provider, TestClient]]:
    """SQLite only: for refusals that never reach storage."""
    with idp(f"sqlite:///{tmp_path / 'idp.db'}", tmp_path) as pair:
        yield pair


def test_python_sdk_request_registers_a_public_client(env: tuple[Provider, TestClient]) -> None:
    prov, http = env
    resp = http.post("/register", json=PYTHON_SDK_REQUEST)
    assert resp.status_code == 201, resp.text
    assert resp.headers["cache-control"] == "no-store"
    body = resp.json()
    for key, value in PYTHON_SDK_REQUEST.items():
        assert body[key] == value
    assert body["token_endpoint_auth_method"] == "none" and "client_secret" not in body
    assert isinstance(body["client_id_issued_at"], int)
    assert body["registration_client_uri"] == f"{prov.settings.issuer}/register/{body['client_id']}"
    assert body["registration_access_token"].startswith("cbstr_")
    client = prov.clients.get(body["client_id"])
    assert client is not None and client.registered_by == DYNAMIC and not client.reviewed
    assert client.redirect_uris == ("http://localhost:3030/callback",)
    assert client.grant_types == ("authorization_code", "refresh_token")
    assert not len(client.capabilities)  # policy and consent decide, not the registration
    assert client.display_name == "Python MCP client" and client.name.startswith("dcr-python-mcp-client-")
    assert client.registration_token_hash and body["registration_access_token"] not in json.dumps(
        client.public_dict())


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_secret_methods_get_a_generated_secret(env: tuple[Provider, TestClient], method: str) -> None:
    prov, http = env
    body = http.post("/register", json={**PYTHON_SDK_REQUEST, "token_endpoint_auth_method": method}).json()
    assert body["client_secret"].startswith("cbsts_") and body["client_secret_expires_at"] == 0
    client = prov.clients.get(body["client_id"])
    assert client.auth_method == method and client.check_secret(body["client_secret"])
    assert body["client_secret"] not in (client.secret_hash or "")


def test_metadata_names_the_registration_endpoint(local: tuple[Provider, TestClient]) -> None:
    prov, http = local
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        doc = http.get(path).json()
        assert doc["registration_endpoint"] == f"{prov.settings.issuer}/register"
        assert doc["client_id_metadata_document_supported"] is True


def test_cors_for_browser_clients(local: tuple[Provider, TestClient]) -> None:
    _, http = local
    pre = http.options("/register", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                                             "Access-Control-Request-Headers": "content-type"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] in ("*", "https://app.example")
    resp = http.post("/register", json=PYTHON_SDK_REQUEST, headers={"Origin": "https://app.example"})
    assert resp.status_code == 201 and resp.headers["access-control-allow-origin"] == "*"
    put = http.options("/register/x", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "PUT",
                                               "Access-Control-Request-Headers": "authorization,content-type"})
    assert put.status_code == 200


@pytest.mark.parametrize("uris", [
    None, [], "http://127.0.0.1/cb", [5], ["http://evil.example/cb"], ["https://app.example/cb#x"],
    ["javascript:alert(1)"], ["data:text/html,hi"], ["https://user:pw@app.example/cb"], ["relative/cb"],
    ["https://app.example/cb"] * 1 + [f"http://127.0.0.1:{p}/cb" for p in range(16)], ["https://" + "a" * 600],
    ["file:///etc/passwd"], ["myapp:/cb"], ["com.example.app://host/cb"], ["http://127.0.0.1:99999/cb"],
    ["http://localhost.evil.example/cb"], ["https://app.example/ cb"],
])
def test_invalid_redirect_uris_are_refused(local: tuple[Provider, TestClient], uris: Any) -> None:
    prov, http = local
    request = {**PYTHON_SDK_REQUEST, "redirect_uris": uris}
    if uris is None:
        del request["redirect_uris"]
    resp = http.post("/register", json=request)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "invalid_redirect_uri"
    assert count_clients(prov) == 0


def test_private_use_scheme_and_ipv6_loopback_are_allowed(local: tuple[Provider, TestClient]) -> None:
    _, http = local
    resp = http.post("/register", json={**PYTHON_SDK_REQUEST, "redirect_uris": [
        "com.example.app:/oauth/cb", "http://[::1]:8080/cb", "http://127.0.0.1/cb"]})
    assert resp.status_code == 201, resp.text


@pytest.mark.parametrize("change", [
    {"client_name": 5}, {"client_name": ""}, {"client_name": "x" * 500}, {"client_name": "bad\nname"},
    {"grant_types": "authorization_code"}, {"grant_types": ["client_credentials"]}, {"grant_types": ["implicit"]},
    {"grant_types": ["refresh_token"]}, {"grant_types": ["password", "authorization_code"]},
    {"response_types": ["token"]}, {"response_types": "code"},
    {"token_endpoint_auth_method": "private_key_jwt"}, {"token_endpoint_auth_method": "client_secret_jwt"},
    {"token_endpoint_auth_method": 3}, {"application_type": "desktop"},
    {"application_type": "web"},  # with a loopback http redirect URI: refused (OIDC Registration §2)
    {"contacts": "ops@example.com"}, {"contacts": [1]}, {"logo_uri": "javascript:alert(1)"},
    {"client_uri": "http://app.example"}, {"tos_uri": 5}, {"scope": 7}, {"software_id": ["x"]},
    {"jwks": {"keys": []}, "jwks_uri": "https://app.example/jwks"}, {"jwks": "keys"},
])
def test_bad_metadata_is_refused(local: tuple[Provider, TestClient], change: dict[str, Any]) -> None:
    prov, http = local
    resp = http.post("/register", json={**PYTHON_SDK_REQUEST, **change})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] in ("invalid_client_metadata", "invalid_redirect_uri")
    if "application_type" not in change:
        assert resp.json()["error"] == "invalid_client_metadata"
    assert count_clients(prov) == 0


@pytest.mark.parametrize("body,content_type", [
    (b"[]", "application/json"), (b"not json", "application/json"), (b"\xff", "application/json"),
    (b"[" * 8_000 + b"]" * 8_000, "application/json"), (json.dumps(PYTHON_SDK_REQUEST).encode(), "text/plain"),
    (json.dumps(PYTHON_SDK_REQUEST).encode(), "application/x-www-form-urlencoded"), (b"", "application/json"),
])
def test_malformed_bodies_are_refused(local: tuple[Provider, TestClient], body: bytes, content_type: str) -> None:
    prov, http = local
    resp = http.post("/register", content=body, headers={"Content-Type": content_type})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "invalid_client_metadata"
    assert count_clients(prov) == 0


def test_oversized_body_is_413(local: tuple[Provider, TestClient]) -> None:
    prov, http = local
    request = {**PYTHON_SDK_REQUEST, "client_name": "x", "padding": "x" * 20_000}
    resp = http.post("/register", json=request)
    assert resp.status_code == 413 and resp.json()["error"] == "invalid_request"

    def chunks() -> Iterator[bytes]:  # no Content-Length: cut while reading
        yield b'{"redirect_uris": ["http://127.0.0.1/cb"], "x": "'
        for _ in range(40):
            yield b"x" * 1024
        yield b'"}'

    resp = http.post("/register", content=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status_code == 413
    assert count_clients(prov) == 0


def test_cap_evicts_oldest_unused_and_keeps_clients_in_use(db_url: str, tmp_path: Path) -> None:
    with idp(db_url, tmp_path, registration_max_unused=3, registration_rate=0) as (prov, http):
        working = http.post("/register", json={**PYTHON_SDK_REQUEST, "client_name": "real client"}).json()
        mark_used(prov, working["client_id"])
        ids = [http.post("/register", json=PYTHON_SDK_REQUEST).json()["client_id"] for _ in range(3)]
        assert count_clients(prov) == 4
        for _ in range(20):  # a flood of registrations that are never used
            resp = http.post("/register", json=PYTHON_SDK_REQUEST)
            assert resp.status_code == 201  # nobody is refused...
        assert count_clients(prov) == 4  # ...the oldest unused are evicted instead
        assert prov.clients.get(working["client_id"]) is not None  # the client in use stays
        assert all(prov.clients.get(i) is None for i in ids)
        # ...and still works with its registration token.
        got = http.get(f"/register/{working['client_id']}",
                       headers={"Authorization": f"Bearer {working['registration_access_token']}"})
        assert got.status_code == 200
        from sqlalchemy import select

        from idp.models import AuditEvent

        table = AuditEvent.__table__  # type: ignore[attr-defined]
        with prov.engine.connect() as conn:
            evictions = conn.execute(select(table.c.data).where(table.c.event == "client.evicted")).all()
        assert len(evictions) == 20


def test_unused_dynamic_clients_expire(db_url: str, tmp_path: Path) -> None:
    with idp(db_url, tmp_path, registration_unused_ttl=60) as (prov, http):
        used = http.post("/register", json=PYTHON_SDK_REQUEST).json()["client_id"]
        idle = http.post("/register", json=PYTHON_SDK_REQUEST).json()["client_id"]
        mark_used(prov, used)
        operator, _ = prov.clients.add("ops", capabilities="tools/call:*")
        created = prov.clients.get(idle).created_at
        assert prov.dynamic_clients.expire_unused(now=created + 30) == 0
        assert prov.dynamic_clients.expire_unused(now=created + 61) == 1
        assert prov.clients.get(idle) is None
        assert prov.clients.get(used) is not None and prov.clients.get(operator.client_id) is not None


def test_flood_from_one_address_is_throttled_while_others_register(db_url: str, tmp_path: Path) -> None:
    prov = Provider.open(settings_for(db_url, tmp_path, registration_rate=3))
    try:
        with served(prov) as url, \
                httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.1"), timeout=10) as flood, \
                httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10) as other:
            codes = [flood.post(f"{url}/register", json=PYTHON_SDK_REQUEST).status_code for _ in range(6)]
            assert codes[:3] == [201, 201, 201] and set(codes[3:]) == {429}
            last = flood.post(f"{url}/register", json=PYTHON_SDK_REQUEST)
            assert last.status_code == 429 and int(last.headers["retry-after"]) >= 1
            assert last.json()["error"] == "temporarily_unavailable"
            assert other.post(f"{url}/register", json=PYTHON_SDK_REQUEST).status_code == 201
        assert count_clients(prov) == 4
    finally:
        prov.close()
