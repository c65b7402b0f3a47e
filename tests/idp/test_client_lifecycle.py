"""Disabling or removing a client ends its tokens: they introspect inactive at once and appear on
the revocation list that offline verifiers poll. Other clients' tokens are untouched."""

from __future__ import annotations

import json
from typing import Any

import pytest

from idp import audit
from idp.provider import Provider
from idp_testing import AUDIENCE, register
from sdk import jws


def _token(http: Any, client_id: str, secret: str) -> dict[str, Any]:
    r = http.post("/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))
    assert r.status_code == 200, r.text
    return r.json()


def _active(http: Any, token: str, rs: tuple[str, str]) -> bool:
    r = http.post("/introspect", data={"token": token}, auth=rs)
    assert r.status_code == 200
    return r.json()["active"]


def _jti(token: str) -> str:
    return json.loads(jws.split(token)[1])["jti"]


def _resource_server(provider: Provider) -> tuple[Any, str]:
    """The protected resource's own client: it may introspect tokens for its audience (RFC 7662 §4)."""
    rs, secret = provider.clients.add("resource-server", capabilities="logging/setLevel", audiences=[AUDIENCE],
                                      kind="resource_server")
    assert secret
    return rs, secret


def _revoked_jtis(http: Any) -> set[str]:
    return {entry["jti"] for entry in http.get("/revoked").json()["revoked"]}


@pytest.mark.parametrize("action", ["disable", "remove"])
def test_disabling_or_removing_a_client_revokes_its_outstanding_tokens(provider: Provider, http: Any, action: str) -> None:
    agent, agent_secret = register(provider, "agent")
    other, other_secret = register(provider, "other")
    rs, rs_secret = _resource_server(provider)
    rs_auth = (rs.client_id, rs_secret)
    tokens = [_token(http, agent.client_id, agent_secret)["access_token"] for _ in range(3)]
    bystander = _token(http, other.client_id, other_secret)["access_token"]
    assert all(_active(http, t, rs_auth) for t in tokens + [bystander])

    if action == "disable":
        provider.clients.set_enabled(agent.client_id, False)
    else:
        provider.clients.remove(agent.client_id)

    assert not any(_active(http, t, rs_auth) for t in tokens)
    assert _active(http, bystander, rs_auth)
    listed = _revoked_jtis(http)
    assert {_jti(t) for t in tokens} <= listed
    assert _jti(bystander) not in listed
    record = audit.tail(provider.engine, limit=1, event="client.disabled" if action == "disable" else "client.removed")[-1]
    assert record["data"]["revoked_tokens"] == 3
    revoked_records = audit.tail(provider.engine, limit=10, event="token.revoked")
    assert {r["jti"] for r in revoked_records} == {_jti(t) for t in tokens}
    assert {r["data"]["reason"] for r in revoked_records} == {f"client {action}d" if action == "disable" else "client removed"}


def test_a_reenabled_client_gets_new_tokens_but_old_ones_stay_revoked(provider: Provider, http: Any) -> None:
    agent, secret = register(provider, "agent")
    rs, rs_secret = _resource_server(provider)
    old = _token(http, agent.client_id, secret)["access_token"]
    provider.clients.set_enabled(agent.client_id, False)
    refused = http.post("/token", data={"grant_type": "client_credentials"}, auth=(agent.client_id, secret))
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    provider.clients.set_enabled(agent.client_id, True)
    new = _token(http, agent.client_id, secret)["access_token"]
    assert not _active(http, old, (rs.client_id, rs_secret))
    assert _active(http, new, (rs.client_id, rs_secret))


def test_disabling_twice_revokes_nothing_more(provider: Provider, http: Any) -> None:
    agent, secret = register(provider, "agent")
    _token(http, agent.client_id, secret)
    provider.clients.set_enabled(agent.client_id, False)
    provider.clients.set_enabled(agent.client_id, False)
    records = audit.tail(provider.engine, limit=2, event="client.disabled")
    assert [r["data"]["revoked_tokens"] for r in records] == [1, 0]
