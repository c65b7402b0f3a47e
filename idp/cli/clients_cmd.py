"""``idp clients``: register and manage OAuth clients."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from sdk.capabilities import CapabilityError, CapabilitySet, capability_warnings

from ..clients import AUTH_METHODS, ClientError, ClientRecord
from ..oauth2.client import CLIENT, RESOURCE_SERVER
from .common import JsonOpt, emit_json, err, fail, out, print_table, provider, when

app = typer.Typer(help="Register and manage clients.", no_args_is_help=True)
Ref = Annotated[str, typer.Argument(help="client_id or name")]


def check_capabilities(capabilities: str, as_json: bool) -> None:
    """Refuse methods MCP does not have (a typo would be stored as a capability that allows
    nothing) with a "did you mean"; warn on commas, which do not separate capabilities."""
    try:
        caps = CapabilitySet.parse(capabilities, strict=True)
    except CapabilityError as exc:
        fail(str(exc), as_json=as_json)
    for warning in capability_warnings(caps):
        err.print(f"[yellow]warning:[/] {escape(warning)}")


def _show(client: ClientRecord, secret: str | None = None) -> None:
    rows = []
    for key, value in client.public_dict().items():
        if key in ("created_at", "updated_at"):
            value = when(value)
        rows.append([f"[bold]{key}[/]", escape(", ".join(value) if isinstance(value, list) else str(value))])
    table = Table(show_header=False, box=None)
    table.add_column(no_wrap=True)
    # Wide enough for the client_id and the secret (never cut); longer values fold.
    table.add_column(overflow="fold", min_width=max(len(client.client_id), len(secret or "")))
    for row in rows:
        table.add_row(*row)
    if secret:
        table.add_row("[bold]client_secret[/]", f"[yellow]{secret}[/]")
    out.print(table)


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Unique client name.")],
    capabilities: Annotated[str, typer.Option(
        "--capabilities", help='Space-separated, e.g. "tools/call:* resources/read:file:///docs/**". Required for '
        "client credentials; for an interactive client it is a ceiling (omit it: policy and consent decide).")] = "",
    audience: Annotated[list[str] | None, typer.Option(
        "--audience", help="Resource URI the client may get tokens for (repeatable).")] = None,
    auth: Annotated[str, typer.Option(
        "--auth", help=f"Authentication method: {', '.join(AUTH_METHODS)}.")] = "client_secret_basic",
    jwks: Annotated[Path | None, typer.Option(
        "--jwks", help="JWKS file with the client's public keys (private_key_jwt).", dir_okay=False)] = None,
    resource_server: Annotated[bool, typer.Option(
        "--resource-server",
        help="The client of a protected resource: it may introspect tokens for its --audience URIs.")] = False,
    redirect_uri: Annotated[list[str] | None, typer.Option(
        "--redirect-uri", help="Redirect URI of an interactive client (repeatable): https, a loopback http URI "
        "(any port matches) or a private-use scheme like com.example.app:/cb.")] = None,
    public: Annotated[bool, typer.Option(
        "--public", help="A public client (auth none: no secret; PKCE protects its codes), e.g. a desktop app.",
    )] = False,
    grant_type: Annotated[list[str] | None, typer.Option(
        "--grant-type", help="Grant the client may use (repeatable): client_credentials, authorization_code, "
        "refresh_token. Default: authorization_code with --redirect-uri, else client_credentials.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a client and print its client_id (and, once, its generated secret)."""
    if not capabilities and not redirect_uri:  # a usage error (exit 2), before any database is opened
        raise typer.BadParameter("required unless the client is interactive (--redirect-uri)",
                                 param_hint="--capabilities")
    if public:
        if auth not in ("client_secret_basic", "none"):
            fail("--public is auth none; do not combine it with --auth", as_json=as_json)
        auth = "none"
    jwks_doc = None
    if jwks is not None:
        try:
            jwks_doc = json.loads(jwks.read_text())
        except (OSError, ValueError) as exc:
            fail(f"cannot read JWKS {jwks}: {exc}", as_json=as_json)
    check_capabilities(capabilities, as_json)
    with provider(as_json) as prov:
        try:
            client, secret = prov.clients.add(name, capabilities=capabilities, audiences=audience or [],
                                              auth_method=auth, jwks=jwks_doc,
                                              kind=RESOURCE_SERVER if resource_server else CLIENT,
                                              redirect_uris=redirect_uri or [], grant_types=grant_type)
        except ClientError as exc:
            fail(str(exc), as_json=as_json)
    if as_json:
        emit_json({**client.public_dict(), **({"client_secret": secret} if secret else {})})
        return
    _show(client, secret)
    if secret:
        out.print("[dim]The secret is shown only now; it is stored hashed.[/]")
    if not client.audiences and "client_credentials" in client.grant_types:
        out.print("[yellow]warning:[/] no --audience: this client cannot get tokens until it has one."
                  + (" A resource server introspects only tokens for its audiences." if resource_server else ""))


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List clients."""
    with provider(as_json) as prov:
        clients = prov.clients.list()
    if as_json:
        emit_json([c.public_dict() for c in clients])
        return
    if not clients:
        out.print("[dim]no clients[/]")
        return
    print_table(["name", "client_id", "kind", "auth", "enabled", "grants", "capabilities", "audiences",
                 "redirect_uris"],
                [[escape(c.name), escape(c.client_id), c.kind, c.auth_method, "yes" if c.enabled else "[red]no[/]",
                  " ".join(c.grant_types), escape(c.capabilities.to_scope()), escape(" ".join(c.audiences)),
                  escape(" ".join(c.redirect_uris))] for c in clients],
                ids={"name", "client_id"})


@app.command("show")
def show(ref: Ref, as_json: JsonOpt = False) -> None:
    """Show one client."""
    with provider(as_json) as prov:
        client = prov.clients.find(ref)
    if client is None:
        fail(f"no client {ref!r}", as_json=as_json)
    emit_json(client.public_dict()) if as_json else _show(client)


def _set_enabled(ref: str, enabled: bool, as_json: bool) -> None:
    with provider(as_json) as prov:
        try:
            client = prov.clients.set_enabled(ref, enabled)
        except ClientError as exc:
            fail(str(exc), as_json=as_json)
    if as_json:
        emit_json(client.public_dict())
    else:
        out.print(f"client [bold]{client.name}[/] ({client.client_id}) {'enabled' if enabled else 'disabled'}")


@app.command("disable")
def disable(ref: Ref, as_json: JsonOpt = False) -> None:
    """Disable a client: it can no longer get, introspect or revoke tokens, and its unexpired tokens are revoked."""
    _set_enabled(ref, False, as_json)


@app.command("enable")
def enable(ref: Ref, as_json: JsonOpt = False) -> None:
    """Enable a disabled client."""
    _set_enabled(ref, True, as_json)


@app.command("remove")
def remove(
    ref: Ref,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove a client for good; its unexpired tokens are revoked."""
    with provider(as_json) as prov:
        client = prov.clients.find(ref)
        if client is None:
            fail(f"no client {ref!r}", as_json=as_json)
        if not yes:
            if as_json:  # no prompt in JSON mode: scripts must say --yes
                fail(f"not removing client {client.name} without --yes", as_json=True)
            if not typer.confirm(f"Remove client {client.name} ({client.client_id})?"):
                raise typer.Exit(1)
        try:
            prov.clients.remove(client.client_id)
        except ClientError as exc:
            fail(str(exc), as_json=as_json)
    emit_json({"removed": client.client_id}) if as_json else out.print(f"removed client [bold]{client.name}[/]")
