"""``idp users``: local accounts (people who log in at the IdP with a password)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from ..users import UserError, UserRecord
from .common import JsonOpt, emit_json, fail, out, print_table, provider, when

app = typer.Typer(help="Manage local accounts (username and password, argon2id).", no_args_is_help=True)
Ref = Annotated[str, typer.Argument(help="username or subject")]
PasswordStdin = Annotated[bool, typer.Option(
    "--password-stdin", help="Read the password from the first line of standard input (for scripts).")]


def _read_password(from_stdin: bool, as_json: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        if password.endswith("\r"):
            password = password[:-1]
        if not password:
            fail("no password on standard input", as_json=as_json)
        return password
    if as_json or not sys.stdin.isatty():
        fail("no terminal to ask for the password: use --password-stdin", as_json=as_json)
    first = typer.prompt("Password", hide_input=True)
    second = typer.prompt("Repeat password", hide_input=True)
    if first != second:
        fail("the passwords do not match", as_json=as_json)
    return str(first)


def _show(user: UserRecord) -> None:
    for key, value in user.public_dict().items():
        if key in ("created_at", "updated_at"):
            value = when(value)
        elif isinstance(value, list):
            value = ", ".join(value) or "-"
        out.print(f"[bold]{key}[/]: {escape(str(value if value is not None else '-'))}")


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Username (what the person types).")],
    email: Annotated[str | None, typer.Option("--email", help="Email address (a claim policies may read).")] = None,
    group: Annotated[list[str] | None, typer.Option("--group", help="Group the person is in (repeatable).")] = None,
    password_stdin: PasswordStdin = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a local account; asks for the password twice (or reads it with --password-stdin)."""
    password = _read_password(password_stdin, as_json)
    with provider(as_json) as prov:
        try:
            user = prov.users.add(name, password, email=email, groups=group or [])
        except UserError as exc:
            fail(str(exc), as_json=as_json)
    if as_json:
        emit_json(user.public_dict())
        return
    out.print(f"added user [bold]{escape(user.username)}[/] (subject {user.subject})")


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List local accounts."""
    with provider(as_json) as prov:
        users = prov.users.list()
    if as_json:
        emit_json([u.public_dict() for u in users])
        return
    if not users:
        out.print("[dim]no users[/]")
        return
    print_table(["username", "subject", "email", "groups", "enabled", "created"],
                [[escape(u.username), u.subject, escape(u.claims.get("email") or "-"),
                  escape(", ".join(u.claims.get("groups", [])) or "-"), "yes" if u.enabled else "[red]no[/]",
                  when(u.created_at)] for u in users], ids={"username", "subject"})


@app.command("show")
def show(ref: Ref, as_json: JsonOpt = False) -> None:
    """Show one local account."""
    with provider(as_json) as prov:
        user = prov.users.find(ref)
    if user is None:
        fail(f"no user {ref!r}", as_json=as_json)
    emit_json(user.public_dict()) if as_json else _show(user)


@app.command("remove")
def remove(
    ref: Ref,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove a local account; its browser sessions end (its remembered grants stay until revoked)."""
    with provider(as_json) as prov:
        user = prov.users.find(ref)
        if user is None:
            fail(f"no user {ref!r}", as_json=as_json)
        if not yes:
            if as_json or not sys.stdin.isatty():
                fail(f"not removing user {user.username} without --yes", as_json=as_json)
            if not typer.confirm(f"Remove user {user.username} ({user.subject})?"):
                raise typer.Exit(1)
        try:
            prov.users.remove(user.subject)
        except UserError as exc:
            fail(str(exc), as_json=as_json)
        prov.web_sessions.delete_for_subject(user.subject)
    if as_json:
        emit_json({"removed": user.username, "subject": user.subject})
    else:
        out.print(f"removed user [bold]{escape(user.username)}[/]")


@app.command("passwd")
def passwd(ref: Ref, password_stdin: PasswordStdin = False, as_json: JsonOpt = False) -> None:
    """Set a local account's password."""
    password = _read_password(password_stdin, as_json)
    with provider(as_json) as prov:
        try:
            user = prov.users.set_password(ref, password)
        except UserError as exc:
            fail(str(exc), as_json=as_json)
    if as_json:
        emit_json({"username": user.username, "subject": user.subject, "password_changed": True})
    else:
        out.print(f"password of [bold]{escape(user.username)}[/] changed")
