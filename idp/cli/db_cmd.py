"""``idp db``: schema migrations (they also run automatically at ``serve`` and on every command)."""

from __future__ import annotations

import typer

from .. import db
from .common import JsonOpt, emit_json, fail, load_settings, out

app = typer.Typer(help="Database schema.", no_args_is_help=True)


def _reason(exc: Exception) -> str:
    """One line: the driver's first line, without SQLAlchemy's multi-line wrapping."""
    orig = getattr(exc, "orig", None)
    if orig is not None:
        exc = orig
    lines = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {lines[0] if lines else ''}"


@app.command("upgrade")
def upgrade(as_json: JsonOpt = False) -> None:
    """Apply pending migrations."""
    settings = load_settings(as_json)
    try:
        engine = db.create_db_engine(settings.database_url)
        db.upgrade(engine)
        rev = db.current_revision(engine)
    except Exception as exc:  # noqa: BLE001
        fail(f"migration failed: {_reason(exc)}", as_json=as_json)
    if as_json:
        emit_json({"revision": rev})
    else:
        out.print(f"schema at revision [bold]{rev}[/]")


@app.command("current")
def current(as_json: JsonOpt = False) -> None:
    """Show the schema revision."""
    settings = load_settings(as_json)
    try:
        rev = db.current_revision(db.create_db_engine(settings.database_url))
    except Exception as exc:  # noqa: BLE001
        fail(f"cannot read the database: {_reason(exc)}", as_json=as_json)
    emit_json({"revision": rev}) if as_json else out.print(f"schema at revision [bold]{rev or 'none'}[/]")
