"""Federated login end to end against a real upstream, node-oidc-provider, and a real ``idp serve``.

The browser is an HTTP client that follows redirects and submits the upstream's login and
consent forms. Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from federation_testing import (
    REDIRECT,
    IdP,
    NodeUpstream,
    drive_upstream_login,
    follow,
    node_available,
    start_idp,
    temporary_pg_database,
)
from idp_testing import AUDIENCE, SKIP_PG

pytestmark = pytest.mark.skipif(not node_available(), reason="needs node and `npm ci` in tests/idp/upstream_oidc")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def idp(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdP]:
    """One real ``idp serve`` per database for the module (each test has upstreams of its own)."""
    tmp: Path = tmp_path_factory.mktemp("fed-" + request.param)
    if request.param == "sqlite":
        yield from start_idp(f"sqlite:///{tmp / 'idp.db'}", tmp)
        return
    if SKIP_PG:
        pytest.skip("IDP_TEST_SKIP_POSTGRES=1")
    with temporary_pg_database() as url:
        yield from start_idp(url, tmp)


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
    idp.provider.federation.remove("corp")


def events(idp: IdP, event: str, up: NodeUpstream) -> list[dict[str, object]]:
    return [e for e in idp.audit(event) if e.get("issuer") == up.issuer]


def login(idp: IdP, up: NodeUpstream, name: str, *, user: str = "alice",
          browser: httpx.Client | None = None) -> tuple[httpx.Response, str]:
    iid = idp.new_interaction()
    http = browser or httpx.Client(follow_redirects=True, timeout=30)
    start = http.get(f"{idp.url}/login/upstream/{name}", params={"interaction": iid})
    assert str(start.url).startswith(up.issuer), start.text[:300]
    return drive_upstream_login(http, start, login=user, upstream_origin=up.issuer), iid


def test_federated_login_maps_the_upstream_person_to_a_local_subject(idp: IdP, corp: NodeUpstream) -> None:
    done, iid = login(idp, corp, "corp")
    # Through the callback, handed over to the pages: logged in, on the consent page.
    assert any(str(r.url).startswith(idp.callback("corp")) for r in done.history), done.url
    assert done.status_code == 200 and 'action="/consent"' in done.text, done.text[:300]
    [identity] = idp.identities(corp.issuer)
    assert identity["upstream_subject"] == "alice"
    assert identity["subject"].startswith("fed-")
    assert identity["claims"]["email"] == "alice@example.test"
    assert identity["claims"]["groups"] == ["ops", "staff"]
    assert identity["claims"]["name"] == "Alice Example"
    [event] = events(idp, "federation.login", corp)
    assert event["subject"] == identity["subject"] and event["interaction"] == iid and event["first_login"] is True
    assert event["groups"] == ["ops", "staff"]
    # The started login is consumed: nothing of it stays in the interaction.
    data = idp.interaction_data(iid)
    assert data is None or "federation" not in data


def test_the_same_upstream_person_is_the_same_subject_on_the_next_login(idp: IdP, corp: NodeUpstream) -> None:
    login(idp, corp, "corp")
    login(idp, corp, "corp")  # a new browser: a new upstream session, the same upstream account
    login(idp, corp, "corp", user="bob")
    identities = idp.identities(corp.issuer)
    assert sorted(i["upstream_subject"] for i in identities) == ["alice", "bob"]
    alice = [e for e in events(idp, "federation.login", corp) if e["upstream_subject"] == "alice"]
    assert len(alice) == 2 and alice[0]["subject"] == alice[1]["subject"]
    assert [e["first_login"] for e in alice] == [True, False]
    assert len(events(idp, "federation.identity_linked", corp)) == 2


def test_claims_are_refreshed_on_every_login(idp: IdP, corp: NodeUpstream) -> None:
    login(idp, corp, "corp")
    with idp.provider.engine.begin() as conn:  # as if the upstream said something else last time
        conn.execute(sa.text("UPDATE federated_identities SET claims = :c WHERE issuer = :i"),
                     {"c": '{"groups": ["old"]}', "i": corp.issuer})
    login(idp, corp, "corp")
    [identity] = idp.identities(corp.issuer)
    assert identity["claims"]["groups"] == ["ops", "staff"]


def test_two_upstreams_side_by_side(idp: IdP, corp: NodeUpstream) -> None:
    partner = _upstream(idp, "partner", label="Partner IdP")
    try:
        login(idp, corp, "corp")
        login(idp, partner, "partner")
        identities = idp.identities(corp.issuer, partner.issuer)
        assert {i["issuer"] for i in identities} == {corp.issuer, partner.issuer}
        # alice at two providers is two people: (iss, sub) is the identity, not the name.
        assert len({i["subject"] for i in identities}) == 2
        from idp.federation.routes import login_methods

        methods = login_methods(idp.provider)
        assert [(m.name, m.label) for m in methods] == [("upstream:corp", "Sign in with Corp SSO"),
                                                        ("upstream:partner", "Sign in with Partner IdP")]
        assert methods[1].start_url("abc") == "/login/upstream/partner?interaction=abc"
        idp.provider.federation.set_enabled("partner", False)
        assert [m.name for m in login_methods(idp.provider)] == ["upstream:corp"]
        refused = httpx.get(f"{idp.url}/login/upstream/partner", params={"interaction": idp.new_interaction()})
        assert refused.status_code == 404 and "text/html" in refused.headers["content-type"]
    finally:
        partner.stop()
        idp.provider.federation.remove("partner")


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
    try:
        r = httpx.get(f"{idp.url}/login/upstream/gone", params={"interaction": idp.new_interaction()})
        assert r.status_code == 502 and "text/html" in r.headers["content-type"]
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert "Traceback" not in r.text and "cannot be used now" in r.text
        [event] = [e for e in idp.audit("federation.login_refused") if e["upstream"] == "gone"]
        assert event["reason"] == "upstream_unavailable"
    finally:
        idp.provider.federation.remove("gone")


def test_unknown_interaction_and_unknown_upstream_are_refused(idp: IdP, corp: NodeUpstream) -> None:
    r = httpx.get(f"{idp.url}/login/upstream/corp", params={"interaction": "no-such-interaction"})
    assert r.status_code == 400 and "unknown or has expired" in r.text
    r = httpx.get(f"{idp.url}/login/upstream/corp")
    assert r.status_code == 400
    r = httpx.get(f"{idp.url}/login/upstream/nope", params={"interaction": idp.new_interaction()})
    assert r.status_code == 404
    r = httpx.get(f"{idp.url}/login/upstream/..%2F..%2Fetc", params={"interaction": idp.new_interaction()})
    assert r.status_code == 404


# --- through the pages: /authorize -> upstream -> consent -> code -> token -----------------------

def _authorize(idp: IdP, http: httpx.Client, scope: str = "tools/call:git-status openid email") -> tuple[
        httpx.Response, dict[str, str], str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = {"response_type": "code", "client_id": idp.client_id, "redirect_uri": REDIRECT, "scope": scope,
              "state": "st-" + secrets.token_hex(4), "code_challenge": challenge, "code_challenge_method": "S256",
              "resource": AUDIENCE, "nonce": "n-" + secrets.token_hex(4)}
    first = http.get(f"{idp.url}/authorize", params=params)
    if first.status_code == 303 and first.headers["location"].startswith("/interaction/"):
        params["interaction"] = first.headers["location"].removeprefix("/interaction/")
    page = follow(http, first, until=lambda u: str(u).startswith(REDIRECT))
    return page, params, verifier


def _hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no {name} in {page[:1500]}"
    return html.unescape(found.group(1))


def _consent(idp: IdP, http: httpx.Client, page: httpx.Response) -> httpx.Response:
    assert page.status_code == 200 and 'action="/consent"' in page.text, page.text[:1500]
    ticked = [html.unescape(v) for v in re.findall(r'name="grant" value="([^"]*)"[^>]*checked', page.text)]
    return http.post(f"{idp.url}/consent", data={"interaction": _hidden(page.text, "interaction"),
                                                 "csrf": _hidden(page.text, "csrf"), "action": "approve",
                                                 "grant": ticked})


def _code(response: httpx.Response, params: dict[str, str]) -> str:
    assert response.status_code in (302, 303), response.text[:1500]
    location = httpx.URL(response.headers["location"])
    assert str(location).startswith(REDIRECT + "?"), location
    assert location.params["state"] == params["state"]
    return location.params["code"]


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


def _token(idp: IdP, code: str, verifier: str) -> dict[str, str]:
    r = httpx.post(f"{idp.url}/token", auth=(idp.client_id, idp.client_secret), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier,
        "resource": AUDIENCE})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_authorize_with_federated_login_consent_code_and_token(idp: IdP, corp: NodeUpstream) -> None:
    http = httpx.Client(timeout=30)
    page, params, verifier = _authorize(idp, http)
    # The only login method: the pages send the person straight to the upstream.
    assert str(page.url).startswith(corp.issuer), (page.url, page.text[:500])
    consent = drive_upstream_login(http, page, upstream_origin=corp.issuer)
    assert str(consent.url).startswith(idp.url)
    code = _code(_consent(idp, http, consent), params)
    tokens = _token(idp, code, verifier)
    [identity] = idp.identities(corp.issuer)
    access = _claims(tokens["access_token"])
    assert access["sub"] == identity["subject"] and access["aud"] == AUDIENCE
    assert access["scope"] == "tools/call:git-status"
    id_token = _claims(tokens["id_token"])
    assert id_token["sub"] == identity["subject"] and id_token["email"] == "alice@example.test"
    assert id_token["nonce"] == params["nonce"]
    [login_event] = [e for e in idp.audit("session.login") if e["subject"] == identity["subject"]]
    assert login_event["method"] == "federated:corp" and login_event["subject"] == identity["subject"]
    # The browser's session now is that person: the next request needs neither login nor consent.
    again, params2, verifier2 = _authorize(idp, http)
    assert _claims(_token(idp, _code(again, params2), verifier2)["access_token"])["sub"] == identity["subject"]
    assert len(events(idp, "federation.login", corp)) == 1


def test_chooser_offers_every_upstream(idp: IdP, corp: NodeUpstream) -> None:
    partner = _upstream(idp, "partner", label="Partner IdP")
    try:
        http = httpx.Client(timeout=30)
        chooser, params, verifier = _authorize(idp, http)
        assert chooser.status_code == 200 and str(chooser.url).startswith(idp.url)
        links = dict(re.findall(r'<a class="method" href="([^"]+)">([^<]+)</a>', chooser.text))
        links = {html.unescape(label): html.unescape(url) for url, label in links.items()}
        assert set(links) == {"Sign in with Corp SSO", "Sign in with Partner IdP"}
        page = follow(http, http.get(idp.url + links["Sign in with Partner IdP"]), until=lambda u: False)
        assert str(page.url).startswith(partner.issuer)
        consent = drive_upstream_login(http, page, login="bob", upstream_origin=partner.issuer)
        tokens = _token(idp, _code(_consent(idp, http, consent), params), verifier)
        [identity] = idp.identities(partner.issuer)
        assert identity["upstream_subject"] == "bob"
        assert _claims(tokens["access_token"])["sub"] == identity["subject"]
    finally:
        partner.stop()
        idp.provider.federation.remove("partner")


def test_an_interaction_bound_to_another_browser_is_not_sent_upstream(idp: IdP, corp: NodeUpstream) -> None:
    http = httpx.Client(timeout=30)
    _, params, _ = _authorize(idp, http)  # the pages bound the interaction to this browser's session
    iid = params["interaction"]
    other = httpx.Client(timeout=30)
    r = other.get(f"{idp.url}/login/upstream/corp", params={"interaction": iid})
    assert r.status_code == 400 and "another browser" in r.text and "Location" not in r.headers
    assert idp.audit("federation.login_refused")[-1]["reason"] == "browser_mismatch"
