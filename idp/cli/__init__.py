"""``idp``: run and administer the CBST identity provider.

Every command that prints data takes ``--json`` for scripts; errors go to stderr (or, with
``--json``, as ``{"error": ...}`` on stdout) with exit status 1; usage errors exit 2. Log
records (the audit lines the server logs) are printed only with ``idp --verbose``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from . import (
    audit_cmd,
    clients_cmd,
    common,
    config_cmd,
    db_cmd,
    grants_cmd,
    keys_cmd,
    policy_cmd,
    resources_cmd,
    serve_cmd,
    tokens_cmd,
    users_cmd,
)

app = typer.Typer(
    name="idp",
    help="CBST identity provider: capability tokens for MCP servers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML configuration file (sets IDP_CONFIG).",
                                                exists=True, dir_okay=False)] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print log records (audit lines...) on stderr, "
                                          "at IDP_LOG_LEVEL, as the server does.")] = False,
) -> None:
    if config is not None:
        os.environ["IDP_CONFIG"] = str(config.resolve())
    common.options.verbose = verbose


app.command("serve")(serve_cmd.serve)
app.add_typer(config_cmd.app, name="config")
app.add_typer(clients_cmd.app, name="clients")
app.add_typer(tokens_cmd.app, name="tokens")
app.add_typer(keys_cmd.app, name="keys")
app.add_typer(audit_cmd.app, name="audit")
app.add_typer(db_cmd.app, name="db")
app.add_typer(users_cmd.app, name="users")
app.add_typer(grants_cmd.app, name="grants")
app.add_typer(policy_cmd.app, name="policy")
app.add_typer(resources_cmd.app, name="resources")


def main() -> None:
    app()
