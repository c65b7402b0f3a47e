"""What every command shares: settings and provider loading, JSON/rich output, clean errors."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
from collections.abc import Iterator
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from ..config import Settings
from ..db import DatabaseError
from ..keystore import KeystoreError

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]

out = Console(highlight=False, soft_wrap=True)
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


@contextlib.contextmanager
def provider(as_json: bool = False, *, initial_key: bool = False) -> Iterator[Any]:
    from sqlalchemy.exc import SQLAlchemyError

    from ..provider import Provider

    from .. import logs

    settings = load_settings(as_json)
    # Changes made here are audited like the server's: a JSON log line (stderr) per record.
    logs.configure(settings.log_level, settings.log_json)
    try:
        prov = Provider.open(settings, initial_key=initial_key)
        if initial_key:
            # Commands that use the signing keys (serve, keys ...) check the KEK/passphrase opens them.
            prov.keys.refresh(force=True)
    except (DatabaseError, KeystoreError) as exc:
        fail(str(exc), as_json=as_json)
    except SQLAlchemyError as exc:
        fail(f"cannot use the database {settings.masked()['database_url']}: {exc.__class__.__name__}: "
             f"{str(exc.orig if hasattr(exc, 'orig') else exc).splitlines()[0]}", as_json=as_json)
    try:
        yield prov
    except KeystoreError as exc:
        fail(str(exc), as_json=as_json)
    finally:
        prov.close()


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def when(ts: int | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
