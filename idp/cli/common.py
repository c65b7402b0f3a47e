"""What every command shares: settings and provider loading, JSON/rich output, clean errors."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .. import logs
from ..config import Settings
from ..db import DatabaseError
from ..errors import IdPError

if TYPE_CHECKING:
    from ..provider import Provider

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]

out = Console(highlight=False, soft_wrap=True)
_FOLD_WIDTH = 20  # narrowest a folding table cell gets (a timestamp, "client_secret_basic")
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, *, as_json: bool = False, code: int = 1) -> NoReturn:
    if as_json:
        print(json.dumps({"error": message}))
    else:
        err.print(f"[bold red]error:[/] {escape(message)}", markup=True)  # the message quotes user input
    raise typer.Exit(code)


def load_settings(as_json: bool = False) -> Settings:
    try:
        return Settings()
    except (ValidationError, ValueError) as exc:
        fail(f"invalid configuration: {_describe(exc)}", as_json=as_json)


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors())
    return str(exc)


@dataclass
class Options:
    """Options of the ``idp`` command itself (set by its callback, before any subcommand runs)."""

    verbose: bool = False


options = Options()


def configure_logging(settings: Settings) -> None:
    """Log records are the server's business: a command shows them only with ``idp --verbose``.
    Its audit records still go to the database; warnings still reach stderr, as plain lines."""
    if options.verbose:
        logs.configure(settings.log_level, settings.log_json)
    else:
        logs.configure("warning", json_lines=False)


def failure_message(exc: BaseException, settings: Settings) -> str:
    """One line for an expected failure of the database, the disk or the keystore."""
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(exc, SQLAlchemyError):
        orig = getattr(exc, "orig", None) or exc
        lines = str(orig).strip().splitlines()
        return (f"cannot use the database {settings.masked()['database_url']}: "
                f"{orig.__class__.__name__}: {lines[0] if lines else ''}")
    if isinstance(exc, ModuleNotFoundError):
        return (f"PostgreSQL needs the psycopg driver, which is not installed ({exc}): "
                "pip install 'psycopg[binary]'")
    if isinstance(exc, OSError):
        return f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}"
    return str(exc)


def expected_failure(exc: BaseException) -> bool:
    """A failure to report in one line (the rest are bugs and keep their traceback)."""
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(exc, ModuleNotFoundError):
        return (exc.name or "").split(".")[0] == "psycopg"
    return isinstance(exc, (IdPError, DatabaseError, SQLAlchemyError, OSError))  # DatabaseError: not yet an IdPError


@contextlib.contextmanager
def provider(as_json: bool = False, *, initial_key: bool = False) -> Iterator[Provider]:
    """The provider, opened (migrating the schema) for one command and closed after it; a
    failure of the database, the disk or the keystore, then or inside the command, is one line.
    Nothing is half-written: every change a command makes is one transaction."""
    from ..provider import Provider

    settings = load_settings(as_json)
    configure_logging(settings)
    prov: Provider | None = None
    try:
        prov = Provider.open(settings, initial_key=initial_key)
        if initial_key:
            # Commands that use the signing keys (serve, keys ...) check the KEK/passphrase opens them.
            prov.keys.refresh(force=True)
        yield prov
    except Exception as exc:
        if not expected_failure(exc):
            raise
        fail(failure_message(exc, settings), as_json=as_json)
    finally:
        if prov is not None:
            prov.close()


def print_table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, ids: Collection[str] = (),
                **options: Any) -> None:
    """Print rows (console markup) as a table. The ``ids`` columns hold what a user types next
    (a client_id, a kid): never cut, never wrapped. Other cells fold rather than being elided;
    on a narrow terminal the table is wider than the screen rather than squeezed to nothing."""
    rows = list(rows)
    table = Table(**options)
    widths = []
    for i, header in enumerate(headers):
        longest = max([len(header), *(Text.from_markup(row[i]).cell_len for row in rows)])
        if header in ids:
            table.add_column(header, no_wrap=True, min_width=longest)
            widths.append(longest)
        else:
            widths.append(min(longest, _FOLD_WIDTH))
            table.add_column(header, overflow="fold", min_width=widths[-1])
    for row in rows:
        table.add_row(*row)
    out.print(table, width=max(out.width, sum(widths) + 3 * len(widths) + 1))  # + padding and rules


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def when(ts: int | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
