"""RFC 7592 management of a dynamic registration at ``/register/{client_id}`` with its
registration access token: read, replace (``client_id`` fixed, the secret never chosen by the
client) and delete; a wrong, missing or other client's token is 401 ``invalid_token`` and
changes nothing. SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from registration_testing import PYTHON_SDK_REQUEST, idp
from starlette.testclient import TestClient

from idp.provider import Provider


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[tuple[Provider, TestClient]]:
    with idp(db_url, tmp_path) as pair:
        yield pair


def _register(http: TestClient, **extra: Any) -> dict[str, Any]:
    resp = http.post("/register", json={**PYTHON_SDK_REQUEST, **extra})
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_read_with_the_registration_token(env: tuple[Provider, TestClient]) -> None:
    _, http = env
    reg = _register(http)
    resp = http.get(f"/register/{reg['client_id']}", headers=_auth(reg["registration_access_token"]))
    assert resp.status_code == 200 and resp.headers["cache-control"] == "no-store"
    body = resp.json()
    assert body["client_id"] == reg["client_id"] and body["redirect_uris"] == PYTHON_SDK_REQUEST["redirect_uris"]
    assert "registration_access_token" not in body  # shown once, at registration


def _tokens(reg: dict[str, Any], other: dict[str, Any]) -> list[dict[str, str]]:
    token = reg["registration_access_token"]
    return [{}, _auth("cbstr_wrong"), _auth(other["registration_access_token"]), _auth(token[:-1]),
            _auth(token + "x"), {"Authorization": f"Basic {token}"}, {"Authorization": "Bearer"},
            {"Authorization": f"bearer  {token[:10]}"}]


def test_wrong_tokens_cannot_read(env: tuple[Provider, TestClient]) -> None:
    _, http = env
    reg, other = _register(http), _register(http)
    for headers in _tokens(reg, other):
        resp = http.get(f"/register/{reg['client_id']}", headers=headers)
        assert resp.status_code == 401, headers
        assert resp.json()["error"] == "invalid_token"
        assert resp.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    # An unknown client looks exactly like a wrong token (nothing learnt about which ids exist).
    unknown = http.get("/register/0123456789abcdef0123456789abcdef", headers=_auth(reg["registration_access_token"]))
    assert unknown.status_code == 401 and unknown.json() == http.get(
        f"/register/{reg['client_id']}", headers=_auth("nope")).json()


def test_operator_and_document_clients_cannot_be_managed(env: tuple[Provider, TestClient]) -> None:
    prov, http = env
    operator, _ = prov.clients.add("ops", capabilities="tools/call:*")
    for headers in ({}, _auth(""), _auth("x")):
        assert http.get(f"/register/{operator.client_id}", headers=headers).status_code == 401
        assert http.delete(f"/register/{operator.client_id}", headers=headers).status_code == 401
    assert prov.clients.get(operator.client_id) is not None


def test_update_replaces_metadata(env: tuple[Provider, TestClient]) -> None:
    prov, http = env
    reg = _register(http)
    new = {**PYTHON_SDK_REQUEST, "client_id": reg["client_id"], "redirect_uris": ["http://127.0.0.1:9999/new"],
           "client_name": "Renamed", "registration_access_token": "ignored", "client_id_issued_at": 1}
    resp = http.put(f"/register/{reg['client_id']}", json=new, headers=_auth(reg["registration_access_token"]))
    assert resp.status_code == 200, resp.text
    assert resp.json()["redirect_uris"] == ["http://127.0.0.1:9999/new"]
    client = prov.clients.get(reg["client_id"])
    assert client.redirect_uris == ("http://127.0.0.1:9999/new",) and client.display_name == "Renamed"
    assert client.client_id == reg["client_id"]
    # The same registration token keeps working.
    assert http.get(f"/register/{reg['client_id']}", headers=_auth(reg["registration_access_token"])).json()[
        "client_name"] == "Renamed"


def test_update_cannot_change_client_id_or_choose_a_secret(env: tuple[Provider, TestClient]) -> None:
    prov, http = env
    reg = _register(http, token_endpoint_auth_method="client_secret_basic")
    url, headers = f"/register/{reg['client_id']}", _auth(reg["registration_access_token"])
    base = {**PYTHON_SDK_REQUEST, "token_endpoint_auth_method": "client_secret_basic"}
    for body in ({**base}, {**base, "client_id": "a" * 32}, {**base, "client_id": reg["client_id"],
                                                                "client_secret": "cbsts_mine"}):
        resp = http.put(url, json=body, headers=headers)
        assert resp.status_code == 400 and resp.json()["error"] == "invalid_client_metadata", body
    client = prov.clients.get(reg["client_id"])
    assert client.check_secret(reg["client_secret"]) and not client.check_secret("cbsts_mine")
    # Sending the current secret is allowed (RFC 7592 section 2.2) and keeps it.
    ok = http.put(url, json={**base, "client_id": reg["client_id"], "client_secret": reg["client_secret"]},
                  headers=headers)
    assert ok.status_code == 200 and "client_secret" not in ok.json()
    assert prov.clients.get(reg["client_id"]).check_secret(reg["client_secret"])


def test_update_to_a_secret_method_issues_a_secret(env: tuple[Provider, TestClient]) -> None:
    prov, http = env
    reg = _register(http)
    resp = http.put(f"/register/{reg['client_id']}", headers=_auth(reg["registration_access_token"]), json={
        **PYTHON_SDK_REQUEST, "client_id": reg["client_id"], "token_endpoint_auth_method": "client_secret_post"})
    assert resp.status_code == 200
    secret = resp.json()["client_secret"]
    assert prov.clients.get(reg["client_id"]).check_secret(secret)


def test_update_with_a_wrong_token_changes_nothing(env: tuple[Provider, TestClient]) -> None:
    prov, http = env
    reg, other = _register(http), _register(http)
    before = prov.clients.get(reg["client_id"])
    body = {**PYTHON_SDK_REQUEST, "client_id": reg["client_id"], "redirect_uris": ["http://127.0.0.1:1/evil"]}
    for headers in _tokens(reg, other):
        resp = http.put(f"/register/{reg['client_id']}", json=body, headers=headers)
        assert resp.status_code == 401 and resp.json()["error"] == "invalid_token"
    assert prov.clients.get(reg["client_id"]) == before


def test_update_with_invalid_metadata_is_refused(env: tuple[Provider, TestClient]) -> None:
    prov, http = env
    reg = _register(http)
    resp = http.put(f"/register/{reg['client_id']}", headers=_auth(reg["registration_access_token"]), json={
        **PYTHON_SDK_REQUEST, "client_id": reg["client_id"], "redirect_uris": ["https://evil.example/cb#x"]})
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_redirect_uri"
    assert prov.clients.get(reg["client_id"]).redirect_uris == tuple(PYTHON_SDK_REQUEST["redirect_uris"])


def test_delete_removes_the_client(env: tuple[Provider, TestClient]) -> None:
    prov, http = env
    reg, other = _register(http), _register(http)
    for headers in _tokens(reg, other):
        assert http.delete(f"/register/{reg['client_id']}", headers=headers).status_code == 401
    assert prov.clients.get(reg["client_id"]) is not None
    resp = http.delete(f"/register/{reg['client_id']}", headers=_auth(reg["registration_access_token"]))
    assert resp.status_code == 204 and resp.content == b""
    assert prov.clients.get(reg["client_id"]) is None
    again = http.get(f"/register/{reg['client_id']}", headers=_auth(reg["registration_access_token"]))
    assert again.status_code == 401
    assert prov.clients.get(other["client_id"]) is not None


def test_delete_revokes_outstanding_tokens(env: tuple[Provider, TestClient]) -> None:
    from registration_testing import mark_used

    from idp import clock

    prov, http = env
    reg = _register(http)
    mark_used(prov, reg["client_id"])  # a token.issued record...
    from idp import audit

    with audit.transaction(prov.engine) as tx:  # ...of a token still valid
        tx.record(audit.Record("token.issued", reg["client_id"], client_id=reg["client_id"], jti="live-jti",
                               data={"exp": clock.now() + 300}))
    assert http.delete(f"/register/{reg['client_id']}",
                       headers=_auth(reg["registration_access_token"])).status_code == 204
    assert prov.revocations.is_revoked("live-jti")


def test_other_methods_are_405(env: tuple[Provider, TestClient]) -> None:
    _, http = env
    reg = _register(http)
    resp = http.patch(f"/register/{reg['client_id']}", headers=_auth(reg["registration_access_token"]), json={})
    assert resp.status_code == 405
    assert http.get("/register").status_code == 405
