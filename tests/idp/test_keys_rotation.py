"""Signing-key rotation: pre-publication, activation, automatic retirement, scheduled rotation.

Time is moved by replacing ``idp.clock.now`` (the one place the IdP reads the time). Tokens are
obtained from the real ASGI app over its HTTP interface and verified *independently* with joserfc
against the JWKS document fetched from ``/jwks`` at that moment.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from idp import clock as idp_clock
from idp.app import create_app
from idp.config import Settings
from idp.provider import Provider
from idp.signing_keys import KeyError_

from idp_testing import ISSUER, register


class FakeClock:
    def __init__(self, start: int) -> None:
        self.t = start

    def __call__(self) -> int:
        return self.t

    def advance(self, seconds: int) -> int:
        self.t += seconds
        return self.t


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fc = FakeClock(int(time.time()))
    monkeypatch.setattr(idp_clock, "now", fc)
    return fc


def derive(settings: Settings, **changes: Any) -> Settings:
    data = settings.model_dump()
    if "jwks_max_age" in changes and "key_prepublication" not in changes:
        data.pop("key_prepublication")
    data.update(changes)
    return Settings(**data)


@pytest.fixture
def rig(settings: Settings, fake_clock: FakeClock) -> Iterator[Any]:
    """A provider (opened at the fake time), its app over a test HTTP client and a registered client."""
    from starlette.testclient import TestClient

    prov = Provider.open(derive(settings, key_rotation_interval=0))
    client, secret = register(prov)
    with TestClient(create_app(provider=prov, maintenance=False), base_url=ISSUER) as http:
        yield type("Rig", (), {"prov": prov, "http": http, "auth": (client.client_id, secret), "clock": fake_clock})
    prov.close()


def get_token(rig: Any) -> str:
    resp = rig.http.post("/token", data={"grant_type": "client_credentials"}, auth=rig.auth)
    assert resp.status_code == 200, resp.text
    return resp.json()["access_token"]


def fetch_jwks(rig: Any) -> dict[str, Any]:
    resp = rig.http.get("/jwks")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/jwk-set+json")
    return resp.json()


def kid_of(token: str) -> str:
    from sdk.jws import split

    return split(token)[0]["kid"]


def joserfc_verify(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """Signature check by an independent JOSE library; raises if the kid is absent or the signature bad."""
    return jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["ES256", "EdDSA"]).claims


def introspect(rig: Any, token: str) -> dict[str, Any]:
    resp = rig.http.post("/introspect", data={"token": token}, auth=rig.auth)
    assert resp.status_code == 200, resp.text
    return resp.json()


def key_row(prov: Provider, kid: str) -> Any:
    with prov.engine.connect() as conn:
        return conn.execute(sa.text("SELECT * FROM signing_keys WHERE kid = :k"), {"k": kid}).one()


def test_rotation_under_use_prepublishes_then_signs_and_retires_after_last_token_expires(rig: Any) -> None:
    """Tokens issued before, during and after a rotation all verify (joserfc, JWKS over HTTP) the whole time;
    the new key is in the JWKS for the full pre-publication interval before it signs; the old key stays
    until every token it signed has expired, then maintain() retires it."""
    s = rig.prov.settings
    assert s.prepublication == 2 * s.jwks_max_age  # the documented default
    start = rig.clock.t
    old_kid = kid_of(get_token(rig))
    first_published: dict[str, int] = {}
    first_signed: dict[str, int] = {}
    tokens: list[tuple[str, dict[str, Any]]] = []  # (token, claims)
    retired_at: dict[str, int] = {}
    rotated = None
    step = 25
    max_age = int(rig.http.get("/jwks").headers["cache-control"].split("max-age=")[1])
    assert max_age == s.jwks_max_age
    cache: tuple[int, dict[str, Any]] | None = None
    while rig.clock.t < start + 2000:
        now = rig.clock.t
        if rotated is None and now >= start + 100:
            rotated = rig.prov.keys.rotate(actor="test")
            assert rotated.activate_at == now + s.prepublication
        for event in rig.prov.maintain():
            if event.startswith("retired "):
                retired_at[event.split()[1]] = now
        jwks = fetch_jwks(rig)
        if cache is None or now - cache[0] >= max_age:
            cache = (now, jwks)  # a verifier that honours Cache-Control and never refetches early
        published = {k["kid"] for k in jwks["keys"]}
        assert all("d" not in k for k in jwks["keys"]), "private key material in the JWKS"
        for kid in published:
            first_published.setdefault(kid, now)
        token = get_token(rig)
        claims = joserfc_verify(token, jwks)
        # Pre-publication: even a JWKS cached for the full max-age already holds the signing key.
        assert joserfc_verify(token, cache[1])["jti"] == claims["jti"]
        tokens.append((token, claims))
        first_signed.setdefault(kid_of(token), claims["iat"])
        # Every token that has not expired yet verifies against the JWKS served right now.
        for tok, cl in tokens:
            if cl["exp"] + s.clock_skew > now:
                assert kid_of(tok) in published, f"unexpired token's key left the JWKS at +{now - start}s"
                assert joserfc_verify(tok, jwks)["jti"] == cl["jti"]
                assert introspect(rig, tok)["active"] is (cl["exp"] > now)
        rig.clock.advance(step)

    assert rotated is not None
    new_kid = rotated.kid
    assert new_kid != old_kid
    # Published for at least the pre-publication interval before the first token it signed.
    assert first_signed[new_kid] - first_published[new_kid] >= s.prepublication
    # ... and it does sign once that interval is over.
    assert first_signed[new_kid] <= rotated.activate_at + step
    # The old key left the JWKS automatically, and only after its last token had expired.
    assert old_kid in retired_at
    last_old_exp = max(cl["exp"] for tok, cl in tokens if kid_of(tok) == old_kid)
    assert retired_at[old_kid] >= last_old_exp + s.clock_skew
    assert retired_at[old_kid] <= rotated.activate_at + s.access_token_ttl + s.clock_skew + s.key_refresh_interval + step
    assert old_kid not in {k["kid"] for k in fetch_jwks(rig)["keys"]}
    old_tokens = [tok for tok, _ in tokens if kid_of(tok) == old_kid]
    with pytest.raises(JoseError):
        joserfc_verify(old_tokens[-1], fetch_jwks(rig))
    assert json.loads(key_row(rig.prov, old_kid).private_key).get("destroyed") is True
    assert new_kid not in retired_at  # the signing key is never retired automatically


def test_retired_key_tokens_no_longer_verify_and_its_private_key_is_destroyed(rig: Any) -> None:
    old_token = get_token(rig)
    old_kid = kid_of(old_token)
    envelope_before = key_row(rig.prov, old_kid).private_key
    assert json.loads(envelope_before)["ct"]
    new = rig.prov.keys.rotate(actor="test", immediate=True)
    new_token = get_token(rig)
    assert kid_of(new_token) == new.kid
    assert joserfc_verify(old_token, fetch_jwks(rig))  # superseded, still published
    assert introspect(rig, old_token)["active"] is True

    info = rig.prov.keys.retire(old_kid, actor="test")
    assert info.retired_at == rig.clock.t

    jwks = fetch_jwks(rig)
    assert old_kid not in {k["kid"] for k in jwks["keys"]}
    with pytest.raises(JoseError):
        joserfc_verify(old_token, jwks)
    assert introspect(rig, old_token) == {"active": False}
    assert joserfc_verify(new_token, jwks)  # the other key is untouched
    assert introspect(rig, new_token)["active"] is True
    row = key_row(rig.prov, old_kid)
    assert row.retired_at is not None
    assert "ct" not in json.loads(row.private_key) and json.loads(row.private_key)["destroyed"] is True
    # Another process that loads the keys from the database no longer has the retired key.
    other = Provider.open(rig.prov.settings)
    try:
        assert old_kid not in other.keys.verification_keys()
        assert new.kid in other.keys.verification_keys()
    finally:
        other.close()
    with pytest.raises(KeyError_, match="already retired"):
        rig.prov.keys.retire(old_kid, actor="test")


def test_retiring_the_current_signing_key_is_refused_with_a_clear_message(rig: Any) -> None:
    kid = kid_of(get_token(rig))
    with pytest.raises(KeyError_, match=r"current signing key.*rotate"):
        rig.prov.keys.retire(kid, actor="test")
    assert key_row(rig.prov, kid).retired_at is None
    assert kid in {k["kid"] for k in fetch_jwks(rig)["keys"]}
    # A pending (pre-published) key does not make the current one retirable either.
    rig.prov.keys.rotate(actor="test")
    with pytest.raises(KeyError_, match="current signing key"):
        rig.prov.keys.retire(kid, actor="test")
    with pytest.raises(KeyError_, match="no key with kid"):
        rig.prov.keys.retire("no-such-kid", actor="test")


def test_scheduled_rotation_runs_without_an_operator(settings: Settings, fake_clock: FakeClock) -> None:
    interval = 3600
    prov = Provider.open(derive(settings, key_rotation_interval=interval))
    try:
        s = prov.settings
        (k1,) = prov.keys.list()
        start = k1.activate_at
        fake_clock.t = start + interval - 1
        assert prov.maintain() == []
        fake_clock.t = start + interval
        events = prov.maintain()
        assert len(events) == 1 and events[0].startswith("rotated ")
        k2 = next(k for k in prov.keys.list() if k.kid != k1.kid)
        assert k2.activate_at == start + interval + s.prepublication
        assert k2.kid in prov.keys.verification_keys()  # published at once
        assert prov.keys.signer().kid == k1.kid  # pre-published, not yet signing
        fake_clock.advance(1)
        assert prov.maintain() == []  # one pending key is enough
        fake_clock.t = k2.activate_at
        assert prov.keys.signer().kid == k2.kid
        fake_clock.t = k2.activate_at + s.access_token_ttl + s.clock_skew + s.key_refresh_interval
        assert prov.maintain() == [f"retired {k1.kid}"]
        fake_clock.t = k2.activate_at + interval
        events = prov.maintain()
        assert len(events) == 1 and events[0].startswith("rotated ")
        with prov.engine.connect() as conn:
            created = conn.execute(sa.text(
                "SELECT actor, data FROM audit_events WHERE event = 'key.created' ORDER BY id")).all()
        assert [a for a, _ in created] == ["system", "scheduler", "scheduler"]
        assert all(json.loads(d)["reason"] == "scheduled" for _, d in created[1:])
    finally:
        prov.close()


def test_two_providers_running_maintain_at_once_create_exactly_one_new_key(settings: Settings,
                                                                           fake_clock: FakeClock) -> None:
    interval = 3600
    s = derive(settings, key_rotation_interval=interval)
    a, b = Provider.open(s), Provider.open(s)
    try:
        for round_ in range(4):
            signer = a.keys.signer()
            live = [k for k in a.keys.list() if k.retired_at is None]
            fake_clock.t = max(k.activate_at for k in live) + interval
            barrier = threading.Barrier(2)
            results: dict[str, Any] = {}

            def run(name: str, prov: Provider) -> None:
                barrier.wait()
                try:
                    results[name] = prov.maintain()
                except Exception as exc:  # noqa: BLE001 - reported below
                    results[name] = exc

            threads = [threading.Thread(target=run, args=(n, p)) for n, p in (("a", a), ("b", b))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert not any(isinstance(r, Exception) for r in results.values()), results
            rotations = [e for r in results.values() for e in r if e.startswith("rotated ")]
            assert len(rotations) == 1, f"round {round_}: {results}"
            pending = [k for k in a.keys.list() if k.retired_at is None and k.activate_at > fake_clock.t]
            assert len(pending) == 1, f"round {round_}: {pending}"
            with a.engine.connect() as conn:
                n_audit = conn.execute(sa.text(
                    "SELECT count(*) FROM audit_events WHERE event = 'key.created' AND actor = 'scheduler'")).scalar()
            assert n_audit == round_ + 1
            # Let the new key take over before the next round.
            fake_clock.t = pending[0].activate_at
            a.keys.refresh(force=True)
            b.keys.refresh(force=True)
            assert a.keys.signer().kid == b.keys.signer().kid == pending[0].kid != signer.kid
        assert len(a.keys.list()) == 5
    finally:
        a.close()
        b.close()


def test_scheduled_rotation_resumes_after_its_pending_key_was_retired(settings: Settings, fake_clock: FakeClock) -> None:
    """An operator may retire a pre-published key (e.g. created by mistake); the schedule must not stall."""
    interval = 3600
    prov = Provider.open(derive(settings, key_rotation_interval=interval))
    try:
        (k1,) = prov.keys.list()
        fake_clock.t = k1.activate_at + interval
        (event,) = prov.maintain()
        pending_kid = event.split()[1]
        prov.keys.retire(pending_kid, actor="test")
        fake_clock.advance(30)
        events = prov.maintain()
        assert len(events) == 1 and events[0].startswith("rotated "), events
        assert prov.keys.signer().kid == k1.kid
        live = [k for k in prov.keys.list() if k.retired_at is None]
        assert len(live) == 2 and all(k.kid != pending_kid for k in live)
    finally:
        prov.close()


def test_the_servers_own_maintenance_loop_rotates_on_schedule(settings: Settings, fake_clock: FakeClock,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """No operator and no explicit maintain() call: the running app's housekeeping does it."""
    from starlette.testclient import TestClient

    import idp.app

    interval = 3600
    prov = Provider.open(derive(settings, key_rotation_interval=interval))
    try:
        (k1,) = prov.keys.list()
        fake_clock.t = k1.activate_at + interval
        monkeypatch.setattr(idp.app, "MAINTENANCE_INTERVAL", 0.05)
        with TestClient(create_app(provider=prov, maintenance=True), base_url=ISSUER) as http:
            deadline = time.monotonic() + 15
            while len(prov.keys.list()) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            keys = prov.keys.list()
            assert len(keys) == 2, "the maintenance loop did not rotate"
            new = next(k for k in keys if k.kid != k1.kid)
            assert new.activate_at == fake_clock.t + prov.settings.prepublication
            prov.keys.refresh(force=True)
            assert new.kid in {k["kid"] for k in http.get("/jwks").json()["keys"]}
            time.sleep(0.3)  # further rounds do not add keys
            assert len(prov.keys.list()) == 2
    finally:
        prov.close()


def test_after_rotate_now_every_process_publishes_the_key_another_already_signs_with(settings: Settings) -> None:
    """Two IdP processes on one database (default key_refresh_interval, 5 s): B served its JWKS
    just before ``keys rotate --now``, A signs with the new key at once. A verifier that meets the
    new kid refetches the JWKS from whichever process it reaches: B must publish the key already."""
    from starlette.testclient import TestClient

    a, b, cli = Provider.open(settings), Provider.open(settings), Provider.open(settings)
    client, secret = register(a)
    try:
        with TestClient(create_app(provider=a, maintenance=False), base_url=ISSUER) as http_a, \
                TestClient(create_app(provider=b, maintenance=False), base_url=ISSUER) as http_b:
            assert http_b.get("/jwks").status_code == 200  # B holds the key set now
            new = cli.keys.rotate(actor="cli", immediate=True)  # what `idp keys rotate --now` does
            resp = http_a.post("/token", data={"grant_type": "client_credentials"}, auth=(client.client_id, secret))
            token = resp.json()["access_token"]
            assert kid_of(token) == new.kid  # A signs with it at once (it had no key set cached)
            joserfc_verify(token, http_b.get("/jwks").json())
            assert http_b.post("/introspect", data={"token": token}, auth=(client.client_id, secret)).json()["active"]
    finally:
        for p in (a, b, cli):
            p.close()
