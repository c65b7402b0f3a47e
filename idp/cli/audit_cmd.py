"""``idp audit``: read the audit log."""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from sqlalchemy import select

from .. import audit
from ..models import AuditEvent
from .common import JsonOpt, emit_json, fail, out, provider, when

if TYPE_CHECKING:
    from ..provider import Provider

app = typer.Typer(help="Audit log.", no_args_is_help=True)
GAP_WAIT = 60.0  # seconds a missing id may still be an open transaction
MAX_GAPS = 10000


# The events the IdP records (docs/cli.md#audit-events); those found in the database count too.
EVENTS: tuple[str, ...] = ("client.registered", "client.enabled", "client.disabled", "client.removed",
                          "token.issued", "token.revoked", "key.created", "key.retired")
# --- authorization code flow (docs/authorization.md) ---
CODE_FLOW_EVENTS = ("authorization_code.issued", "authorization_code.replayed", "refresh_token.retried",
                    "refresh_token.reused", "token_family.revoked")
EVENTS = (*EVENTS, *CODE_FLOW_EVENTS)
# --- pages: local accounts, sessions, consent (docs/authorization.md#the-pages-login-sessions-and-consent) ---
PAGES_EVENTS = ("user.added", "user.password_changed", "user.removed", "session.login", "session.logout",
                "login.failed", "login.throttled", "consent.granted", "consent.denied", "consent.revoked")
EVENTS = (*EVENTS, *PAGES_EVENTS)
EVENTS += ("resource.registered", "resource.updated", "resource.removed", "resource.catalogue_updated")


def _pattern(event: str) -> re.Pattern[str]:
    return re.compile(re.escape(event).replace(r"\*", ".*"))


def _check_filters(prov: Provider, event: str | None, client: str | None, as_json: bool) -> str | None:
    """Refuse a filter that can match nothing (a typo would otherwise print nothing, silently);
    return the client_id to filter on (``--client`` also takes a registered client's name)."""
    if event is not None:
        with prov.engine.connect() as conn:
            stored = set(conn.execute(select(AuditEvent.__table__.c.event).distinct()).scalars())  # type: ignore[attr-defined]
        valid = sorted(set(EVENTS) | stored)
        if not any(_pattern(event).fullmatch(name) for name in valid):
            fail(f"unknown event {event!r}: the events are {', '.join(valid)} ('*' matches any part, e.g. 'token.*')",
                 as_json=as_json)
    if client is None:
        return None
    found = prov.clients.find(client)
    if found is not None:
        return str(found.client_id)
    if not audit.tail(prov.engine, limit=1, client_id=client):  # a removed client keeps its history
        fail(f"no client {client!r} is registered or in the audit log (see `idp clients list`)", as_json=as_json)
    return client


def _line(row: dict[str, Any]) -> str:
    # Stored values are data, never console markup (an audience may contain "[/]").
    data = escape(" ".join(f"{k}={v}" for k, v in row["data"].items()))
    who = escape(f" client={row['client_id']}") if row.get("client_id") else ""
    jti = escape(f" jti={row['jti']}") if row.get("jti") else ""
    return (f"[dim]{row['id']:>6} {when(row['ts'])}[/] [bold]{escape(row['event']):<18}[/] "
            f"actor={escape(row['actor'])}{who}{jti} {data}")


def _print(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(row, separators=(",", ":"), default=str), flush=True)
    else:
        out.print(_line(row))


@app.command("tail")
def tail(
    lines: Annotated[int, typer.Option("-n", "--lines", min=1, max=10000, help="How many recent records.")] = 20,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new records.")] = False,
    event: Annotated[str | None, typer.Option(
        "--event", help="Filter by event, '*' as wildcard (e.g. 'token.*').")] = None,
    client: Annotated[str | None, typer.Option(
        "--client", help="Filter by client (client_id, or a registered name).")] = None,
    interval: Annotated[float, typer.Option(
        "--interval", min=0.1, help="Polling interval with --follow, seconds.")] = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Show the newest audit records (JSON Lines with --json)."""
    with provider(as_json) as prov:
        client = _check_filters(prov, event, client, as_json)
        rows = audit.tail(prov.engine, limit=lines, event=event, client_id=client)
        last = rows[-1]["id"] if rows else 0
        for row in rows:
            _print(row, as_json)
        if not rows and not follow and not as_json:
            out.print("[dim]no audit records[/]")
        # Ids are allocated at insert but visible at commit: with several IdP processes a record
        # can appear after one with a higher id. Polling all events (filtering here) shows every
        # such hole; a hole is re-read until its record appears or GAP_WAIT says it rolled back.
        wanted = _pattern(event) if event else None
        gaps: dict[int, float] = {}
        try:
            while follow:
                time.sleep(interval)
                fresh = audit.tail(prov.engine, limit=1000, after_id=last)
                late = audit.by_ids(prov.engine, list(gaps)) if gaps else []
                now = time.monotonic()
                for row in fresh:
                    for missing in range(last + 1, min(row["id"], last + 1 + MAX_GAPS)):
                        gaps[missing] = now + GAP_WAIT
                    last = row["id"]
                for row in late:
                    gaps.pop(row["id"], None)
                gaps = {i: until for i, until in gaps.items() if until > now}
                for row in sorted(late + fresh, key=lambda r: r["id"]):
                    if (wanted and not wanted.fullmatch(row["event"])) or (client and row["client_id"] != client):
                        continue
                    _print(row, as_json)
        except KeyboardInterrupt:
            pass


@app.command("prune")
def prune(as_json: JsonOpt = False) -> None:
    """Delete records older than the retention now (the server also does this on its own)."""
    with provider(as_json) as prov:
        n = audit.prune(prov.engine, prov.settings.audit_retention_days)
        days = prov.settings.audit_retention_days
    if as_json:
        emit_json({"pruned": n, "retention_days": days})
    else:
        out.print(f"pruned {n} records older than {days} days")
