"""``idp clients list/show`` say who registered a client and label unreviewed ones;
``idp clients approve`` marks a dynamic or metadata-document client reviewed and pins its
metadata (its registration access token stops working). The real CLI, SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from idp_testing import env_for, run_cli
from registration_testing import PYTHON_SDK_REQUEST, settings_for

from idp.oauth2 import client_metadata
from idp.oauth2.registration import InvalidToken
from idp.provider import Provider

pytestmark = pytest.mark.slow


def test_list_show_and_approve(db_url: str, tmp_path: Path) -> None:
    settings = settings_for(db_url, tmp_path)
    prov = Provider.open(settings)
    try:
        reg = prov.dynamic_clients.register(client_metadata.validate(dict(PYTHON_SDK_REQUEST)), actor="test",
                                            initial_access_token=None, token_required=False, audited=True)
        operator, _ = prov.clients.add("ops", capabilities="tools/call:*")
    finally:
        prov.close()
    env = {**env_for(settings), "COLUMNS": "250"}
    listed = {c["client_id"]: c for c in json.loads(run_cli("clients", "list", "--json", env=env).stdout)}
    dyn = listed[reg.client.client_id]
    assert dyn["registered_by"] == "dcr" and dyn["reviewed"] is False and dyn["client_name"] == "Python MCP client"
    assert listed[operator.client_id]["reviewed"] is True
    text = run_cli("clients", "list", env=env).stdout
    assert "(unreviewed)" in text and text.count("(unreviewed)") == 1
    shown = run_cli("clients", "show", reg.client.client_id, env=env).stdout
    assert "dcr (unreviewed)" in shown and "Python MCP client" in shown
    approved = run_cli("clients", "approve", reg.client.client_id, "--json", env=env)
    assert approved.returncode == 0, approved.stderr
    assert json.loads(approved.stdout)["reviewed"] is True
    assert "(unreviewed)" not in run_cli("clients", "list", env=env).stdout
    again = run_cli("clients", "approve", operator.client_id, env=env)
    assert again.returncode == 1 and "already" in again.stderr
    prov = Provider.open(settings)
    try:
        with pytest.raises(InvalidToken):  # pinned: the client can no longer change its registration
            prov.dynamic_clients.authorized(reg.client.client_id, reg.registration_token)
    finally:
        prov.close()
