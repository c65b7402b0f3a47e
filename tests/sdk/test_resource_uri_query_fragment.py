"""Resource URIs whose query or fragment could steer a loosely resolving server (issue 6, defect 2).

MCP resource URIs travel in the JSON-RPC body, so the query *and the fragment* reach the
server verbatim. A server that resolves ``file:///docs/readme.md#/../../private/x`` as a path
would serve ``/private/x``; the matcher must therefore refuse (fail closed) whatever it cannot
match safely instead of dropping or ignoring it (docs/capabilities.md § Fail closed).
"""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdk.capabilities import Capability, CapabilityError, CapabilitySet, normalize_uri

DOCS = CapabilitySet.parse("resources/read:file:///docs/**")

ATTACKS = [
    "file:///docs/readme.md#/../../private/x",
    "file:///docs/readme.md#../../private/x",
    "file:///docs/readme.md?/../../private/x",
    "file:///docs/readme.md?x=/../../private/x",
    "file:///docs/readme.md?..",
    "file:///docs/readme.md?a=..&b=1",
    "file:///docs/readme.md#..",
    "file:///docs/readme.md#/./x",
    "file:///docs/readme.md?/%2e%2e/%2E%2E/private/x",  # encoded dot-segments in the query
    "file:///docs/readme.md#%2e%2e/private/x",
    "file:///docs/readme.md?.%2e/private/x",
    "file:///docs/%252e%252e/private/x",  # double-encoded: a second decoding gives %2e%2e
    "file:///docs/a%252Fb",  # double-encoded '/'
    "file:///docs/a%255cb",  # double-encoded '\'
    "file:///docs/readme.md?%2F..%2F",  # encoded slash
    "file:///docs/readme.md#%5C..%5C",  # encoded backslash
    "file:///docs/readme.md?\\..\\private",  # raw backslash
]


@pytest.mark.parametrize("uri", ATTACKS)
def test_dot_segments_in_query_or_fragment_fail_closed(uri: str) -> None:
    assert normalize_uri(uri) is None
    assert not DOCS.allows("resources/read", uri)
    assert not CapabilitySet.parse("resources/read:**").allows("resources/read", uri)
    assert DOCS.filter("resources/read", [uri]) == []


@pytest.mark.parametrize(
    ("pattern", "uri", "allowed"),
    [
        ("file:///docs/**", "file:///docs/readme.md", True),
        ("file:///docs/**", "file:///docs/readme.md?v=2", True),
        ("file:///docs/**", "file:///docs/readme.md#intro", True),
        ("file:///docs/**", "file:///docs/a.md?range=1..3", True),  # '..' inside a value
        ("file:///docs/**", "file:///docs/a.md#sec/intro.md", True),
        # the fragment reaches the server, so it is part of what is matched: an exact pattern
        # or a '*' (which never crosses '#') does not stretch to a URI with a fragment
        ("file:///docs/readme.md", "file:///docs/readme.md#x", False),
        ("file:///docs/*", "file:///docs/readme.md#x", False),
    ],
)
def test_benign_queries_and_fragments_are_matched_as_part_of_the_uri(pattern: str, uri: str, allowed: bool) -> None:
    assert Capability.parse(f"resources/read:{pattern}").matches("resources/read", uri) is allowed


def test_the_fragment_is_kept_in_the_normal_form() -> None:
    assert normalize_uri("FILE:///docs/a.md#Intro%7e") == "file:///docs/a.md#Intro~"


@pytest.mark.parametrize("pattern", ["file:///docs/a?x=..", "file:///docs/a?/../**", "file:///docs/%252e%252e/**"])
def test_patterns_with_ambiguous_queries_are_refused(pattern: str) -> None:
    with pytest.raises(CapabilityError):
        Capability.parse(f"resources/read:{pattern}")


def _loose_paths(uri: str) -> list[str]:
    """Paths that lax servers derive from a file: URI: query/fragment kept as part of the path,
    backslashes as slashes, percent-decoding once or twice."""
    from urllib.parse import unquote

    rest = uri[len("file://"):]
    out = []
    for decoded in (rest, unquote(rest), unquote(unquote(rest))):
        for variant in (decoded, decoded.replace("\\", "/")):
            out.append(posixpath.normpath(variant))
    return out


_piece = st.sampled_from(
    ["..", ".", "%2e%2e", "%2E.", "%252e%252e", "private", "x", "", "%2f", "%5c", "\\", "a=..", "&"])


@settings(max_examples=300, deadline=None)
@given(tail=st.lists(_piece, max_size=6), sep=st.sampled_from(["?", "#", "?/", "#/", "?a=1#"]))
def test_no_allowed_uri_resolves_outside_the_prefix_on_a_loose_server(tail: list[str], sep: str) -> None:
    uri = "file:///docs/readme.md" + sep + "/".join(tail)
    if DOCS.allows("resources/read", uri):
        for path in _loose_paths(uri):
            assert path.startswith("/docs/"), (uri, path)
