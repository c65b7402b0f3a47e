"""``idp resources``: the protected resources (MCP servers) the IdP mints tokens for, and their catalogues."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..clients import ClientError
from ..oauth2.resource import ResourceRecord, tool_flags
from .common import JsonOpt, emit_json, fail, out, print_table, provider, when

app = typer.Typer(help="Register protected resources (MCP servers) and pull their catalogues.", no_args_is_help=True)
Uri = Annotated[str, typer.Argument(help="The resource URI (the MCP endpoint, RFC 8707 resource).")]
ClientOpt = Annotated[str | None, typer.Option(
    "--client", help="client_id or name of the client whose token pulls the catalogue (idp resources sync).")]


def _json(resource: ResourceRecord, *, catalogue: bool = False) -> dict[str, Any]:
    data = resource.public_dict()
    if catalogue:
        data["catalogue"] = resource.catalogue
    return data


def _show(resource: ResourceRecord) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in resource.public_dict().items():
        if key in ("created_at", "catalogue_updated_at"):
            value = when(value)
        table.add_row(f"[bold]{key}[/]", escape(str(value if value is not None else "-")))
    out.print(table)
    tools = resource.catalogue.get("tools") or []
    if tools:
        rows = []
        for tool in tools:
            ann = tool.get("annotations") or {}
            destructive, read_only = tool_flags(tool)
            rows.append([escape(tool["name"]), escape(tool.get("title") or ann.get("title") or ""),
                         "[red]yes[/]" if destructive else "no", "yes" if read_only else "no",
                         escape((tool.get("description") or "")[:120])])
        print_table(["tool", "title", "destructive", "read-only", "description"], rows, ids={"tool"})
    for kind, key in (("resources", "uri"), ("prompts", "name")):
        entries = resource.catalogue.get(kind) or []
        if entries:
            out.print(f"[bold]{kind}:[/] " + escape(", ".join(str(e.get(key)) for e in entries)))


def _client_id(prov: Any, ref: str | None, as_json: bool) -> str | None:
    if ref is None:
        return None
    client = prov.clients.find(ref)
    if client is None:
        fail(f"no client {ref!r}", as_json=as_json)
    return str(client.client_id)


@app.command("add")
def add(
    uri: Uri,
    name: Annotated[str, typer.Option("--name", help="A name for people (shown on the consent page).")],
    client: ClientOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a protected resource: the IdP mints tokens only for registered resources."""
    with provider(as_json) as prov:
        try:
            resource = prov.resources.add(uri, name=name, client_id=_client_id(prov, client, as_json))
        except ClientError as exc:
            fail(str(exc), as_json=as_json)
    if as_json:
        emit_json(_json(resource))
        return
    _show(resource)
    if resource.client_id:
        out.print(f"[dim]Pull its catalogue with: idp resources sync {escape(uri)}[/]")


@app.command("update")
def update(
    uri: Uri,
    name: Annotated[str | None, typer.Option("--name", help="New name.")] = None,
    client: ClientOpt = None,
    no_client: Annotated[bool, typer.Option("--no-client", help="Forget the catalogue client.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Rename a resource or set the client that pulls its catalogue."""
    with provider(as_json) as prov:
        try:
            resource = prov.resources.update(uri, name=name, client_id=_client_id(prov, client, as_json),
                                             clear_client=no_client)
        except ClientError as exc:
            fail(str(exc), as_json=as_json)
    emit_json(_json(resource)) if as_json else _show(resource)


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List protected resources."""
    with provider(as_json) as prov:
        resources = prov.resources.list()
    if as_json:
        emit_json([_json(r) for r in resources])
        return
    if not resources:
        out.print("[dim]no resources[/]")
        return
    print_table(["uri", "name", "client", "tools", "resources", "prompts", "catalogue"],
                [[escape(r.uri), escape(r.name), escape(r.client_id or "-"), str(len(r.catalogue.get("tools", []))),
                  str(len(r.catalogue.get("resources", []))), str(len(r.catalogue.get("prompts", []))),
                  when(r.catalogue_updated_at)] for r in resources], ids={"uri"})


@app.command("show")
def show(uri: Uri, as_json: JsonOpt = False) -> None:
    """Show one resource and its catalogue."""
    with provider(as_json) as prov:
        resource = prov.resources.get(uri)
    if resource is None:
        fail(f"no resource {uri!r}", as_json=as_json)
    emit_json(_json(resource, catalogue=True)) if as_json else _show(resource)


@app.command("remove")
def remove(
    uri: Uri,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove a resource: no more tokens are minted for it (clients naming it get invalid_target)."""
    with provider(as_json) as prov:
        if prov.resources.get(uri) is None:
            fail(f"no resource {uri!r}", as_json=as_json)
        if not yes:
            if as_json:
                fail(f"not removing resource {uri} without --yes", as_json=True)
            if not typer.confirm(f"Remove resource {uri}?"):
                raise typer.Exit(1)
        try:
            prov.resources.remove(uri)
        except ClientError as exc:
            fail(str(exc), as_json=as_json)
    emit_json({"removed": uri}) if as_json else out.print(f"removed resource [bold]{escape(uri)}[/]")


@app.command("sync")
def sync(
    uri: Annotated[str | None, typer.Argument(help="The resource (default: every resource with a client).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=1, max=300, help="Seconds per server.")] = 30.0,
    as_json: JsonOpt = False,
) -> None:
    """Pull the catalogue (tools, resources, prompts) from the MCP server itself, with a token the
    IdP mints for the resource's client; nothing is stored unless the whole listing is acceptable."""
    from ..catalogue import DEFAULT_LIMITS, CatalogueError
    from ..catalogue import sync as pull

    limits = type(DEFAULT_LIMITS)(timeout=timeout)
    results: list[dict[str, Any]] = []
    failures = 0
    with provider(as_json, initial_key=True) as prov:
        targets = [uri] if uri is not None else [r.uri for r in prov.resources.list() if r.client_id]
        if not targets:
            fail("no resource has a catalogue client (idp resources update URI --client CLIENT)", as_json=as_json)
        for target in targets:
            try:
                resource = pull(prov, target, limits=limits)
            except (CatalogueError, ClientError) as exc:
                failures += 1
                if uri is not None:
                    fail(str(exc), as_json=as_json)
                results.append({"uri": target, "error": str(exc)})
                continue
            results.append(_json(resource))
    if as_json:
        emit_json(results[0] if uri is not None else results)
    else:
        for r in results:
            if "error" in r:
                out.print(f"[red]{escape(r['uri'])}: {escape(r['error'])}[/]")
            else:
                out.print(f"[green]synced[/] {escape(r['uri'])}: {r['tools']} tools, {r['resources']} resources, "
                          f"{r['prompts']} prompts")
    if failures:
        raise typer.Exit(1)
