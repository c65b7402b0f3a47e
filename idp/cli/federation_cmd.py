"""``idp federation``: the upstream OpenID Connect providers people may log in at."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..federation.oidc_client import OIDCClient, UpstreamLoginError
from ..federation.routes import redirect_uri
from ..federation.upstreams import Upstream, UpstreamError, validate_issuer, validate_name, validate_scopes
from .common import JsonOpt, emit_json, fail, load_settings, out, print_table, provider, when

app = typer.Typer(help="Upstream OpenID Connect providers for federated login.", no_args_is_help=True)
Name = Annotated[str, typer.Argument(help="The upstream's name (in its callback URL).")]


def _dict(upstream: Upstream, issuer: str) -> dict[str, object]:
    return {**upstream.public_dict(), "redirect_uri": redirect_uri(issuer, upstream.name)}


def _show(upstream: Upstream, issuer: str) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in _dict(upstream, issuer).items():
        if key == "created_at":
            value = when(upstream.created_at)
        elif isinstance(value, list):
            value = " ".join(value)
        table.add_row(f"[bold]{key}[/]", escape(str(value)))
    out.print(table)


def _check_discovery(upstream: Upstream, timeout: float) -> None:
    """The issuer's discovery document, fetched now: refused if it names another issuer."""
    client = OIDCClient(timeout=timeout, discovery_ttl=0)
    asyncio.run(client.metadata(upstream))


@app.command("add")
def add(
    name: Name,
    issuer: Annotated[str, typer.Option("--issuer", help="The provider's issuer identifier, e.g. "
                                        "https://accounts.google.com.")],
    client_id: Annotated[str, typer.Option("--client-id", help="The client_id the provider issued to this IdP.")],
    client_secret: Annotated[str | None, typer.Option(
        "--client-secret", help="The client secret (visible in the process list: prefer --client-secret-stdin).")
    ] = None,
    secret_stdin: Annotated[bool, typer.Option("--client-secret-stdin",
                                               help="Read the client secret from standard input.")] = False,
    label: Annotated[str | None, typer.Option("--label", help='Button text on the chooser: "Sign in with LABEL".')
                     ] = None,
    scope: Annotated[list[str] | None, typer.Option(
        "--scope", help="Scope to request (repeatable; default: openid email profile; openid is always added).")
    ] = None,
    no_check: Annotated[bool, typer.Option("--no-check", help="Do not fetch the discovery document now.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add an upstream; its discovery document is checked now (unless --no-check)."""
    if client_secret is not None and secret_stdin:
        fail("give --client-secret or --client-secret-stdin, not both", as_json=as_json)
    if secret_stdin:
        client_secret = sys.stdin.readline().rstrip("\r\n")
        if not client_secret:
            fail("no client secret on standard input", as_json=as_json)
    try:
        validate_name(name)
        validate_issuer(issuer)
        scopes = validate_scopes(scope)
    except UpstreamError as exc:
        fail(str(exc), as_json=as_json)
    settings = load_settings(as_json)
    if not no_check:
        probe = Upstream(name=name, issuer=issuer, client_id=client_id, scopes=scopes, label=label or name,
                         enabled=True, created_at=0, has_secret=client_secret is not None)
        try:
            _check_discovery(probe, settings.federation_timeout)
        except UpstreamLoginError as exc:
            fail(f"{exc} (use --no-check to add it anyway)", as_json=as_json)
    with provider(as_json) as prov:
        try:
            upstream = prov.federation.add(name, issuer=issuer, client_id=client_id, client_secret=client_secret,
                                           scopes=scopes, label=label)
        except UpstreamError as exc:
            fail(str(exc), as_json=as_json)
    if as_json:
        emit_json(_dict(upstream, settings.issuer))
        return
    _show(upstream, settings.issuer)
    out.print(f"Register [bold]{escape(redirect_uri(settings.issuer, name))}[/] as the redirect URI at the provider.")


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List upstreams."""
    with provider(as_json) as prov:
        upstreams = prov.federation.list()
        issuer = prov.settings.issuer
    if as_json:
        emit_json([_dict(u, issuer) for u in upstreams])
        return
    if not upstreams:
        out.print("[dim]no upstreams[/]")
        return
    print_table(["name", "label", "issuer", "client_id", "enabled", "scopes"],
                [[escape(u.name), escape(u.label), escape(u.issuer), escape(u.client_id),
                  "yes" if u.enabled else "[red]no[/]", escape(" ".join(u.scopes))] for u in upstreams],
                ids={"name", "issuer", "client_id"})


@app.command("show")
def show(name: Name, as_json: JsonOpt = False) -> None:
    """Show one upstream (never its secret) and the redirect URI to register at it."""
    with provider(as_json) as prov:
        upstream = prov.federation.get(name)
        issuer = prov.settings.issuer
    if upstream is None:
        fail(f"no upstream {name!r}", as_json=as_json)
    emit_json(_dict(upstream, issuer)) if as_json else _show(upstream, issuer)


def _set_enabled(name: str, enabled: bool, as_json: bool) -> None:
    with provider(as_json) as prov:
        try:
            upstream = prov.federation.set_enabled(name, enabled)
        except UpstreamError as exc:
            fail(str(exc), as_json=as_json)
        issuer = prov.settings.issuer
    if as_json:
        emit_json(_dict(upstream, issuer))
    else:
        out.print(f"upstream [bold]{escape(name)}[/] {'enabled' if enabled else 'disabled'}")


@app.command("disable")
def disable(name: Name, as_json: JsonOpt = False) -> None:
    """Hide an upstream from the chooser and refuse logins through it."""
    _set_enabled(name, False, as_json)


@app.command("enable")
def enable(name: Name, as_json: JsonOpt = False) -> None:
    """Enable a disabled upstream."""
    _set_enabled(name, True, as_json)


@app.command("remove")
def remove(
    name: Name,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove an upstream. Its people keep their local subjects, found again if it is added back."""
    with provider(as_json) as prov:
        upstream = prov.federation.get(name)
        if upstream is None:
            fail(f"no upstream {name!r}", as_json=as_json)
        if not yes:
            if as_json:  # no prompt in JSON mode: scripts must say --yes
                fail(f"not removing upstream {name} without --yes", as_json=True)
            if not typer.confirm(f"Remove upstream {name} ({upstream.issuer})?"):
                raise typer.Exit(1)
        try:
            prov.federation.remove(name)
        except UpstreamError as exc:
            fail(str(exc), as_json=as_json)
    emit_json({"removed": name}) if as_json else out.print(f"removed upstream [bold]{escape(name)}[/]")
