"""Audit log: a database record and a JSON log line for every client registration, token issuance,
revocation and key event; retention pruning; ``idp audit tail``."""

from __future__ import annotations

import json
import logging
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from idp.config import Settings
from idp.logs import JsonFormatter
from idp.provider import Provider

from idp_testing import AUDIENCE, ROOT, env_for, register, run_cli


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def objects(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def audit_log() -> Iterator[Lines]:
    """The JSON lines logger ``cbst.audit`` writes (attached directly: independent of propagation)."""
    handler = Lines()
    logger = logging.getLogger("cbst.audit")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def rows(prov: Provider, where: str = "1=1", **params: Any) -> list[dict[str, Any]]:
    with prov.engine.connect() as conn:
        result = conn.execute(sa.text(f"SELECT * FROM audit_events WHERE {where} ORDER BY id"), params)
        out = [dict(r._mapping) for r in result]
    for r in out:
        r["data"] = json.loads(r["data"])
    return out


def token_for(http: Any, client_id: str, secret: str, **form: str) -> str:
    resp = http.post("/token", data={"grant_type": "client_credentials", **form}, auth=(client_id, secret))
    assert resp.status_code == 200, resp.text
    return resp.json()["access_token"]


def claims_of(token: str) -> dict[str, Any]:
    from sdk.jws import b64url_decode

    return json.loads(b64url_decode(token.split(".")[1]))


def test_every_security_event_has_an_audit_record_and_a_json_log_line(provider: Provider, http: Any,
                                                                       audit_log: Lines) -> None:
    before = len(rows(provider))  # the initial key's creation
    client, secret = register(provider, "auditee", capabilities="tools/call:* prompts/get:summarize",
                              audiences=(AUDIENCE, "https://other.example/mcp"))
    tokens = [token_for(http, client.client_id, secret, scope="tools/call:git-*", resource=AUDIENCE)
              for _ in range(3)]
    revoked = tokens[0]
    assert http.post("/revoke", data={"token": revoked}, auth=(client.client_id, secret)).status_code == 200
    provider.revocations.revoke(claims_of(tokens[1])["jti"], client_id=client.client_id,
                                expires_at=claims_of(tokens[1])["exp"], actor="cli")
    new_key = provider.keys.rotate(actor="cli", immediate=True)
    old_kid = next(k.kid for k in provider.keys.list() if k.kid != new_key.kid)
    provider.keys.retire(old_kid, actor="cli")
    provider.clients.set_enabled(client.client_id, False)
    # Refused requests are not issuances.
    assert http.post("/token", data={"grant_type": "client_credentials"},
                     auth=(client.client_id, secret)).status_code == 401

    records = rows(provider)[before:]
    events = [r["event"] for r in records]
    # The client's two audiences become registered resources in the same transaction.
    assert events == ["client.registered", "resource.registered", "resource.registered",
                      "token.issued", "token.issued", "token.issued", "token.revoked",
                      "token.revoked", "key.created", "key.retired",
                      "token.revoked", "client.disabled"]  # disabling revokes the third, still-valid token
    reg = records[0]
    assert reg["client_id"] == client.client_id
    assert reg["data"]["name"] == "auditee"
    assert reg["data"]["capabilities"] == client.capabilities.to_scope()
    assert reg["data"]["audiences"] == [AUDIENCE, "https://other.example/mcp"]
    for tok, rec in zip(tokens, records[1:4], strict=True):
        cl = claims_of(tok)
        assert rec["jti"] == cl["jti"] and rec["client_id"] == client.client_id == cl["client_id"]
        assert rec["data"]["scope"] == cl["scope"] == "tools/call:git-*"
        assert rec["data"]["aud"] == cl["aud"] == AUDIENCE
        assert rec["data"]["exp"] == cl["exp"] and rec["ts"] == cl["iat"]
    assert [r["jti"] for r in records[4:6]] == [claims_of(tokens[0])["jti"], claims_of(tokens[1])["jti"]]
    assert [r["actor"] for r in records[4:6]] == [client.client_id, "cli"]
    assert records[6]["data"]["kid"] == new_key.kid and records[6]["actor"] == "cli"
    assert records[7]["data"]["kid"] == old_kid

    # One JSON log line per record, carrying the same facts.
    logged = [o for o in audit_log.objects() if o.get("logger") == "cbst.audit"]
    assert [o["msg"] for o in logged] == events
    for obj, rec in zip(logged, records, strict=True):
        audit = obj["audit"]
        assert audit["event"] == rec["event"] and audit["ts"] == rec["ts"] and audit["actor"] == rec["actor"]
        assert audit.get("client_id") == rec["client_id"] and audit.get("jti") == rec["jti"]
        assert audit["data"] == rec["data"]
    # Neither the client secret nor a whole token is ever written to the audit log.
    everything = json.dumps(rows(provider), default=str) + "\n".join(audit_log.lines)
    assert secret not in everything
    assert not any(tok.split(".")[2] in everything for tok in tokens)
    # Revoking again is idempotent: no second record.
    provider.revocations.revoke(claims_of(tokens[1])["jti"], client_id=client.client_id,
                                expires_at=claims_of(tokens[1])["exp"], actor="cli")
    assert len(rows(provider, "event = 'token.revoked'")) == 3  # two revoked, one by disabling the client


def test_retention_pruning_deletes_only_records_older_than_audit_retention_days(settings: Settings) -> None:
    assert Settings().audit_retention_days == 30
    now = int(time.time())
    day = 86400
    prov = Provider.open(settings)
    try:
        with prov.engine.begin() as conn:
            for age in (31, 30.5, 29, 8, 6, 0):
                conn.execute(sa.text("INSERT INTO audit_events (ts, event, actor, data) VALUES (:ts, :e, 'test', '{}')"),
                             {"ts": int(now - age * day), "e": f"age.{age}"})
        events = prov.maintain()
        assert "pruned 2 audit records" in events
        assert [r["event"] for r in rows(prov, "event LIKE 'age.%'")] == ["age.29", "age.8", "age.6", "age.0"]
    finally:
        prov.close()
    seven = Provider.open(settings.model_copy(update={"audit_retention_days": 7}))
    try:
        assert "pruned 2 audit records" in seven.maintain()
        assert [r["event"] for r in rows(seven, "event LIKE 'age.%'")] == ["age.6", "age.0"]
        assert seven.maintain() == []  # nothing left to prune
    finally:
        seven.close()


@pytest.mark.slow
def test_audit_tail_cli_lines_json_event_filter_and_follow(settings: Settings, provider: Provider, http: Any) -> None:
    env = env_for(settings)
    client, secret = register(provider, "tailer")
    jtis = [claims_of(token_for(http, client.client_id, secret))["jti"] for _ in range(3)]

    res = run_cli("audit", "tail", "-n", "2", "--json", env=env)
    assert res.returncode == 0, res.stderr
    got = [json.loads(line) for line in res.stdout.splitlines()]
    assert [g["jti"] for g in got] == jtis[1:]  # the newest two, oldest first

    res = run_cli("audit", "tail", "--json", "--event", "client.*", env=env)
    got = [json.loads(line) for line in res.stdout.splitlines()]
    assert [g["event"] for g in got] == ["client.registered"] and got[0]["client_id"] == client.client_id

    res = run_cli("audit", "tail", "-n", "50", env=env)
    assert res.returncode == 0 and "token.issued" in res.stdout and jtis[0] in res.stdout
    assert "key.created" in res.stdout

    res = run_cli("audit", "prune", "--json", env=env)
    assert res.returncode == 0 and json.loads(res.stdout) == {"pruned": 0, "retention_days": 30}

    res = run_cli("audit", "tail", "-n", "0", env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr

    proc = subprocess.Popen(
        [sys.executable, "-m", "idp.cli", "audit", "tail", "--follow", "--json", "--event", "token.*", "-n", "1",
         "--interval", "0.2"],
        env={**__import__("os").environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        first = json.loads(lines.get(timeout=30))
        assert first["jti"] == jtis[-1]
        new_jti = claims_of(token_for(http, client.client_id, secret))["jti"]
        provider.clients.set_enabled(client.client_id, False)  # client.* filtered out; its token.revoked shown
        provider.clients.set_enabled(client.client_id, True)
        nxt = json.loads(lines.get(timeout=30))
        assert nxt["event"] == "token.issued" and nxt["jti"] == new_jti and nxt["client_id"] == client.client_id
        revoked = []
        while True:
            try:
                revoked.append(json.loads(lines.get(timeout=2)))
            except queue.Empty:
                break
        assert revoked and {r["event"] for r in revoked} == {"token.revoked"}
        assert new_jti in {r["jti"] for r in revoked}
        assert proc.poll() is None  # still following
    finally:
        proc.terminate()
        proc.wait(10)
    assert "Traceback" not in proc.stderr.read()  # type: ignore[union-attr]


@pytest.mark.slow
def test_cli_changes_also_write_a_json_audit_log_line(settings: Settings, provider: Provider, http: Any) -> None:
    """Registrations, rotations and revocations are mostly made with the CLI: with ``idp --verbose``
    their audit records reach the JSON log too (on the CLI's stderr), not only the database.
    (Without it a command prints no log records: tests/idp/test_cli.py.)"""
    env = {**env_for(settings), "IDP_LOG_LEVEL": "info"}

    def audit_lines(res: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
        assert res.returncode == 0, res.stderr
        objs = [json.loads(x) for x in res.stderr.splitlines() if x.startswith("{")]
        return [o for o in objs if o.get("logger") == "cbst.audit"]

    res = run_cli("--verbose", "clients", "add", "logged", "--capabilities", "tools/call:*", "--audience", AUDIENCE, "--json", env=env)
    added = json.loads(res.stdout)  # stdout stays a clean JSON document
    (line,) = audit_lines(res)
    assert line["msg"] == "client.registered" and line["audit"]["client_id"] == added["client_id"]
    assert added["client_secret"] not in res.stderr

    res = run_cli("--verbose", "keys", "rotate", "--json", env=env)
    (line,) = audit_lines(res)
    assert line["msg"] == "key.created" and line["audit"]["data"]["kid"] == json.loads(res.stdout)["kid"]

    jti = claims_of(token_for(http, added["client_id"], added["client_secret"]))["jti"]
    res = run_cli("--verbose", "tokens", "revoke", jti, env=env)
    (line,) = audit_lines(res)
    assert line["msg"] == "token.revoked" and line["audit"]["jti"] == jti

    quiet = run_cli("--verbose", "clients", "disable", "logged", env={**env, "IDP_LOG_LEVEL": "warning"})
    assert quiet.returncode == 0 and quiet.stderr == ""


@pytest.mark.slow
def test_audit_tail_follow_does_not_skip_a_record_that_commits_late(settings: Settings, provider: Provider) -> None:
    """With several IdP processes, ids are allocated at insert but become visible at commit, so
    a record can appear after one with a higher id; --follow must still print it."""
    env = env_for(settings)
    proc = subprocess.Popen(
        [sys.executable, "-m", "idp.cli", "audit", "tail", "--follow", "--json", "-n", "1", "--interval", "0.2"],
        env={**__import__("os").environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    insert = sa.text("INSERT INTO audit_events (ts, event, actor, data) VALUES (:ts, :e, 'test', '{}')")
    printed: list[str] = []

    def read_until(wanted: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not wanted <= set(printed) and time.monotonic() < deadline:
            try:
                printed.append(json.loads(lines.get(timeout=0.5))["event"])
            except queue.Empty:
                pass

    try:
        assert json.loads(lines.get(timeout=30))["event"] == "key.created"  # the newest existing record
        with provider.engine.connect() as slow:
            slow_tx = slow.begin()
            slow.execute(insert, {"ts": int(time.time()), "e": "test.late"})  # the lower id, not committed yet
            if provider.engine.dialect.name == "sqlite":
                slow_tx.commit()  # SQLite has one writer at a time: commits come in id order anyway
            with provider.engine.begin() as conn:
                conn.execute(insert, {"ts": int(time.time()), "e": "test.early"})
            read_until({"test.early"}, 30)
            time.sleep(0.6)  # a few polls pass while the lower id is still invisible
            if slow_tx.is_active:
                slow_tx.commit()
        read_until({"test.early", "test.late"}, 10)
        assert sorted(printed) == ["test.early", "test.late"], printed
    finally:
        proc.terminate()
        proc.wait(10)
