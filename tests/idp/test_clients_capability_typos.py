"""``idp clients add`` and capability typos (issue 6, defect 20), run as the real CLI."""

from __future__ import annotations

import json

from idp_testing import AUDIENCE, env_for, run_cli

from idp.config import Settings
from idp.provider import Provider


def test_unknown_methods_are_refused_with_did_you_mean_and_nothing_is_stored(settings: Settings,
                                                                             provider: Provider) -> None:
    env = env_for(settings)
    for capabilities, suggestion in [("tools/cal:echo", "tools/call"), ("tool/call:echo", "tools/call"),
                                     ("tools/call:echo logging/setlevel", "logging/setLevel")]:
        res = run_cli("clients", "add", "typo", "--capabilities", capabilities, "--audience", AUDIENCE, env=env)
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
        assert "not an MCP method" in res.stderr and f"did you mean '{suggestion}'" in res.stderr, res.stderr
        res = run_cli("clients", "add", "typo", "--capabilities", capabilities, "--audience", AUDIENCE, "--json",
                      env=env)
        assert res.returncode == 1 and f"did you mean '{suggestion}'" in json.loads(res.stdout)["error"]
    assert provider.clients.find("typo") is None


def test_commas_are_warned_about(settings: Settings, provider: Provider) -> None:
    env = env_for(settings)
    res = run_cli("clients", "add", "commas", "--capabilities", "tools/call:echo,tools/call:add",
                  "--audience", AUDIENCE, "--json", env=env)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["capabilities"] == "tools/call:echo,tools/call:add"  # stdout stays JSON
    assert "warning:" in res.stderr and "did you mean 'tools/call:echo tools/call:add'" in res.stderr
