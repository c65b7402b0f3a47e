"""``idp config``: the effective configuration."""

from __future__ import annotations

import typer
from rich.markup import escape

from .common import JsonOpt, emit_json, load_settings, print_table

app = typer.Typer(help="Show configuration.", no_args_is_help=True)


@app.command("show")
def show(as_json: JsonOpt = False) -> None:
    """Print the effective configuration (environment over config file over defaults), secrets masked."""
    settings = load_settings(as_json).masked()
    if as_json:
        emit_json(settings)
        return
    print_table(["setting", "value", "environment variable"],
                [[name, "-" if value is None else escape(str(value)), "IDP_" + name.upper()]
                 for name, value in settings.items()], ids={"value", "environment variable"},
                title="effective configuration")  # values are copied (URLs, paths): never folded
