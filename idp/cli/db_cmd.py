"""``idp db``: schema migrations (they also run automatically at ``serve`` and on every command)."""

from __future__ import annotations

import typer

from .. import db
from ..config import Settings
from .common import JsonOpt, emit_json, expected_failure, fail, failure_message, load_settings, out

app = typer.Typer(help="Database schema.", no_args_is_help=True)


def _reason(exc: Exception, settings: Settings) -> str:
    """One line: the driver's first line, without SQLAlchemy's multi-line wrapping."""
    if expected_failure(exc):
        return failure_message(exc, settings)
    lines = str(exc).strip().splitlines()  # e.g. alembic: a revision this code does not know
    return f"{exc.__class__.__name__}: {lines[0] if lines else ''}"


@app.command("upgrade")
def upgrade(as_json: JsonOpt = False) -> None:
    """Apply pending migrations."""
    settings = load_settings(as_json)
    try:
        engine = db.create_db_engine(settings.database_url)
        db.upgrade(engine)
        rev = db.current_revision(engine)
    except Exception as exc:
        fail(f"migration failed: {_reason(exc, settings)}", as_json=as_json)
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
    except Exception as exc:
        fail(f"cannot read the database: {_reason(exc, settings)}", as_json=as_json)
    emit_json({"revision": rev}) if as_json else out.print(f"schema at revision [bold]{rev or 'none'}[/]")
