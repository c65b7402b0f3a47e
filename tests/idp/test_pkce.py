"""PKCE (RFC 7636), S256 only: the module's checks, and the attacks through the real app."""

from __future__ import annotations

import pytest
from codeflow_testing import ensure_resource, get_code, new_verifier, params, parse, redeem, register_interactive
from test_token_endpoint import Env, assert_oauth_error, env  # noqa: F401 - env is a fixture

from idp.oauth2 import pkce
from idp.oauth2.authorization_request import AuthorizationError

# RFC 7636 Appendix B.
RFC_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_rfc7636_appendix_b_vector() -> None:
    assert pkce.s256(RFC_VERIFIER) == RFC_CHALLENGE
    assert pkce.verify(RFC_VERIFIER, RFC_CHALLENGE)
    assert not pkce.verify(RFC_VERIFIER[:-1] + "l", RFC_CHALLENGE)


@pytest.mark.parametrize("verifier", [
    "a" * 42, "a" * 129, "a" * 42 + " ", "a" * 42 + "+", "a" * 42 + "=", "a" * 42 + "\u00e9", None, "",
])
def test_rfc7636_4_1_verifier_must_be_43_to_128_unreserved_characters(verifier: str | None) -> None:
    challenge = pkce.s256("a" * 43)
    assert not pkce.verify(verifier, challenge)


def test_rfc7636_4_1_verifier_bounds_are_inclusive() -> None:
    for n in (43, 128):
        v = ("A-._~z9" * 20)[:n]
        assert pkce.verify(v, pkce.s256(v))


@pytest.mark.parametrize(("challenge", "method", "message"), [
    (None, "S256", "required"),
    (RFC_CHALLENGE, None, "S256"),  # §4.3: a missing method means plain
    (RFC_CHALLENGE, "plain", "S256"),
    (RFC_CHALLENGE, "s256", "S256"),
    (RFC_VERIFIER, "plain", "S256"),
    ("short", "S256", "43-character"),
    (RFC_CHALLENGE + "=", "S256", "43-character"),
    (RFC_CHALLENGE[:-1] + "+", "S256", "43-character"),
])
def test_rfc7636_4_3_only_s256_challenges_are_accepted(challenge: str | None, method: str | None,
                                                        message: str) -> None:
    with pytest.raises(pkce.PKCEError, match=message):
        pkce.validate_challenge(challenge, method)


def test_rfc7636_4_4_1_missing_or_plain_challenge_is_refused_at_authorize(env: Env) -> None:
    ensure_resource(env)
    client, _ = register_interactive(env)
    for change in ({"code_challenge": None, "code_challenge_method": None}, {"code_challenge_method": "plain"}):
        p = params(client, verifier=RFC_VERIFIER)
        for k, v in change.items():
            if v is None:
                p.pop(k)
            else:
                p[k] = [v]
        if change.get("code_challenge_method") == "plain":
            p["code_challenge"] = [RFC_VERIFIER]
        with pytest.raises(AuthorizationError) as exc:
            parse(env, p)
        assert exc.value.error == "invalid_request"


def test_rfc7636_4_6_wrong_verifier_is_invalid_grant(env: Env) -> None:
    ensure_resource(env)
    client, _ = register_interactive(env)
    code, verifier, _ = get_code(env, client)
    assert_oauth_error(redeem(env, client, code, new_verifier()), 400, "invalid_grant")
    # The challenge itself is not a verifier (an attacker who saw the authorization request).
    assert_oauth_error(redeem(env, client, code, pkce.s256(verifier)), 400, "invalid_grant")
    assert redeem(env, client, code, verifier).status_code == 200
