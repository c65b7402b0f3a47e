"""Failed client authentications are bounded per client_id and per remote address, and audited
(with the audit writes bounded too). Sent as an attacker would: over HTTP, from addresses of its
own (the ASGI peer address), guessing secrets and forging assertions.

Over the limit the endpoints answer 429 with Retry-After and an RFC 6749 §5.2 error object
(``temporarily_unavailable``) before the secret or assertion is looked at; other clients and
other addresses authenticate as before.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from idp_testing import AUDIENCE, ISSUER, random_kek
from joserfc import jwt
from joserfc.jwk import ECKey
from starlette.testclient import TestClient
from test_token_endpoint import assert_oauth_error, basic

from idp.app import create_app
from idp.config import Settings
from idp.provider import Provider

LIMIT = 5
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture
def provider(db_url: str, tmp_path: Path) -> Iterator[Provider]:
    settings = Settings(issuer=ISSUER, database_url=db_url, keys_dir=tmp_path / "keys", keystore_kek=random_kek(),
                        auth_fail_client=LIMIT, auth_fail_address=LIMIT * 2, auth_fail_window=60,
                        auth_fail_audits=LIMIT * 3)
    prov = Provider.open(settings)
    yield prov
    prov.close()


@pytest.fixture
def from_address(provider: Provider) -> Iterator[Any]:
    """``from_address("198.51.100.7")``: an HTTP client whose requests come from that address."""
    app = create_app(provider=provider, maintenance=False)
    opened: list[TestClient] = []

    def make(address: str) -> TestClient:
        client = TestClient(app, base_url=ISSUER, client=(address, 40000))
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def _client(provider: Provider, **kw: Any) -> tuple[Any, str | None]:
    return provider.clients.add("c-" + secrets.token_hex(4), capabilities="tools/call:*", audiences=[AUDIENCE], **kw)


def _token(http: TestClient, client_id: str, secret: str | None) -> Any:
    return http.post("/token", data={"grant_type": "client_credentials"},
                     headers={"Authorization": basic(client_id, secret)})


def _auth_failed_records(provider: Provider) -> list[dict[str, Any]]:
    with provider.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT actor, client_id, data FROM audit_events"
                                    " WHERE event = 'client.auth_failed' ORDER BY id"))
        return [{"actor": r.actor, "client_id": r.client_id, "data": json.loads(r.data)} for r in rows]


def _advance(provider: Provider, seconds: float) -> None:
    """Move the throttle's clock (monotonic time) forward."""
    throttle = provider.auth_throttle
    real = throttle.clock
    throttle.clock = lambda: real() + seconds


def _assert_throttled(resp: Any) -> None:
    body = assert_oauth_error(resp, 429, "temporarily_unavailable")
    assert 1 <= int(resp.headers["retry-after"]) <= 60, resp.headers
    assert "access_token" not in body


def test_secret_guessing_is_throttled_per_client_and_audited(provider: Provider, from_address: Any) -> None:
    victim, victim_secret = _client(provider)
    bystander, bystander_secret = _client(provider)
    attacker = from_address("203.0.113.66")
    for _ in range(LIMIT):
        guess = "cbsts_" + secrets.token_urlsafe(32)
        assert_oauth_error(_token(attacker, victim.client_id, guess), 401, "invalid_client")
    # The next guesses are refused before the secret is checked, even the right one.
    for guess in ("cbsts_" + secrets.token_urlsafe(32), victim_secret):
        _assert_throttled(_token(attacker, victim.client_id, guess))
    # From elsewhere too: the bound is per client (a distributed guesser gains nothing) ...
    _assert_throttled(_token(from_address("198.51.100.9"), victim.client_id, "cbsts_guess"))
    # ... and at the other endpoints.
    for path in ("/introspect", "/revoke"):
        _assert_throttled(from_address("198.51.100.10").post(path, data={"token": "x"},
                                                              headers={"Authorization": basic(victim.client_id, "g")}))
    # Other clients are unaffected, from another address and from the attacker's own.
    assert _token(from_address("192.0.2.1"), bystander.client_id, bystander_secret).status_code == 200
    assert _token(attacker, bystander.client_id, bystander_secret).status_code == 200
    # Each failed authentication was audited (the throttled attempts checked nothing).
    records = _auth_failed_records(provider)
    assert len(records) == LIMIT
    assert {r["client_id"] for r in records} == {victim.client_id}
    assert {r["actor"] for r in records} == {"203.0.113.66"}
    assert {r["data"]["method"] for r in records} == {"client_secret_basic"}
    assert victim_secret and victim_secret not in json.dumps(records)


def test_guessing_many_clients_is_throttled_per_address(provider: Provider, from_address: Any) -> None:
    clients = [_client(provider) for _ in range(LIMIT * 2 + 1)]
    attacker = from_address("203.0.113.77")
    for client, _ in clients[:LIMIT * 2]:  # one guess each: under every per-client limit
        assert_oauth_error(_token(attacker, client.client_id, "cbsts_nope"), 401, "invalid_client")
    last, last_secret = clients[-1]
    _assert_throttled(_token(attacker, last.client_id, last_secret))  # the address is over its limit
    # Unknown client ids count against the address too; the same client from elsewhere is fine.
    assert _token(from_address("192.0.2.2"), last.client_id, last_secret).status_code == 200


def test_forged_assertions_are_throttled(provider: Provider, from_address: Any) -> None:
    key = ECKey.generate_key("P-256", parameters={"kid": "k"})
    client, _ = _client(provider, auth_method="private_key_jwt", jwks={"keys": [key.as_dict(private=False)]})
    forger = ECKey.generate_key("P-256", parameters={"kid": "k"})

    def assertion(signer: Any) -> str:
        now = int(time.time())
        claims = {"iss": client.client_id, "sub": client.client_id, "aud": ISSUER, "iat": now, "exp": now + 60,
                  "jti": secrets.token_hex(8)}
        return jwt.encode({"alg": "ES256", "kid": "k"}, claims, signer)

    attacker = from_address("203.0.113.88")

    def post(http: TestClient, signer: Any) -> Any:
        return http.post("/token", data={"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER,
                                         "client_assertion": assertion(signer)})

    for _ in range(LIMIT):
        assert_oauth_error(post(attacker, forger), 401, "invalid_client")
    _assert_throttled(post(attacker, forger))
    _assert_throttled(post(from_address("198.51.100.3"), key))  # the client itself, for now
    assert len(_auth_failed_records(provider)) == LIMIT


def test_audit_records_of_failures_are_bounded(provider: Provider, from_address: Any) -> None:
    """Many addresses and client ids: the failures stay throttled per key, and the audit log gets
    at most auth_fail_audits records per window; the last one counts what it left out."""
    audit_limit = provider.settings.auth_fail_audits
    for i in range(audit_limit + 10):
        http = from_address(f"10.0.{i // 250}.{i % 250}")
        assert_oauth_error(_token(http, f"ghost-{i}", "x"), 401, "invalid_client")
    records = _auth_failed_records(provider)
    assert len(records) == audit_limit
    assert all(r["client_id"] is None for r in records)  # unknown ids are not recorded as clients
    assert records[0]["data"]["claimed_client_id"] == "ghost-0"
    # The next record written, once the budget refills, reports the 10 left out.
    _advance(provider, 60)
    assert_oauth_error(_token(from_address("10.9.9.9"), "ghost-last", "x"), 401, "invalid_client")
    assert _auth_failed_records(provider)[-1]["data"]["suppressed"] == 10


def test_throttle_lifts_after_the_window(provider: Provider, from_address: Any) -> None:
    victim, victim_secret = _client(provider)
    attacker = from_address("203.0.113.99")
    for _ in range(LIMIT):
        _token(attacker, victim.client_id, "cbsts_wrong")
    _assert_throttled(_token(from_address("192.0.2.50"), victim.client_id, victim_secret))
    _advance(provider, 60 // LIMIT + 1)  # one failure's worth of the window later
    assert _token(from_address("192.0.2.50"), victim.client_id, victim_secret).status_code == 200


def test_disabled_or_wrong_method_is_not_a_guess(provider: Provider, from_address: Any) -> None:
    """Refusals after the proof checked out (disabled client, other method) do not count."""
    client, secret = _client(provider, auth_method="client_secret_post")
    http = from_address("192.0.2.77")
    for _ in range(LIMIT + 1):
        assert_oauth_error(_token(http, client.client_id, secret), 401, "invalid_client")
    ok = http.post("/token", data={"grant_type": "client_credentials", "client_id": client.client_id,
                                   "client_secret": secret})
    assert ok.status_code == 200, ok.text
    assert _auth_failed_records(provider) == []


def test_a_real_server_throttles_guessing_over_the_network(tmp_path: Path) -> None:
    """``idp serve`` on loopback, limits from the environment, guesses sent with httpx."""
    import httpx
    from idp_testing import ServerProcess, env_for, free_port

    port = free_port()
    settings = Settings(issuer=f"http://127.0.0.1:{port}", database_url=f"sqlite:///{tmp_path / 'idp.db'}",
                        keys_dir=tmp_path / "keys", keystore_kek=random_kek())
    prov = Provider.open(settings)
    try:
        victim, secret = _client(prov)
    finally:
        prov.close()
    server = ServerProcess({**env_for(settings), "IDP_AUTH_FAIL_CLIENT": "3"}, port)
    try:
        def guess(value: str | None) -> httpx.Response:
            return httpx.post(server.url + "/token", data={"grant_type": "client_credentials"},
                              headers={"Authorization": basic(victim.client_id, value)}, timeout=10)

        assert [guess("cbsts_" + secrets.token_urlsafe(32)).status_code for _ in range(3)] == [401, 401, 401]
        _assert_throttled(guess(secret))
    finally:
        server.stop()
