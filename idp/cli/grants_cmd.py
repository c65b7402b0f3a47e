"""``idp grants``: consent people remembered for clients, and revoking it."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from .common import JsonOpt, emit_json, fail, out, print_table, provider, when

app = typer.Typer(help="List and revoke remembered consent (per subject, client and resource).", no_args_is_help=True)


def _subject(prov: Any, ref: str) -> str:
    """A username names its subject; anything else is taken as a subject id."""
    user = prov.users.find(ref)
    return str(user.subject) if user is not None else ref


@app.command("list")
def list_(
    subject: Annotated[str | None, typer.Option("--subject", help="Only this subject (or local username).")] = None,
    client: Annotated[str | None, typer.Option("--client", help="Only this client_id.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List remembered grants."""
    with provider(as_json) as prov:
        grants = prov.consents.list(subject=_subject(prov, subject) if subject else None, client_id=client)
    if as_json:
        emit_json([g.public_dict() for g in grants])
        return
    if not grants:
        out.print("[dim]no remembered grants[/]")
        return
    print_table(["subject", "client_id", "resource", "capabilities", "updated"],
                [[escape(g.subject), escape(g.client_id), escape(g.resource), escape(g.capabilities.to_scope()),
                  when(g.updated_at)] for g in grants], ids={"subject", "client_id"})


@app.command("revoke")
def revoke(
    subject: Annotated[str, typer.Argument(help="Subject (or local username).")],
    client: Annotated[str, typer.Argument(help="client_id")],
    resource: Annotated[str | None, typer.Argument(help="Only at this resource URI (default: all).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Forget a remembered grant and revoke the tokens issued under it (refresh and access tokens)."""
    with provider(as_json) as prov:
        sub = _subject(prov, subject)
        removed = prov.consents.revoke(sub, client, resource, actor="cli")
        revoked_tokens = prov.token_families.revoke_for(sub, client, resource, reason="grant_revoked", actor="cli")
        if not removed and not revoked_tokens:
            fail(f"no remembered grant of {subject!r} for client {client!r}"
                 + (f" at {resource!r}" if resource else ""), as_json=as_json)
    result = {"subject": sub, "client_id": client, "resources": [g.resource for g in removed],
              "token_families_revoked": revoked_tokens}
    if as_json:
        emit_json(result)
        return
    out.print(f"revoked {len(removed)} remembered grant(s) of [bold]{escape(sub)}[/] for [bold]{escape(client)}[/]"
              + f"; tokens of {revoked_tokens} login(s) revoked")
