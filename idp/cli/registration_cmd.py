"""``idp registration``: initial access tokens for the ``initial-access-token`` registration policy.

RFC 7591 §3: with ``registration_policy = "initial-access-token"``, ``POST /register`` needs
``Authorization: Bearer <token>``. A token is shown once, at creation; only its hash is kept.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

import typer
from rich.markup import escape

from .. import clock
from ..clients import ClientError
from .common import JsonOpt, emit_json, fail, out, print_table, provider, when

app = typer.Typer(help="Dynamic client registration (RFC 7591): initial access tokens.", no_args_is_help=True)
tokens = typer.Typer(help="Initial access tokens (RFC 7591 section 3).", no_args_is_help=True)
app.add_typer(tokens, name="tokens")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_expiry(value: str) -> int:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` from now, or an ISO 8601 date/time (UTC unless given)."""
    match = re.fullmatch(r"(\d+)([smhdw])", value.strip())
    if match:
        return clock.now() + int(match.group(1)) * _UNITS[match.group(2)]
    try:
        moment = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"--expires {value!r}: use a duration (30m, 12h, 7d) or an ISO 8601 date") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp())


@tokens.command("create")
def create(
    uses: Annotated[int | None, typer.Option("--uses", help="How many registrations it permits (default: any).",
                                             min=1)] = None,
    expires: Annotated[str | None, typer.Option("--expires", help="Expiry: 30m, 12h, 7d or an ISO 8601 date.")] = None,
    label: Annotated[str, typer.Option("--label", help="What it is for (shown in list and audit).")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Create an initial access token and print it (once)."""
    try:
        expires_at = parse_expiry(expires) if expires else None
    except ValueError as exc:
        fail(str(exc), as_json=as_json)
    with provider(as_json) as prov:
        try:
            info, token = prov.dynamic_clients.initial_tokens.create(label=label, uses=uses, expires_at=expires_at)
        except ClientError as exc:
            fail(str(exc), as_json=as_json)
        policy = prov.settings.registration_policy
    if as_json:
        emit_json({**info.public_dict(), "token": token})
        return
    out.print(f"initial access token [bold]{info.id}[/]: [yellow]{token}[/]")
    out.print("[dim]Shown only now; it is stored hashed. Clients send it as Authorization: Bearer ... "
              "to POST /register.[/]")
    if policy != "initial-access-token":
        out.print(f"[yellow]warning:[/] registration_policy is {policy!r}: the token is not required now.")


@tokens.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List initial access tokens (ids, labels, uses left, expiry; never the tokens)."""
    with provider(as_json) as prov:
        items = prov.dynamic_clients.initial_tokens.list()
    if as_json:
        emit_json([t.public_dict() for t in items])
        return
    if not items:
        out.print("[dim]no initial access tokens[/]")
        return
    now = clock.now()
    print_table(["id", "label", "uses left", "created", "expires"],
                [[t.id, escape(t.label), "any" if t.uses_left is None else str(t.uses_left), when(t.created_at),
                  when(t.expires_at) + (" [red](expired)[/]" if t.expires_at and t.expires_at <= now else "")]
                 for t in items], ids={"id"})


@tokens.command("revoke")
def revoke(token_id: Annotated[str, typer.Argument(help="The token's id (from list).")],
           as_json: JsonOpt = False) -> None:
    """Revoke an initial access token (clients registered with it stay)."""
    with provider(as_json) as prov:
        try:
            info = prov.dynamic_clients.initial_tokens.revoke(token_id)
        except ClientError as exc:
            fail(str(exc), as_json=as_json)
    emit_json({"revoked": info.id}) if as_json else out.print(f"revoked initial access token [bold]{info.id}[/]")
