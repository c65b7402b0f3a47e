"""Federated login end to end against a real upstream, node-oidc-provider, and a real ``idp serve``.

The browser is an HTTP client that follows redirects and submits the upstream's login and
consent forms. Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from federation_testing import IdP, NodeUpstream, drive_upstream_login, node_available, start_idp

pytestmark = pytest.mark.skipif(not node_available(), reason="needs node and `npm ci` in tests/idp/upstream_oidc")


@pytest.fixture
def idp(db_url: str, tmp_path: Path) -> Iterator[IdP]:
    yield from start_idp(db_url, tmp_path)


def _upstream(idp: IdP, name: str, *, label: str | None = None) -> NodeUpstream:
    up = NodeUpstream(client_id=f"cbst-{name}", client_secret="s3cret-" + name, redirect_uris=[idp.callback(name)],
                      log_dir=idp.tmp)
    idp.provider.federation.add(name, issuer=up.issuer, client_id=up.client_id, client_secret=up.client_secret,
                                scopes=["openid", "email", "profile", "groups"], label=label)
    return up


@pytest.fixture
def corp(idp: IdP) -> Iterator[NodeUpstream]:
    up = _upstream(idp, "corp", label="Corp SSO")
    yield up
    up.stop()


def login(idp: IdP, up: NodeUpstream, name: str, *, user: str = "alice",
          browser: httpx.Client | None = None) -> tuple[httpx.Response, str]:
    iid = idp.new_interaction()
    http = browser or httpx.Client(follow_redirects=True, timeout=30)
    start = http.get(f"{idp.url}/login/upstream/{name}", params={"interaction": iid})
    assert str(start.url).startswith(up.issuer), start.text[:300]
    return drive_upstream_login(http, start, login=user, upstream_origin=up.issuer), iid


def test_federated_login_maps_the_upstream_person_to_a_local_subject(idp: IdP, corp: NodeUpstream) -> None:
    done, iid = login(idp, corp, "corp")
    assert str(done.url).startswith(idp.callback("corp")), done.url
    assert done.status_code != 500 and "Traceback" not in done.text, done.text[:300]
    [identity] = idp.identities()
    assert identity["issuer"] == corp.issuer and identity["upstream_subject"] == "alice"
    assert identity["subject"].startswith("fed-")
    assert identity["claims"]["email"] == "alice@example.test"
    assert identity["claims"]["groups"] == ["ops", "staff"]
    assert identity["claims"]["name"] == "Alice Example"
    [event] = idp.audit("federation.login")
    assert event["subject"] == identity["subject"] and event["interaction"] == iid and event["first_login"] is True
    assert event["groups"] == ["ops", "staff"]
    # The started login is consumed: nothing of it stays in the interaction.
    data = idp.interaction_data(iid)
    assert data is None or "federation" not in data


def test_the_same_upstream_person_is_the_same_subject_on_the_next_login(idp: IdP, corp: NodeUpstream) -> None:
    login(idp, corp, "corp")
    login(idp, corp, "corp")  # a new browser: a new upstream session, the same upstream account
    login(idp, corp, "corp", user="bob")
    identities = idp.identities()
    assert sorted(i["upstream_subject"] for i in identities) == ["alice", "bob"]
    events = idp.audit("federation.login")
    alice = [e for e in events if e["upstream_subject"] == "alice"]
    assert len(alice) == 2 and alice[0]["subject"] == alice[1]["subject"]
    assert [e["first_login"] for e in alice] == [True, False]
    assert len(idp.audit("federation.identity_linked")) == 2


def test_claims_are_refreshed_on_every_login(idp: IdP, corp: NodeUpstream) -> None:
    login(idp, corp, "corp")
    with idp.provider.engine.begin() as conn:  # as if the upstream said something else last time
        conn.exec_driver_sql("UPDATE federated_identities SET claims = '{\"groups\": [\"old\"]}'")
    login(idp, corp, "corp")
    [identity] = idp.identities()
    assert identity["claims"]["groups"] == ["ops", "staff"]


def test_two_upstreams_side_by_side(idp: IdP, corp: NodeUpstream) -> None:
    partner = _upstream(idp, "partner", label="Partner IdP")
    try:
        login(idp, corp, "corp")
        login(idp, partner, "partner")
        identities = idp.identities()
        assert {i["issuer"] for i in identities} == {corp.issuer, partner.issuer}
        # alice at two providers is two people: (iss, sub) is the identity, not the name.
        assert len({i["subject"] for i in identities}) == 2
        from idp.federation.routes import login_methods

        methods = login_methods(idp.provider)
        assert [(m.name, m.label) for m in methods] == [("upstream:corp", "Corp SSO"),
                                                        ("upstream:partner", "Partner IdP")]
        assert methods[1].start_url("abc") == "/login/upstream/partner?interaction=abc"
        idp.provider.federation.set_enabled("partner", False)
        assert [m.name for m in login_methods(idp.provider)] == ["upstream:corp"]
        refused = httpx.get(f"{idp.url}/login/upstream/partner", params={"interaction": idp.new_interaction()})
        assert refused.status_code == 404 and "text/html" in refused.headers["content-type"]
    finally:
        partner.stop()


def test_the_upstream_gets_pkce_nonce_and_state(idp: IdP, corp: NodeUpstream) -> None:
    iid = idp.new_interaction()
    start = httpx.get(f"{idp.url}/login/upstream/corp", params={"interaction": iid})
    assert start.status_code == 303
    location = httpx.URL(start.headers["location"])
    q = dict(location.params)
    assert str(location).startswith(corp.issuer + "/auth")
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
    assert q["response_type"] == "code" and q["client_id"] == "cbst-corp"
    assert q["redirect_uri"] == idp.callback("corp")
    assert q["state"].startswith(iid + ".") and len(q["nonce"]) >= 32
    assert set(q["scope"].split()) == {"openid", "email", "profile", "groups"}
    cookie = start.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/federation/callback/" in cookie
    stored = idp.interaction_data(iid)
    assert stored is not None and stored["federation"]["upstream"] == "corp"
    assert q["state"] not in str(stored)  # only its hash is kept


def test_an_upstream_that_is_down_gives_a_clean_error_page(idp: IdP) -> None:
    from idp_testing import free_port

    idp.provider.federation.add("gone", issuer=f"http://127.0.0.1:{free_port()}", client_id="x", client_secret="y")
    r = httpx.get(f"{idp.url}/login/upstream/gone", params={"interaction": idp.new_interaction()})
    assert r.status_code == 502 and "text/html" in r.headers["content-type"]
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert "Traceback" not in r.text and "cannot be used now" in r.text
    [event] = idp.audit("federation.login_refused")
    assert event["reason"] == "upstream_unavailable"


def test_unknown_interaction_and_unknown_upstream_are_refused(idp: IdP, corp: NodeUpstream) -> None:
    r = httpx.get(f"{idp.url}/login/upstream/corp", params={"interaction": "no-such-interaction"})
    assert r.status_code == 400 and "unknown or has expired" in r.text
    r = httpx.get(f"{idp.url}/login/upstream/corp")
    assert r.status_code == 400
    r = httpx.get(f"{idp.url}/login/upstream/nope", params={"interaction": idp.new_interaction()})
    assert r.status_code == 404
    r = httpx.get(f"{idp.url}/login/upstream/..%2F..%2Fetc", params={"interaction": idp.new_interaction()})
    assert r.status_code == 404
