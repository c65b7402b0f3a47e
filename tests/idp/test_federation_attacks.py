"""Attacks on federated login, each refused with a clean error page and an audit record.

The forged ID tokens come from an attacker upstream (a small Python OpenID provider on
loopback: real discovery, JWKS and token endpoint over HTTP); the callback attacks (state,
replay, another browser, another interaction, mix-up) also run against node-oidc-provider.
One ``idp serve`` on SQLite serves the module (the checks do not depend on the database).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from federation_testing import (
    AttackerUpstream,
    IdP,
    NodeUpstream,
    RSAKey,
    follow,
    form_of,
    node_available,
    start_idp,
)
from joserfc import jwt
from joserfc.jwk import OctKey

Forge = Callable[[dict[str, Any], dict[str, Any]], "str | None"]


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdP]:
    tmp: Path = tmp_path_factory.mktemp("fed-attacks")
    yield from start_idp(f"sqlite:///{tmp / 'idp.db'}", tmp, IDP_FEDERATION_TIMEOUT="2")


@pytest.fixture
def attacker(idp: IdP) -> Iterator[AttackerUpstream]:
    up = AttackerUpstream()
    name = "evil-" + secrets.token_hex(3)
    up.name = name  # type: ignore[attr-defined]
    idp.provider.federation.add(name, issuer=up.issuer, client_id=up.client_id, client_secret="attacker-known")
    yield up
    up.stop()


def refused_reasons(idp: IdP, name: str) -> list[str]:
    return [e["reason"] for e in idp.audit("federation.login_refused") if e["upstream"] == name]


def run_login(idp: IdP, up: AttackerUpstream, http: httpx.Client | None = None) -> tuple[httpx.Response, str]:
    iid = idp.new_interaction()
    http = http or httpx.Client(follow_redirects=True, timeout=30)
    return http.get(f"{idp.url}/login/upstream/{up.name}", params={"interaction": iid}), iid  # type: ignore[attr-defined]


def assert_refused(idp: IdP, up: AttackerUpstream, response: httpx.Response, reason: str, *,
                   status: int = 400, text: str = "") -> None:
    name = up.name  # type: ignore[attr-defined]
    assert response.status_code == status, response.text[:400]
    assert response.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    assert "Traceback" not in response.text and text in response.text
    assert refused_reasons(idp, name)[-1:] == [reason]
    assert not [i for i in idp.identities() if i["issuer"] == up.issuer]  # nobody was logged in


def _set(**changes: Any) -> Forge:
    def forge(claims: dict[str, Any], header: dict[str, Any]) -> None:
        for key, value in changes.items():
            if value is None:
                claims.pop(key, None)
            else:
                claims[key] = value(claims) if callable(value) else value
        return None  # signed with the good key by the attacker server

    return forge


def assert_logged_in(done: httpx.Response, http: httpx.Client | None = None) -> None:
    """The callback handed over to the pages: the person is logged in and sees the consent page
    (after the pages' redirect back to the interaction, when the client does not follow it)."""
    if http is not None and done.status_code == 303 and done.headers["location"].startswith("/interaction/"):
        done = http.get(done.url.join(done.headers["location"]))
    assert done.status_code == 200 and 'action="/consent"' in done.text, done.text[:400]


def test_a_good_token_from_the_attacker_server_logs_in(idp: IdP, attacker: AttackerUpstream) -> None:
    """The control: the attacker server's unforged answer passes, so each refusal below is its forgery."""
    done, _ = run_login(idp, attacker)
    assert_logged_in(done)
    [identity] = [i for i in idp.identities() if i["issuer"] == attacker.issuer]
    assert identity["upstream_subject"] == "mallory" and identity["claims"]["groups"] == ["admins"]
    [request] = attacker.token_requests
    assert request["grant_type"] == ["authorization_code"] and len(request["code_verifier"][0]) == 64


@pytest.mark.parametrize(("forge", "claim"), [
    (_set(nonce="not-the-nonce-we-sent"), "nonce"),
    (_set(nonce=None), "nonce"),
    (_set(aud="another-client"), "aud"),
    (_set(aud=lambda c: [c["aud"], "another-client"]), "azp"),  # a second audience and no azp
    (_set(azp="another-client"), "azp"),
    (_set(iss="https://accounts.google.com"), "iss"),
    (_set(sub=None), "sub"),
    (_set(iat=None), "iat"),
    (_set(exp=None), "exp"),
], ids=["wrong-nonce", "no-nonce", "wrong-aud", "extra-aud-no-azp", "wrong-azp", "other-issuer", "no-sub", "no-iat",
        "no-exp"])
def test_forged_id_token_claims_are_refused(idp: IdP, attacker: AttackerUpstream, forge: Forge, claim: str) -> None:
    attacker.forge = forge
    done, _ = run_login(idp, attacker)
    assert_refused(idp, attacker, done, "invalid_id_token", text="ID token")
    assert claim in done.text


def test_expired_id_token_is_refused(idp: IdP, attacker: AttackerUpstream) -> None:
    now = int(time.time())
    attacker.forge = _set(iat=now - 7200, exp=now - 3600)
    done, _ = run_login(idp, attacker)
    assert_refused(idp, attacker, done, "invalid_id_token", text="expired")


def test_id_token_issued_in_the_future_is_refused(idp: IdP, attacker: AttackerUpstream) -> None:
    now = int(time.time())
    attacker.forge = _set(iat=now + 3600, exp=now + 7200)
    done, _ = run_login(idp, attacker)
    assert_refused(idp, attacker, done, "invalid_id_token", text="ID token")


def test_bad_signature_is_refused(idp: IdP, attacker: AttackerUpstream) -> None:
    other = RSAKey.generate_key(2048, parameters={"kid": "good"})  # the published kid, another key
    attacker.forge = lambda claims, header: attacker.sign(claims, header, other)
    done, _ = run_login(idp, attacker)
    assert_refused(idp, attacker, done, "invalid_id_token", text="signature")


def test_tampered_payload_is_refused(idp: IdP, attacker: AttackerUpstream) -> None:
    def forge(claims: dict[str, Any], header: dict[str, Any]) -> str:
        token = attacker.sign(claims, header)
        head, _, sig = token.split(".")
        body = base64.urlsafe_b64encode(json.dumps({**claims, "sub": "alice"}).encode()).rstrip(b"=").decode()
        return f"{head}.{body}.{sig}"

    attacker.forge = forge
    done, _ = run_login(idp, attacker)
    assert_refused(idp, attacker, done, "invalid_id_token", text="signature")


def test_unknown_kid_refetches_the_jwks_once_then_refuses(idp: IdP, attacker: AttackerUpstream) -> None:
    rogue = RSAKey.generate_key(2048, parameters={"kid": "rotated"})
    attacker.forge = lambda claims, header: attacker.sign(claims, {**header, "kid": "rotated"}, rogue)
    done, _ = run_login(idp, attacker)
    assert_refused(idp, attacker, done, "invalid_id_token", text="signature")
    assert attacker.jwks_fetches == 2  # the cached set, then one refetch for the unknown kid


def test_a_rotated_upstream_key_is_picked_up(idp: IdP, attacker: AttackerUpstream) -> None:
    run_login(idp, attacker)  # JWKS with kid "good" now cached
    attacker.key = RSAKey.generate_key(2048, parameters={"kid": "next"})
    attacker.forge = lambda claims, header: attacker.sign(claims, {**header, "kid": "next"})
    done, _ = run_login(idp, attacker)
    assert_logged_in(done)


def test_alg_none_is_refused(idp: IdP, attacker: AttackerUpstream) -> None:
    def forge(claims: dict[str, Any], header: dict[str, Any]) -> str:
        enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
        return f"{enc({'alg': 'none'})}.{enc(claims)}."

    attacker.forge = forge
    done, _ = run_login(idp, attacker)
    assert_refused(idp, attacker, done, "invalid_id_token", text="signature")


def test_mac_keyed_by_the_client_secret_is_refused(idp: IdP, attacker: AttackerUpstream) -> None:
    """HS256 with the client secret is a valid OIDC option, but anyone holding the upstream's
    configuration could mint such tokens: only the provider's asymmetric keys are trusted."""
    key = OctKey.import_key("attacker-known")
    attacker.forge = lambda claims, header: jwt.encode({"alg": "HS256"}, claims, key)
    done, _ = run_login(idp, attacker)
    assert_refused(idp, attacker, done, "invalid_id_token", text="signature")


def test_userinfo_for_another_person_is_refused(idp: IdP, attacker: AttackerUpstream) -> None:
    attacker.userinfo_sub = "alice"  # the ID token says mallory
    done, _ = run_login(idp, attacker)
    assert_refused(idp, attacker, done, "userinfo_mismatch", status=502, text="another person")


def test_discovery_naming_another_issuer_is_refused(idp: IdP, attacker: AttackerUpstream) -> None:
    attacker.discovery_issuer = "https://accounts.google.com"
    done, _ = run_login(idp, attacker)
    assert_refused(idp, attacker, done, "issuer_mismatch", status=502, text="names another issuer")
    assert not attacker.codes  # the person was never sent there


def test_mix_up_iss_parameter_of_another_provider_is_refused(idp: IdP, attacker: AttackerUpstream) -> None:
    attacker.iss_param = "https://accounts.google.com"  # RFC 9207: the response says it is from elsewhere
    done, _ = run_login(idp, attacker)
    assert_refused(idp, attacker, done, "issuer_mismatch", text="another provider")
    assert not attacker.token_requests  # the code was never redeemed


def test_missing_iss_parameter_is_refused_when_the_provider_promises_it(idp: IdP, attacker: AttackerUpstream) -> None:
    http = httpx.Client(timeout=30)
    iid = idp.new_interaction()
    name = attacker.name  # type: ignore[attr-defined]
    back = follow(http, http.get(f"{idp.url}/login/upstream/{name}", params={"interaction": iid}),
                  until=lambda u: u.path.startswith("/federation/callback/"))
    url = httpx.URL(back.headers["location"])
    params = {k: v for k, v in url.params.items() if k != "iss"}
    done = http.get(url.copy_with(query=None), params=params)
    assert_refused(idp, attacker, done, "issuer_missing")


def test_upstream_error_answer_is_a_clean_page(idp: IdP, attacker: AttackerUpstream) -> None:
    http = httpx.Client(timeout=30)
    iid = idp.new_interaction()
    name = attacker.name  # type: ignore[attr-defined]
    back = follow(http, http.get(f"{idp.url}/login/upstream/{name}", params={"interaction": iid}),
                  until=lambda u: u.path.startswith("/federation/callback/"))
    url = httpx.URL(back.headers["location"])
    done = http.get(url.copy_with(query=None), params={"error": "access_denied", "state": url.params["state"],
                                                        "iss": attacker.issuer})
    assert_refused(idp, attacker, done, "upstream_error", text="cancelled")


def test_token_endpoint_timeout_is_a_clean_page(idp: IdP, attacker: AttackerUpstream) -> None:
    attacker.token_delay = 4  # IDP_FEDERATION_TIMEOUT is 2
    done, _ = run_login(idp, attacker)
    assert_refused(idp, attacker, done, "token_request_failed", status=504)


@pytest.mark.parametrize("answer", [(500, b"<html>oops</html>"), (200, b"not json"), (200, b"[]"),
                                    (400, b'{"error": "invalid_grant"}'), (200, b'{"access_token": "x"}'),
                                    (200, b'{"access_token": "x", "token_type": "Bearer", "id_token": 42}')],
                         ids=["500", "not-json", "array", "invalid-grant", "no-id-token", "id-token-not-string"])
def test_broken_token_endpoint_answers_are_clean_pages(idp: IdP, attacker: AttackerUpstream,
                                                       answer: tuple[int, bytes]) -> None:
    attacker.token_answer = answer
    done, _ = run_login(idp, attacker)
    assert done.status_code == 502, done.text[:300]
    assert refused_reasons(idp, attacker.name)[-1] in ("token_request_failed", "invalid_id_token")  # type: ignore[attr-defined]


# --- callback attacks: state, replay, another browser, another interaction ---------------------

def _callback_url(idp: IdP, up: AttackerUpstream, http: httpx.Client) -> tuple[httpx.URL, str]:
    """Start a login in ``http`` and stop at the upstream's redirect back: the callback URL."""
    iid = idp.new_interaction()
    name = up.name  # type: ignore[attr-defined]
    back = follow(http, http.get(f"{idp.url}/login/upstream/{name}", params={"interaction": iid}),
                  until=lambda u: u.path.startswith("/federation/callback/"))
    return httpx.URL(back.headers["location"]), iid


def test_state_mismatch_is_refused(idp: IdP, attacker: AttackerUpstream) -> None:
    http = httpx.Client(timeout=30)
    url, iid = _callback_url(idp, attacker, http)
    params = dict(url.params)
    for state in (params["state"] + "x", iid + ".guess", "", "no-dot", params["state"].split(".")[1]):
        done = http.get(url.copy_with(query=None), params={**params, "state": state})
        assert done.status_code == 400 and "Traceback" not in done.text
    reasons = refused_reasons(idp, attacker.name)[-5:]  # type: ignore[attr-defined]
    assert reasons == ["state_mismatch"] * 2 + ["missing_state"] * 3
    # The right state still works afterwards: guesses do not burn the login.
    assert_logged_in(http.get(url), http)
    assert not attacker.codes and len(attacker.token_requests) == 1


def test_replayed_callback_is_refused(idp: IdP, attacker: AttackerUpstream) -> None:
    http = httpx.Client(timeout=30)
    url, _ = _callback_url(idp, attacker, http)
    assert_logged_in(http.get(url), http)
    again = http.get(url)
    assert_refused_replay = again.status_code == 400 and "does not belong" in again.text
    assert assert_refused_replay, again.text[:300]
    assert refused_reasons(idp, attacker.name)[-1] == "state_mismatch"  # type: ignore[attr-defined]
    assert len(attacker.token_requests) == 1  # the code was redeemed once


def test_callback_in_another_browser_is_refused(idp: IdP, attacker: AttackerUpstream) -> None:
    """Login CSRF: the attacker starts a login, then sends its callback URL to the victim."""
    mallory, victim = httpx.Client(timeout=30), httpx.Client(timeout=30)
    url, _ = _callback_url(idp, attacker, mallory)
    done = victim.get(url)
    assert_refused(idp, attacker, done, "browser_mismatch", text="another browser")
    victim.get(f"{idp.url}/login/upstream/{attacker.name}", params={"interaction": idp.new_interaction()})  # type: ignore[attr-defined]
    done = victim.get(url)  # with a binding cookie of its own, still not this login's
    assert refused_reasons(idp, attacker.name)[-1] == "browser_mismatch"  # type: ignore[attr-defined]
    assert not attacker.token_requests


def test_callback_for_another_interaction_is_refused(idp: IdP, attacker: AttackerUpstream) -> None:
    http = httpx.Client(timeout=30)
    url_a, _ = _callback_url(idp, attacker, http)
    _, iid_b = _callback_url(idp, attacker, http)
    secret_a = url_a.params["state"].split(".", 1)[1]
    done = http.get(url_a.copy_with(query=None), params={**url_a.params, "state": f"{iid_b}.{secret_a}"})
    assert_refused(idp, attacker, done, "state_mismatch")
    # An interaction the pages created, never started at this upstream.
    fresh = idp.new_interaction()
    done = http.get(url_a.copy_with(query=None), params={**url_a.params, "state": f"{fresh}.{secret_a}"})
    assert_refused(idp, attacker, done, "state_mismatch")


def test_callback_at_another_upstreams_redirect_uri_is_refused(idp: IdP, attacker: AttackerUpstream) -> None:
    other = AttackerUpstream()
    other.name = "evil-other-" + secrets.token_hex(2)  # type: ignore[attr-defined]
    idp.provider.federation.add(other.name, issuer=other.issuer, client_id=other.client_id,  # type: ignore[attr-defined]
                                client_secret="x")
    try:
        http = httpx.Client(timeout=30)
        url, _ = _callback_url(idp, attacker, http)
        moved = url.copy_with(path=f"/federation/callback/{other.name}")  # type: ignore[attr-defined]
        done = http.get(moved)
        assert done.status_code == 400
        assert refused_reasons(idp, other.name)[-1] == "state_mismatch"  # type: ignore[attr-defined]
    finally:
        other.stop()


def test_repeated_parameters_are_refused(idp: IdP, attacker: AttackerUpstream) -> None:
    http = httpx.Client(timeout=30)
    url, _ = _callback_url(idp, attacker, http)
    done = http.get(str(url) + "&code=second")
    assert done.status_code == 400 and refused_reasons(idp, attacker.name)[-1] == "repeated_parameter"  # type: ignore[attr-defined]


def test_expired_login_is_refused(idp: IdP, attacker: AttackerUpstream) -> None:
    http = httpx.Client(timeout=30)
    url, iid = _callback_url(idp, attacker, http)
    data = idp.interaction_data(iid)
    assert data is not None
    data["federation"]["started_at"] -= 3600
    with idp.provider.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE interactions SET data = ? WHERE id = ?", (json.dumps(data), iid))
    done = http.get(url)
    assert_refused(idp, attacker, done, "login_expired", text="too long")


@pytest.mark.skipif(not node_available(), reason="needs node and `npm ci` in tests/idp/upstream_oidc")
def test_replay_and_other_browser_against_node_oidc_provider(idp: IdP) -> None:
    up = NodeUpstream(client_id="cbst-real", client_secret="real-secret", redirect_uris=[idp.callback("real")],
                      log_dir=idp.tmp)
    idp.provider.federation.add("real", issuer=up.issuer, client_id=up.client_id, client_secret=up.client_secret)
    try:
        http = httpx.Client(timeout=30)
        page = follow(http, http.get(f"{idp.url}/login/upstream/real", params={"interaction": idp.new_interaction()}),
                      until=lambda u: False)
        back = None
        for _ in range(6):  # the real login and consent forms, stopping at the redirect back to the IdP
            action, fields = form_of(page)
            if fields.get("prompt") == "login":
                fields.update(login="alice", password="x")
            answer = follow(http, http.post(page.url.join(action), data=fields),
                            until=lambda u: u.path.startswith("/federation/callback/"))
            if answer.status_code in (302, 303):
                back = httpx.URL(answer.headers["location"])
                break
            page = answer
        assert back is not None and back.params["iss"] == up.issuer
        assert httpx.get(back).status_code == 400  # no binding cookie: another browser
        assert refused_reasons(idp, "real")[-1] == "browser_mismatch"
        assert_logged_in(http.get(back), http)
        replay = http.get(back)
        assert replay.status_code == 400 and refused_reasons(idp, "real")[-1] == "state_mismatch"
        assert [i["upstream_subject"] for i in idp.identities() if i["issuer"] == up.issuer] == ["alice"]
    finally:
        up.stop()



def test_concurrent_callbacks_with_one_state_redeem_the_code_once(idp: IdP, attacker: AttackerUpstream) -> None:
    import concurrent.futures

    http = httpx.Client(timeout=30)
    url, _ = _callback_url(idp, attacker, http)
    cookies = dict(http.cookies)

    def hit(_: int) -> int:
        with httpx.Client(timeout=30, cookies=cookies) as c:
            return c.get(url).status_code

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        codes = sorted(pool.map(hit, range(4)))
    assert codes == [303, 400, 400, 400], codes  # one hand-over to the pages (303 to the interaction)
    assert len(attacker.token_requests) == 1


def test_slow_discovery_is_a_clean_page(idp: IdP, attacker: AttackerUpstream) -> None:
    attacker.discovery_delay = 4  # IDP_FEDERATION_TIMEOUT is 2
    done, _ = run_login(idp, attacker)
    assert_refused(idp, attacker, done, "upstream_unavailable", status=504)
    assert not attacker.codes
