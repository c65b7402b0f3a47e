"""The challenge for a ``*/list`` request (issue 6, defect 23).

A list needs only *some* capability of its family, so the challenge must not ask for
``tools/call:**`` — more than most clients are allowed, so a client that follows the challenge
gets ``invalid_scope``. The challenge names no scope for a list (the client asks for what it is
registered for; the server's ``scopes_supported``, if configured, is offered instead).
"""

from __future__ import annotations

import re

import httpx
import pytest
from sdk_server_support import IdP, legacy_headers, protected_example, rpc

from sdk.server.rpc import Message, required_capability


@pytest.mark.parametrize("method", ["tools/list", "prompts/list", "resources/list", "resources/templates/list"])
def test_a_list_requirement_names_no_scope(method: str) -> None:
    req = required_capability(Message("request", 1, method, None))
    assert req.list_method == method and req.scope is None


def test_a_client_following_the_401_for_a_list_gets_a_token_and_the_list(idp: IdP) -> None:
    with protected_example(idp, stateless=True, json_response=True, tool_rate=None) as srv:
        client = idp.client("tools/call:echo", srv.resource)
        resp = httpx.post(srv.url, json=rpc("tools/list"), headers=legacy_headers())
        assert resp.status_code == 401
        challenge = resp.headers["www-authenticate"]
        asked = re.search(r'scope="([^"]*)"', challenge)
        assert asked is None, challenge  # nothing the client may not be granted
        form = {"grant_type": "client_credentials", "resource": srv.resource}
        token_resp = httpx.post(idp.url + "/token", data=form, auth=client, timeout=10)
        assert token_resp.status_code == 200, token_resp.text  # not invalid_scope
        token = token_resp.json()["access_token"]
        listed = httpx.post(srv.url, json=rpc("tools/list"), headers=legacy_headers(token))
        assert listed.status_code == 200
        assert [t["name"] for t in listed.json()["result"]["tools"]] == ["echo"]


def test_the_list_challenge_offers_scopes_supported_when_configured(idp: IdP) -> None:
    with protected_example(idp, stateless=True, json_response=True, scopes_supported=["tools/call:echo"]) as srv:
        resp = httpx.post(srv.url, json=rpc("tools/list"), headers=legacy_headers())
        assert resp.status_code == 401 and 'scope="tools/call:echo"' in resp.headers["www-authenticate"]
