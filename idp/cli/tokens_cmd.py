"""``idp tokens``: revoke issued tokens."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import audit
from .common import JsonOpt, emit_json, fail, out, provider

app = typer.Typer(help="Issued tokens.", no_args_is_help=True)


@app.command("revoke")
def revoke(jti: Annotated[str, typer.Argument(help="The token's jti (see `idp audit tail`).")],
           as_json: JsonOpt = False) -> None:
    """Revoke a token by its jti: introspection reports it inactive from now on."""
    if not jti or len(jti) > 64:
        fail("a jti is 1-64 characters", as_json=as_json)
    with provider(as_json) as prov:
        issued = audit.find_issuance(prov.engine, jti)
        if issued is None:
            fail(f"no token with jti {jti!r} was issued here (or its audit record is past retention)", as_json=as_json)
        new = prov.revocations.revoke(jti, client_id=issued["client_id"], expires_at=issued["data"]["exp"], actor="cli")
    result = {"jti": jti, "client_id": issued["client_id"], "revoked": True, "already_revoked": not new}
    if as_json:
        emit_json(result)
    else:
        out.print(f"token {jti} {'was already revoked' if not new else 'revoked'} (client {issued['client_id']})")
