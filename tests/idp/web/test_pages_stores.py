"""The stores behind the pages, on SQLite and PostgreSQL: local accounts (argon2id, a hash verified
for unknown users too), remembered consent (a union, also under concurrent approvals), browser
sessions (idle and absolute lifetimes, only hashes stored) and interactions (single use, TTL)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from idp import audit, clock
from idp.consent import ConsentGrants
from idp.provider import Provider
from idp.users import UserError
from idp.web import consent_page
from idp.web.session import hash_id
from sdk.capabilities import CapabilitySet

from .conftest import CATALOGUE, PASSWORD


def test_unknown_users_cost_a_hash_too(web_provider: Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    users = web_provider.users
    calls: list[str] = []
    real = users._hasher

    class Counting:  # PasswordHasher has slots: wrap it rather than patch it
        def verify(self, hashed: str, password: Any) -> bool:
            calls.append(hashed)
            return real.verify(hashed, password)

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    monkeypatch.setattr(users, "_hasher", Counting())
    assert users.authenticate("nobody", PASSWORD) is None
    assert users.authenticate("bad name!", PASSWORD) is None
    assert users.authenticate("alice", "wrong password") is None
    assert users.authenticate("alice", "x" * 5000) is None
    assert users.authenticate("alice", PASSWORD) is not None
    assert len(calls) == 5 and all(h.startswith("$argon2id$") for h in calls)


def test_user_validation(web_provider: Provider) -> None:
    users = web_provider.users
    for name, password, kwargs in [("", PASSWORD, {}), ("a" * 65, PASSWORD, {}), ("a\x00b", PASSWORD, {}),
                                   ("ok", "short", {}), ("ok", "x" * 1025, {}), ("ok", "pass\x00word!", {}),
                                   ("ok", PASSWORD, {"email": "nope"}), ("ok", PASSWORD, {"groups": ["a b"]}),
                                   ("alice", PASSWORD, {})]:
        with pytest.raises(UserError):
            users.add(name, password, **kwargs)
    assert [u.username for u in users.list()] == ["alice"]
    assert users.find("\x00") is None and users.find("x" * 1000) is None


def test_consent_union_under_concurrent_approvals(web_provider: Provider) -> None:
    grants: ConsentGrants = web_provider.consents
    caps = [f"tools/call:t{i}" for i in range(8)]
    barrier = threading.Barrier(len(caps))
    errors: list[BaseException] = []

    def approve(cap: str) -> None:
        try:
            barrier.wait(10)
            with audit.transaction(web_provider.engine) as tx:
                grants.remember(tx, "usr_x", "c", "https://r.test/mcp", CapabilitySet.parse(cap))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=approve, args=(c,)) for c in caps]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert set(map(str, grants.get("usr_x", "c", "https://r.test/mcp"))) == set(caps)
    assert len(grants.list(subject="usr_x")) == 1


def test_session_idle_and_absolute_lifetimes(web_provider: Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    from idp.oauth2.subject import Subject

    sessions = web_provider.web_sessions
    start = clock.now()
    t = [start]
    monkeypatch.setattr(clock, "now", lambda: t[0])
    value, _ = sessions.create(subject=Subject("usr_a"), method="password")
    idle, absolute = web_provider.settings.session_idle_ttl, web_provider.settings.session_absolute_ttl
    # used every half idle period: alive until the absolute lifetime, then dead however active
    while t[0] + idle // 2 < start + absolute:
        t[0] += idle // 2
        assert sessions.get(value) is not None, t[0] - start
    t[0] = start + absolute
    assert sessions.get(value) is None
    # unused for longer than the idle lifetime: dead
    t[0] = start
    value, _ = sessions.create(subject=Subject("usr_b"))
    t[0] = start + idle
    assert sessions.get(value) is None
    # a pre-session lives as long as an interaction
    t[0] = start
    value, pre = sessions.create()
    assert pre.subject is None and pre.expires_at == start + web_provider.settings.interaction_ttl
    # only the hash is the key; malformed cookie values are nobody
    assert pre.id_hash == hash_id(value) and value not in pre.id_hash
    for bad in (None, "", "x", value + "A", value[:-1] + "\x00", "é" * 43):
        assert sessions.get(bad) is None
    assert sessions.prune() >= 0


def test_interactions_expire_and_answer_once(web_provider: Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    interactions = web_provider.interactions
    found = interactions.create({"client_id": "c"})
    assert interactions.get(found.id) is not None
    assert interactions.update_data(found.id, sid="s1") == {"sid": "s1"}
    assert interactions.update_data(found.id, nonce="n") == {"sid": "s1", "nonce": "n"}  # merged, not replaced
    assert interactions.finish(found.id) is True and interactions.finish(found.id) is False
    assert interactions.get(found.id) is None and interactions.update_data(found.id, x=1) is None
    later = interactions.create({"client_id": "c"})
    monkeypatch.setattr(clock, "now", lambda: later.created_at + web_provider.settings.interaction_ttl)
    assert interactions.get(later.id) is None
    assert interactions.prune() == 1
    for bad in ("", "short", "a" * 22 + "\x00", "../../etc/passwd"):
        assert interactions.get(bad) is None


def test_destructive_rules_of_the_catalogue() -> None:
    tools = {t["name"]: t for t in CATALOGUE["tools"]}
    assert consent_page.is_destructive(tools["deploy"])  # no annotations
    assert consent_page.is_destructive(tools["git-push"])
    assert not consent_page.is_destructive(tools["git-status"])  # readOnlyHint
    assert not consent_page.is_destructive(tools["search"])  # destructiveHint false
    assert consent_page.is_destructive({"name": "x", "annotations": {"readOnlyHint": False}})
    assert consent_page.is_destructive({"name": "x", "annotations": "not an object"})
    remembered = CapabilitySet.parse("tools/call:* tools/call:git-push")
    everything = next(iter(CapabilitySet.parse("tools/call:*")))
    items = {i.capability: i for i in consent_page.items_for(everything, CATALOGUE)}
    assert set(items) == {f"tools/call:{n}" for n in tools}
    covered = {c for c, i in items.items() if consent_page.covered_by(i, remembered)}
    assert covered == {"tools/call:git-status", "tools/call:git-log", "tools/call:search", "tools/call:git-push"}
    # a hostile catalogue (wrong types, huge text) still renders as data
    hostile = {"tools": [{"name": 5}, "x", {"name": "t", "description": "<script>" + "a" * 5000,
                                           "annotations": None}], "resources": "nope"}
    [item] = consent_page.items_for(next(iter(CapabilitySet.parse("tools/call:t"))), hostile)
    assert item.destructive and item.description is not None and len(item.description) <= 600
