"""Capability typos (issue 6, defect 20): methods MCP does not have, and commas.

``CapabilitySet.parse(scope, strict=True)`` — what ``idp clients add`` uses — refuses a method
that no MCP protocol revision has, with a "did you mean"; the default (lenient) parse keeps
accepting it (a token minted elsewhere still verifies) but never suggests the misspelling.
:func:`capability_warnings` flags what is accepted but almost certainly not meant (commas).
"""

from __future__ import annotations

import pytest

from sdk.capabilities import (
    HANDSHAKE_METHODS,
    MCP_METHODS,
    MODERN_METHODS,
    Capability,
    CapabilityError,
    CapabilitySet,
    capability_warnings,
)


@pytest.mark.parametrize(("text", "suggestion"), [
    ("tools/cal:echo", "tools/call"),
    ("tool/call:echo", "tools/call"),
    ("tools/calls:echo", "tools/call"),
    ("resource/read:file:///docs/**", "resources/read"),
    ("prompt/get:summarize", "prompts/get"),
    ("logging/setlevel", "logging/setLevel"),
    ("completion/completion", "completion/complete"),
    ("tools/cal", "tools/call"),
])
def test_strict_parse_refuses_unknown_methods_with_did_you_mean(text: str, suggestion: str) -> None:
    with pytest.raises(CapabilityError) as err:
        CapabilitySet.parse(f"tools/call:echo {text}", strict=True)
    message = str(err.value)
    assert "not an MCP method" in message and f"did you mean {suggestion!r}" in message, message
    with pytest.raises(CapabilityError):
        Capability.parse(text, strict=True)


def test_strict_parse_without_a_close_match_lists_the_methods() -> None:
    with pytest.raises(CapabilityError) as err:
        CapabilitySet.parse("zzz/qqq", strict=True)
    assert "not an MCP method" in str(err.value) and "tools/call" in str(err.value)


@pytest.mark.parametrize("scope", [
    "tools/call:echo tools/call:git-* prompts/get:summarize resources/read:file:///docs/**",
    "resources/subscribe:file:///feeds/* resources/unsubscribe:** logging/setLevel completion/complete",
    "tools/list prompts/list resources/list resources/templates/list subscriptions/listen",
])
def test_strict_parse_accepts_every_mcp_method(scope: str) -> None:
    assert CapabilitySet.parse(scope, strict=True) == CapabilitySet.parse(scope)


def test_lenient_parse_still_accepts_unknown_target_less_methods() -> None:
    assert str(Capability.parse("x-vendor/do")) == "x-vendor/do"


def test_a_target_on_a_misspelt_method_suggests_the_right_spelling_not_the_wrong_one() -> None:
    with pytest.raises(CapabilityError) as err:
        Capability.parse("tools/cal:echo")
    message = str(err.value)
    assert "did you mean 'tools/call'" in message
    assert "write just 'tools/cal'" not in message


def test_commas_are_flagged_with_the_space_separated_spelling() -> None:
    caps = CapabilitySet.parse("tools/call:echo,tools/call:add", strict=True)
    assert [c.pattern for c in caps] == ["echo,tools/call:add"]  # one tool, comma in its name
    warnings = capability_warnings(caps)
    assert len(warnings) == 1 and "','" in warnings[0] and "'tools/call:echo tools/call:add'" in warnings[0]
    assert capability_warnings(CapabilitySet.parse("tools/call:echo resources/read:file:///a?x=1,2")) == [
        "'resources/read:file:///a?x=1,2' contains ','; capabilities are separated by spaces, not commas"]
    assert capability_warnings(CapabilitySet.parse("tools/call:echo")) == []


def test_method_tables_agree_with_the_official_sdk() -> None:
    from mcp_types.methods import CLIENT_REQUESTS
    from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

    assert {m for m, v in CLIENT_REQUESTS if v in HANDSHAKE_PROTOCOL_VERSIONS} == HANDSHAKE_METHODS
    assert {m for m, v in CLIENT_REQUESTS if v in MODERN_PROTOCOL_VERSIONS} == MODERN_METHODS
    assert MCP_METHODS == HANDSHAKE_METHODS | MODERN_METHODS
    assert "resources/subscribe" not in MODERN_METHODS and "tools/call" in MODERN_METHODS
