"""``idp audit``: read the audit log."""

from __future__ import annotations

import json
import re
import time
from typing import Annotated, Optional

import typer
from rich.markup import escape

from .. import audit
from .common import JsonOpt, emit_json, out, provider, when

app = typer.Typer(help="Audit log.", no_args_is_help=True)
GAP_WAIT = 60.0  # seconds a missing id may still be an open transaction
MAX_GAPS = 10000


def _line(row: dict) -> str:  # type: ignore[type-arg]
    # Stored values are data, never console markup (an audience may contain "[/]").
    data = escape(" ".join(f"{k}={v}" for k, v in row["data"].items()))
    who = escape(f" client={row['client_id']}") if row.get("client_id") else ""
    jti = escape(f" jti={row['jti']}") if row.get("jti") else ""
    return (f"[dim]{row['id']:>6} {when(row['ts'])}[/] [bold]{escape(row['event']):<18}[/] "
            f"actor={escape(row['actor'])}{who}{jti} {data}")


@app.command("tail")
def tail(
    lines: Annotated[int, typer.Option("-n", "--lines", min=1, max=10000, help="How many recent records.")] = 20,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new records.")] = False,
    event: Annotated[Optional[str], typer.Option("--event", help="Filter by event, '*' as wildcard (e.g. 'token.*').")] = None,
    client: Annotated[Optional[str], typer.Option("--client", help="Filter by client_id.")] = None,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Polling interval with --follow, seconds.")] = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Show the newest audit records (JSON Lines with --json)."""
    with provider(as_json) as prov:
        rows = audit.tail(prov.engine, limit=lines, event=event, client_id=client)
        last = rows[-1]["id"] if rows else 0
        for row in rows:
            print(json.dumps(row, separators=(",", ":"), default=str), flush=True) if as_json else out.print(_line(row))
        # Ids are allocated at insert but visible at commit: with several IdP processes a record
        # can appear after one with a higher id. Polling all events (filtering here) shows every
        # such hole; a hole is re-read until its record appears or GAP_WAIT says it rolled back.
        wanted = re.compile(re.escape(event).replace(r"\*", ".*")) if event else None
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
                    print(json.dumps(row, separators=(",", ":"), default=str), flush=True) if as_json else out.print(_line(row))
        except KeyboardInterrupt:
            pass


@app.command("prune")
def prune(as_json: JsonOpt = False) -> None:
    """Delete records older than the retention now (the server also does this on its own)."""
    with provider(as_json) as prov:
        n = audit.prune(prov.engine, prov.settings.audit_retention_days)
        days = prov.settings.audit_retention_days
    emit_json({"pruned": n, "retention_days": days}) if as_json else out.print(f"pruned {n} records older than {days} days")
