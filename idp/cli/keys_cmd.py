"""``idp keys``: signing keys — list, rotate, retire."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from .. import clock
from ..signing_keys import KeyError_
from .common import JsonOpt, emit_json, fail, out, print_table, provider, when

if TYPE_CHECKING:
    from ..provider import Provider

app = typer.Typer(help="Signing keys.", no_args_is_help=True)


def _rows(prov: Provider) -> list[dict[str, Any]]:
    now = clock.now()
    infos = prov.keys.list()
    live = [i for i in infos if i.retired_at is None]
    signer = prov.keys._signer_info(live, now)
    rows = []
    for i in infos:
        rows.append({
            "kid": i.kid, "alg": i.alg, "state": i.state(now, signer.kid if signer else None),
            "created_at": i.created_at, "activate_at": i.activate_at, "retired_at": i.retired_at,
            "retires_at": prov.keys.retire_due(i, live, now) if i.retired_at is None else None,
        })
    return rows


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List keys with their state: pending, active, superseded (still published) or retired."""
    with provider(as_json, initial_key=True) as prov:
        rows = _rows(prov)
    if as_json:
        emit_json(rows)
        return
    colours = {"active": "green", "pending": "yellow", "superseded": "cyan", "retired": "dim"}
    print_table(["kid", "alg", "state", "created", "signs from", "leaves JWKS"],
                [[escape(r["kid"]), r["alg"], f"[{colours[r['state']]}]{r['state']}[/]", when(r["created_at"]),
                  when(r["activate_at"]), when(r["retired_at"] or r["retires_at"])] for r in rows], ids={"kid"})


@app.command("rotate")
def rotate(
    now: Annotated[bool, typer.Option("--now", help="Sign with the new key at once, skipping pre-publication "
                                      "(verifiers with a cached JWKS refetch on the unknown kid).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a new signing key: published at once, signing after the pre-publication interval."""
    with provider(as_json, initial_key=True) as prov:
        info = prov.keys.rotate(actor="cli", immediate=now)
        result = {"kid": info.kid, "alg": info.alg, "activate_at": info.activate_at}
    if as_json:
        emit_json(result)
    else:
        out.print(f"new key [bold]{info.kid}[/] ({info.alg}) published; signs from {when(info.activate_at)}")


@app.command("retire")
def retire(kid: Annotated[str, typer.Argument(help="Key id.")], as_json: JsonOpt = False) -> None:
    """Retire a key now: it leaves the JWKS (its tokens stop verifying) and its private key is destroyed."""
    with provider(as_json, initial_key=True) as prov:
        try:
            info = prov.keys.retire(kid, actor="cli")
        except KeyError_ as exc:
            fail(str(exc), as_json=as_json)
    emit_json({"kid": info.kid, "retired_at": info.retired_at}) if as_json else out.print(f"key [bold]{kid}[/] retired")
