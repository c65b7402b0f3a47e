"""Identity mapping and the registry's validation, on SQLite and PostgreSQL."""

from __future__ import annotations

import concurrent.futures
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from federation_testing import NodeUpstream, node_available

from idp.federation.identities import FederatedIdentities, mapped_claims
from idp.federation.upstreams import UpstreamError, validate_issuer, validate_scopes
from idp.provider import Provider


def test_same_pair_same_subject_other_pair_other_subject(provider: Provider) -> None:
    ids = FederatedIdentities(provider.engine)
    first = ids.link("https://a.example", "alice", {"email": "a@x"}, upstream="a")
    again = ids.link("https://a.example", "alice", {"email": "new@x"}, upstream="a")
    other_issuer = ids.link("https://b.example", "alice", {"email": "a@x"}, upstream="b")
    assert first.created and not again.created and first.subject == again.subject
    assert other_issuer.subject != first.subject
    assert ids.lookup("https://a.example", "alice") == (first.subject, {"email": "new@x"})


def test_concurrent_first_logins_of_one_person_get_one_subject(provider: Provider) -> None:
    ids = FederatedIdentities(provider.engine)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        links = list(pool.map(lambda i: ids.link("https://a.example", "bob", {"name": f"b{i}"}, upstream="a"),
                              range(8)))
    assert len({link.subject for link in links}) == 1
    assert sum(link.created for link in links) == 1
    with provider.engine.connect() as conn:
        linked = conn.execute(sa.text("SELECT count(*) FROM audit_events WHERE event = 'federation.identity_linked'"))
        assert linked.scalar() == 1


def test_mapped_claims_keep_only_bounded_known_claims() -> None:
    claims = mapped_claims({"email": "a@x", "email_verified": True, "name": "A", "groups": ["ops", 3, "", "x" * 600],
                            "is_admin": True, "iss": "https://evil", "preferred_username": ["not", "a", "string"]})
    assert claims == {"email": "a@x", "email_verified": True, "name": "A", "groups": ["ops"]}
    assert mapped_claims({"groups": "ops"}) == {"groups": ["ops"]}
    assert len(mapped_claims({"groups": [f"g{i}" for i in range(1000)]})["groups"]) == 256
    assert mapped_claims({"email": "x" * 513, "email_verified": "yes"}) == {}


def test_issuer_and_scope_validation() -> None:
    assert validate_issuer("https://login.microsoftonline.com/t/v2.0") == "https://login.microsoftonline.com/t/v2.0"
    assert validate_issuer("https://tenant.auth0.com/") == "https://tenant.auth0.com/"
    assert validate_issuer("http://127.0.0.1:4000")
    for bad in ("http://idp.example", "https://", "https://a.example?x", "javascript:alert(1)", "https://a\x00b",
                "x" * 600):
        with pytest.raises(UpstreamError):
            validate_issuer(bad)
    assert validate_scopes(["email profile", "email"]) == ("openid", "email", "profile")
    assert validate_scopes(None) == ("openid", "email", "profile")
    with pytest.raises(UpstreamError):
        validate_scopes(["a\\b"])


def test_the_test_upstream_stops_when_its_parent_goes_away(tmp_path: Path) -> None:
    """The node-oidc-provider fixture must not outlive a test run that died: it exits on the
    end of its stdin pipe (and on the parent's death signal, PR_SET_PDEATHSIG)."""
    if not node_available():
        pytest.skip("needs node and `npm ci` in tests/idp/upstream_oidc")
    up = NodeUpstream(client_id="c", client_secret="s", redirect_uris=["http://127.0.0.1:9/cb"], log_dir=tmp_path)
    assert up.proc.stdin is not None
    up.proc.stdin.close()  # what the kernel does when the test process dies
    try:
        assert up.proc.wait(15) == 0
    except subprocess.TimeoutExpired:
        up.stop()
        raise
    up.stop()
