"""Capability grammar for CBST tokens: parse, match and compare MCP capabilities.

This implements ``design.md`` § "Capability grammar". A *capability* names an MCP JSON-RPC
method and, for the methods that touch a named thing, the targets it may touch::

    tools/call:delete-file            the tool "delete-file"
    tools/call:git-*                  any tool whose name matches the glob
    prompts/get:summarize             the prompt "summarize"
    resources/read:file:///docs/**    reading (and subscribing to) resources under file:///docs/
    logging/setLevel                  a method without a target

Capabilities travel as OAuth scope tokens (RFC 6749 §3.3: ``1*( %x21 / %x23-5B / %x5D-7E )``),
space-separated in a scope string, so they are ASCII, contain no space, ``"`` or ``\\``, and
non-ASCII characters in URI patterns must be percent-encoded.

Grammar (``<method>`` ends at the first ``:``)::

    capability = method [ ":" target-pattern ]
    method     = segment *( "/" segment )       ; segment = [A-Za-z][A-Za-z0-9_.-]*

* ``tools/call`` and ``prompts/get`` take a *name* pattern, matched against the exact name;
  ``resources/read``, ``resources/subscribe`` and ``resources/unsubscribe`` take a *URI*
  pattern. ``resources/read:<p>`` also allows subscribing to and unsubscribing from the URIs
  ``<p>`` matches. These methods *require* a target (``tools/call:**`` allows every tool).
* Every other syntactically valid method is a target-less capability and refuses a target.
  ``parse(..., strict=True)`` (used when registering clients) also refuses a method that no
  MCP revision has (:data:`MCP_METHODS`), suggesting the closest one; the default stays
  lenient so that verifying a token never fails on a scope minted elsewhere.
  :func:`capability_warnings` flags commas (``tools/call:echo,tools/call:add`` is one tool).
* In patterns ``*`` matches any run (possibly empty) of characters within one segment: never
  ``/``, and in URI patterns never ``?`` or ``#`` either. ``**`` matches any run of any
  characters, ``/`` included. There is no other wildcard and no escape: ``***`` is an error.
* URIs are normalised before matching (RFC 3986 §6.2.2): scheme and host lower-cased,
  percent-encoding hex upper-cased, percent-encoded unreserved characters decoded, dot-segments
  removed (RFC 3986 §5.2.4), empty and default (http/https/ws/wss) ports dropped. The query and
  the fragment are kept: MCP URIs travel in the request body, so both reach the server. The
  literal parts of a URI pattern are normalised the same way when it is parsed.
  Normalisation fails closed (:func:`normalize_uri` returns ``None`` and nothing matches) for a
  URI containing an encoded ``/`` or ``\\`` (``%2F``, ``%5C``), a double-encoded ``.``, ``/``
  or ``\\`` (``%252E``...), an encoded or raw control character, a raw ``\\``, a ``.`` or
  ``..`` piece in the query or fragment (``#/../x``, ``?p=..``: lax servers resolve them as
  a path), a ``..`` segment after an empty segment (``/a//../b`` resolves
  differently on servers that collapse ``//``), a dot-segment with parameters (``..;``),
  dot-segments in a rootless path, or anything that does not parse as an absolute URI. Hence
  ``file:///docs/../etc/passwd`` is *not* under ``file:///docs/**``, nor is
  ``file:///docs-secret/x``.
* A URI pattern is ``**`` (every URI) or an absolute URI with wildcards. It may not contain
  ``**`` in its scheme or authority (``https://**.example.com`` would match
  ``https://evil.com/.example.com``; use ``https://*.example.com/**``), or a ``..`` segment
  after a wildcard.
* :func:`uri_template_pattern` turns an RFC 6570 resource template into the URI pattern of
  everything it can expand to (``{x}`` -> ``*``, ``{+x}`` and the other operators -> ``**``);
  :meth:`CapabilitySet.allows_template` asks whether a ``resources/read`` capability covers
  it (for ``completion/complete`` on a ``ref/resource``).
* Sizes are bounded: :data:`MAX_CAPABILITY_LENGTH` characters per capability,
  :data:`MAX_SCOPE_LENGTH` per scope string, :data:`MAX_CAPABILITIES` per set.

Matching is compiled once per capability at parse time into a linear-time matcher (string
prefix/suffix tests, or a bit-parallel NFA when a pattern has several wildcards) rather than a
backtracking regular expression, so a client-chosen pattern such as ``*a*a*a*a*b`` cannot make
the server's per-request check super-linear.

This module is pure standard library and never imports ``idp``.
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload
from urllib.parse import quote

__all__ = [
    "HANDSHAKE_METHODS",
    "MAX_CAPABILITIES",
    "MAX_CAPABILITY_LENGTH",
    "MAX_SCOPE_LENGTH",
    "MCP_METHODS",
    "MODERN_METHODS",
    "NAME_METHODS",
    "TARGET_METHODS",
    "URI_METHODS",
    "Capability",
    "CapabilityError",
    "CapabilitySet",
    "capability_warnings",
    "normalize_uri",
    "uri_template_pattern",
]

#: Longest capability accepted, in characters (after canonicalisation).
MAX_CAPABILITY_LENGTH = 512
#: Longest scope string accepted, in characters.
MAX_SCOPE_LENGTH = 8 * 1024
#: Most distinct capabilities in one scope / :class:`CapabilitySet`.
MAX_CAPABILITIES = 256

TOOLS_CALL = "tools/call"
PROMPTS_GET = "prompts/get"
RESOURCES_READ = "resources/read"
RESOURCES_SUBSCRIBE = "resources/subscribe"
RESOURCES_UNSUBSCRIBE = "resources/unsubscribe"

#: Methods whose target is a tool or prompt name.
NAME_METHODS: frozenset[str] = frozenset({TOOLS_CALL, PROMPTS_GET})
#: Methods whose target is a resource URI.
URI_METHODS: frozenset[str] = frozenset(
    {RESOURCES_READ, RESOURCES_SUBSCRIBE, RESOURCES_UNSUBSCRIBE}
)
#: Methods that require a target pattern; every other method takes none.
TARGET_METHODS: frozenset[str] = NAME_METHODS | URI_METHODS

#: Client-to-server request methods of the handshake generation (2024-11-05 .. 2025-11-25) and
#: of the 2026-07-28 generation, as the official SDK has them (``mcp_types.methods``
#: ``CLIENT_REQUESTS``; tasks/* are not core methods there). 2026-07-28 dropped the lifecycle
#: (``initialize``, ``ping``), ``logging/setLevel`` and the subscribe pair, and added
#: ``server/discover`` and ``subscriptions/listen``.
HANDSHAKE_METHODS: frozenset[str] = frozenset({
    "completion/complete", "initialize", "logging/setLevel", "ping", "prompts/get",
    "prompts/list", "resources/list", "resources/read", "resources/subscribe",
    "resources/templates/list", "resources/unsubscribe", "tools/call", "tools/list",
})
MODERN_METHODS: frozenset[str] = frozenset({
    "completion/complete", "prompts/get", "prompts/list", "resources/list", "resources/read",
    "resources/templates/list", "server/discover", "subscriptions/listen", "tools/call",
    "tools/list",
})
#: Every method a capability can usefully name (the strict parse refuses any other).
MCP_METHODS: frozenset[str] = HANDSHAKE_METHODS | MODERN_METHODS

# A ``resources/read`` capability also grants these methods on the same URIs.
_READ_IMPLIES = frozenset({RESOURCES_SUBSCRIBE, RESOURCES_UNSUBSCRIBE})

# ``*/list`` method -> the capability methods whose presence allows it.
_LIST_FAMILIES: dict[str, frozenset[str]] = {
    "tools/list": frozenset({TOOLS_CALL}),
    "prompts/list": frozenset({PROMPTS_GET}),
    "resources/list": URI_METHODS,
    "resources/templates/list": URI_METHODS,
}

_EXAMPLE_TARGET = {
    TOOLS_CALL: ("tool", "tools/call:delete-file", "tools/call:git-*", "tools/call:**"),
    PROMPTS_GET: ("prompt", "prompts/get:summarize", "prompts/get:code-*", "prompts/get:**"),
}

_STAR = "*"
_DSTAR = "**"
# Characters a ``*`` never matches, by target kind.
_NAME_STAR_EXCLUDED = "/"
_URI_STAR_EXCLUDED = "/?#"

_METHOD_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]*(?:/[A-Za-z][A-Za-z0-9_.\-]*)*")
_SCOPE_TOKEN_RE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 §3.3 NQCHAR
_WILDCARD_RE = re.compile(r"\*+")


class CapabilityError(ValueError):
    """A capability or scope string is malformed or too large.

    ``capability`` is the offending capability text (``None`` for errors about a whole scope),
    ``reason`` the explanation without it.
    """

    def __init__(self, reason: str, capability: str | None = None) -> None:
        self.reason = reason
        self.capability = capability
        if capability is None:
            message = reason
        else:
            shown = capability if len(capability) <= 80 else capability[:77] + "..."
            message = f"invalid capability {shown!r}: {reason}"
        super().__init__(message)


# --------------------------------------------------------------------------------------------
# URI normalisation (RFC 3986 §6.2.2, §5.2.4)
# --------------------------------------------------------------------------------------------


class _Reject(Exception):
    """Internal: a URI (or URI pattern) cannot be normalised safely."""


# Placeholders standing for wildcards while a URI pattern is normalised. Control characters
# cannot occur in a scope token, and normalisation neither encodes nor case-folds them.
_P_STAR = "\x01"
_P_DSTAR = "\x02"

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_PCT_RE = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD_PCT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Encoded "/", "\", controls and DEL: refused (fail closed).
_FORBIDDEN_PCT_RE = re.compile(r"%(?:[01][0-9A-Fa-f]|2[Ff]|5[Cc]|7[Ff])")
# Double-encoded ".", "/" and "\" (%252E, %252F, %255C): a server that decodes twice sees them.
_DOUBLE_PCT_RE = re.compile(r"%25(?:2[EeFf]|5[Cc])")
# Delimiters that split a query or fragment into the pieces a lax server might treat as path
# segments ("?/../x", "#../x", "?path=../x").
_TAIL_SPLIT_RE = re.compile(r"[/?#&=;]")
_FORBIDDEN_RAW_RE = re.compile(r"[\x00-\x1f\x7f\\]")
_FORBIDDEN_RAW_PATTERN_RE = re.compile(r"[\x00\x03-\x1f\x7f\\]")
# Characters a URI may not contain raw but that are unambiguous to percent-encode (space,
# non-ASCII — the RFC 3987 §3.1 IRI-to-URI mapping — and the RFC 3986-excluded printables).
_ENCODE_RE = re.compile(r'[^\x21-\x7e]|["<>^`{|}]')
_ENCODE_PATTERN_RE = re.compile(r'[^\x01\x02\x21-\x7e]|["<>^`{|}]')
# RFC 3986 Appendix B, with the scheme made mandatory (only absolute URIs are resources).
_URI_RE = re.compile(r"([^:/?#]+):(//([^/?#]*))?([^?#]*)(\?[^#]*)?(#.*)?", re.DOTALL)
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_SCHEME_PATTERN_RE = re.compile(r"[A-Za-z\x01\x02][A-Za-z0-9+.\-\x01\x02]*")
_HOSTPORT_RE = re.compile(r"(.*):([0-9]*)", re.DOTALL)
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def _encode_char(match: re.Match[str]) -> str:
    return quote(match.group(0), safe="")


def _pct_normalize(component: str) -> str:
    """Decode percent-encoded unreserved characters, upper-case the hex of the rest."""

    def repl(match: re.Match[str]) -> str:
        hexdigits = match.group(1)
        char = chr(int(hexdigits, 16))
        return char if char in _UNRESERVED else "%" + hexdigits.upper()

    return _PCT_RE.sub(repl, component) if "%" in component else component


def _upper_pct(component: str) -> str:
    return _PCT_RE.sub(lambda m: "%" + m.group(1).upper(), component)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 for an absolute path (starting with ``/``), failing closed."""
    segments = path[1:].split("/")
    if "." not in segments and ".." not in segments and ".;" not in path:
        return path
    out: list[str] = []
    seen_empty = seen_wildcard = False
    last = len(segments) - 1
    for i, segment in enumerate(segments):
        if ";" in segment and segment.partition(";")[0] in (".", ".."):
            raise _Reject("has a dot-segment with parameters ('..;'), which some servers resolve")
        if segment == "..":
            if seen_empty:
                raise _Reject("a '..' segment after an empty segment ('//') is ambiguous")
            if seen_wildcard:
                raise _Reject("a '..' segment after a wildcard is ambiguous")
            if out:
                out.pop()
            if i == last:
                out.append("")
        elif segment == ".":
            if i == last:
                out.append("")
        else:
            out.append(segment)
            if segment == "" and i != last:
                seen_empty = True
            if _P_STAR in segment or _P_DSTAR in segment:
                seen_wildcard = True
    return "/" + "/".join(out)


def _normalize(uri: str, *, pattern: bool = False) -> str:
    """Normalise ``uri`` or raise :class:`_Reject`. ``pattern`` lets wildcard placeholders by."""
    if (_FORBIDDEN_RAW_PATTERN_RE if pattern else _FORBIDDEN_RAW_RE).search(uri):
        raise _Reject("contains a control character or a backslash")
    if _BAD_PCT_RE.search(uri):
        raise _Reject("contains a '%' not followed by two hex digits")
    if _FORBIDDEN_PCT_RE.search(uri):
        raise _Reject("contains an encoded '/', '\\' or control character (%2F, %5C, %00-%1F)")
    if _DOUBLE_PCT_RE.search(uri):
        raise _Reject("contains a double-encoded '.', '/' or '\\' (%252E, %252F, %255C)")
    try:
        uri = (_ENCODE_PATTERN_RE if pattern else _ENCODE_RE).sub(_encode_char, uri)
    except UnicodeError as exc:  # lone surrogates
        raise _Reject("contains characters that cannot be encoded as UTF-8") from exc
    match = _URI_RE.fullmatch(uri)
    if match is None:
        raise _Reject("is not an absolute URI (scheme:...)")
    scheme, authority, path, query, fragment = match.group(1, 3, 4, 5, 6)
    if not (_SCHEME_PATTERN_RE if pattern else _SCHEME_RE).fullmatch(scheme):
        raise _Reject(f"has an invalid scheme {scheme!r}")
    if pattern and (_P_DSTAR in scheme or (authority is not None and _P_DSTAR in authority)):
        raise _Reject(
            "uses '**' in the scheme or authority, where it could match '/' and move the host; "
            "use '*' there (https://*.example.com/**)"
        )
    scheme = scheme.lower()

    result = [scheme, ":"]
    if authority is not None:
        userinfo, at, hostport = authority.rpartition("@")
        hostport = _upper_pct(_pct_normalize(hostport).lower())
        port_match = _HOSTPORT_RE.fullmatch(hostport)
        if port_match is not None:
            host, port = port_match.groups()
            if port == "" or _DEFAULT_PORTS.get(scheme) == port:
                hostport = host
        result += ["//", _pct_normalize(userinfo), at, hostport]

    path = _pct_normalize(path)
    if path.startswith("/"):
        path = _remove_dot_segments(path)
    elif path and any(seg.partition(";")[0] in (".", "..") for seg in path.split("/")):
        raise _Reject("has dot-segments in a rootless path")
    if authority is not None and not path and scheme in _DEFAULT_PORTS:
        path = "/"  # RFC 3986 §6.2.3: http://example.com == http://example.com/
    result.append(path)
    # MCP resource URIs travel in the request body, so the query and the fragment reach the
    # server too: they are kept, and refused if they hold a dot-segment a lax server could
    # resolve as a path ("readme.md#/../../private/x").
    for tail in (query, fragment):
        if tail is not None:
            tail = _pct_normalize(tail)
            if any(piece in (".", "..") for piece in _TAIL_SPLIT_RE.split(tail[1:])):
                raise _Reject("has a dot-segment ('.' or '..') in its query or fragment, which "
                              "servers that resolve URIs loosely treat as a path")
            result.append(tail)
    return "".join(result)


def normalize_uri(uri: str) -> str | None:
    """Return the normal form of ``uri`` (RFC 3986 §6.2.2), or ``None`` to fail closed.

    Scheme and host are lower-cased, percent-encoding hex is upper-cased, percent-encoded
    unreserved characters are decoded, dot-segments are removed (RFC 3986 §5.2.4), empty and
    default ports (http, https, ws, wss) are dropped and an empty http(s)/ws(s) path becomes
    ``/``; query and fragment are kept (both reach the server). Spaces, non-ASCII (as UTF-8) and the other characters
    RFC 3986 excludes (``"<>^`{|}``) are percent-encoded.

    ``None`` is returned for anything that is not an absolute URI, or that contains an encoded
    ``/`` or ``\\`` (or a double-encoded ``.``, ``/``, ``\\``), a raw ``\\``, a raw or encoded
    control character, a malformed ``%`` escape, a ``.``/``..`` piece in the query or fragment,
    a ``..`` segment after an empty segment, or dot-segments in a rootless path.
    """
    if not isinstance(uri, str):
        return None
    try:
        return _normalize(uri)
    except _Reject:
        return None


# --------------------------------------------------------------------------------------------
# URI templates (RFC 6570), for completion/complete on a resource template
# --------------------------------------------------------------------------------------------

_EXPRESSION_RE = re.compile(r"\{([^{}]*)\}")
_VARSPEC_RE = re.compile(r"[A-Za-z0-9_%][A-Za-z0-9_.%]*(?::[1-9][0-9]{0,3}|\*)?")
# Operators whose expansion stays within one segment: simple ("{x}") and label ("{.x}")
# expansion percent-encode every reserved character, "/", "?" and "#" included.
_SEGMENT_OPERATORS = ("", ".")
_ANY_OPERATORS = "+#/;?&"


def uri_template_pattern(template: str) -> str | None:
    """A URI pattern matching every URI the RFC 6570 ``template`` can expand to, or ``None``.

    ``{x}`` and ``{.x}`` become ``*`` (their values cannot contain ``/``, ``?`` or ``#``);
    ``{+x}``, ``{#x}``, ``{/x}``, ``{;x}``, ``{?x}`` and ``{&x}`` become ``**``. The result is
    canonical (``file:///docs/{name}`` -> ``file:///docs/*``). ``None`` when no capability can
    express it: a malformed template, a literal ``*``, ``**`` in the host, a ``..`` after an
    expression, or anything else a URI pattern refuses.
    """
    if not isinstance(template, str):
        return None
    out: list[str] = []
    pos = 0
    for match in _EXPRESSION_RE.finditer(template):
        literal = template[pos : match.start()]
        if "{" in literal or "}" in literal or _STAR in literal:
            return None
        if literal:
            out.append(literal)
        body = match.group(1)
        operator = body[:1] if body[:1] in _ANY_OPERATORS or body[:1] == "." else ""
        specs = body[len(operator) :].split(",")
        if not all(_VARSPEC_RE.fullmatch(spec) for spec in specs):
            return None
        wildcard = _STAR if operator in _SEGMENT_OPERATORS else _DSTAR
        # Adjacent expressions: "*" "*" is still one segment; anything with "**" is "**".
        if out and out[-1] in (_STAR, _DSTAR) and not literal:
            out[-1] = _DSTAR if _DSTAR in (out[-1], wildcard) else _STAR
        else:
            out.append(wildcard)
        pos = match.end()
    tail = template[pos:]
    if "{" in tail or "}" in tail or _STAR in tail:
        return None
    out.append(tail)
    try:
        return Capability(RESOURCES_READ, "".join(out)).pattern
    except CapabilityError:
        return None


# --------------------------------------------------------------------------------------------
# Patterns
# --------------------------------------------------------------------------------------------

_Tokens = tuple[str, ...]  # one-character literals, "*" and "**"
_Matcher = Callable[[str], bool]


def _tokenize(pattern: str) -> _Tokens:
    tokens: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        if pattern.startswith(_DSTAR, i):
            tokens.append(_DSTAR)
            i += 2
        elif pattern[i] == _STAR:
            tokens.append(_STAR)
            i += 1
        else:
            tokens.append(pattern[i])
            i += 1
    return tuple(tokens)


class _Nfa:
    """Bit-parallel NFA for a token sequence: linear in the target, no backtracking."""

    __slots__ = ("_accept", "_dstar", "_excluded", "_lit", "_start", "_wild")

    def __init__(self, tokens: _Tokens, excluded: str) -> None:
        lit: dict[str, int] = {}
        star = dstar = 0
        for i, token in enumerate(tokens):
            bit = 1 << i
            if token == _STAR:
                star |= bit
            elif token == _DSTAR:
                dstar |= bit
            else:
                lit[token] = lit.get(token, 0) | bit
        self._lit = lit
        self._dstar = dstar
        self._wild = star | dstar
        self._excluded = frozenset(excluded)
        self._accept = 1 << len(tokens)
        # Wildcards are never adjacent ("***" is refused), so one closure step suffices.
        self._start = 1 | ((1 & self._wild) << 1)

    def __call__(self, text: str) -> bool:
        lit, dstar, wild, excluded = self._lit, self._dstar, self._wild, self._excluded
        state = self._start
        for char in text:
            state = ((state & lit.get(char, 0)) << 1) | (
                state & (dstar if char in excluded else wild)
            )
            state |= (state & wild) << 1
            if not state:
                return False
        return bool(state & self._accept)


def _compile(tokens: _Tokens, excluded: str) -> _Matcher:
    wildcards = [i for i, token in enumerate(tokens) if token in (_STAR, _DSTAR)]
    if not wildcards:
        literal = "".join(tokens)
        return lambda text: text == literal
    if len(wildcards) > 1:
        return _Nfa(tokens, excluded)
    i = wildcards[0]
    prefix, suffix = "".join(tokens[:i]), "".join(tokens[i + 1 :])
    minimum = len(prefix) + len(suffix)
    if tokens[i] == _DSTAR:
        return lambda text: (
            len(text) >= minimum and text.startswith(prefix) and text.endswith(suffix)
        )
    forbidden = re.compile("[" + re.escape(excluded) + "]")
    start = len(prefix)

    def match_star(text: str) -> bool:
        return (
            len(text) >= minimum
            and text.startswith(prefix)
            and text.endswith(suffix)
            and forbidden.search(text, start, len(text) - len(suffix)) is None
        )

    return match_star


def _contains(allowed: _Tokens, requested: _Tokens, excluded: str) -> bool:
    """Sound test that L(requested) ⊆ L(allowed).

    Dynamic programming over the two token sequences, from the end: a literal of
    ``requested`` is absorbed by the same literal, by ``**``, or by ``*`` unless it is an
    excluded character; a ``*`` of ``requested`` only by ``*`` or ``**``; a ``**`` only by
    ``**``. Any wildcard of ``allowed`` may also match the empty string.
    """
    if allowed == requested or allowed == (_DSTAR,):
        return True
    m = len(allowed)
    # nxt[j]: requested[i+1:] ⊆ allowed[j:]; cur[j]: requested[i:] ⊆ allowed[j:].
    nxt = [False] * (m + 1)
    nxt[m] = True
    for j in range(m - 1, -1, -1):
        nxt[j] = allowed[j] in (_STAR, _DSTAR) and nxt[j + 1]
    for r in reversed(requested):
        cur = [False] * (m + 1)
        for j in range(m - 1, -1, -1):
            a = allowed[j]
            if a == _DSTAR:
                ok = nxt[j] or cur[j + 1]
            elif a == _STAR:
                ok = cur[j + 1] or (r != _DSTAR and (r == _STAR or r not in excluded) and nxt[j])
            else:
                ok = r == a and nxt[j + 1]
            cur[j] = ok
        nxt = cur
    return nxt[0]


def _canonical_uri_pattern(capability: str, pattern: str) -> str:
    if pattern == _DSTAR:
        return pattern
    placeholders = _WILDCARD_RE.sub(
        lambda m: _P_DSTAR if len(m.group(0)) == 2 else _P_STAR, pattern
    )
    try:
        normal = _normalize(placeholders, pattern=True)
    except _Reject as exc:
        hint = " (write e.g. 'resources/read:file:///docs/**', or '**' for every URI)"
        raise CapabilityError(f"the URI pattern {exc}{hint}", capability) from None
    canonical = normal.replace(_P_DSTAR, _DSTAR).replace(_P_STAR, _STAR)
    if "***" in canonical:  # cannot happen today; keep the round trip exact regardless
        raise CapabilityError("the URI pattern normalises to adjacent wildcards", capability)
    return canonical


def _bad_char_reason(text: str) -> str | None:
    if _SCOPE_TOKEN_RE.fullmatch(text):
        return None
    for char in text:
        if char == " ":
            return "contains a space (capabilities are separated by spaces in a scope)"
        if char == '"':
            return "contains '\"', which OAuth scope tokens cannot carry (RFC 6749 §3.3)"
        if char == "\\":
            return "contains '\\', which OAuth scope tokens cannot carry (RFC 6749 §3.3)"
        if ord(char) > 0x7E:
            return (
                f"contains the non-ASCII character {char!r}; scope tokens are ASCII "
                "(percent-encode it in a URI, RFC 3986 §2.1)"
            )
        if not 0x21 <= ord(char) <= 0x7E:
            return f"contains the control character {char!r}"
    return "contains a character OAuth scope tokens cannot carry"  # pragma: no cover


def _unknown_method_reason(method: str) -> str:
    close = difflib.get_close_matches(method, sorted(MCP_METHODS), n=1, cutoff=0.6)
    if not close:  # case slips ("logging/setlevel") score low on raw text
        folded = {m.lower(): m for m in MCP_METHODS}
        close = [folded[m] for m in difflib.get_close_matches(method.lower(), sorted(folded), n=1)]
    if close:
        return f"{method!r} is not an MCP method; did you mean {close[0]!r}?"
    return f"{method!r} is not an MCP method (one of {', '.join(sorted(MCP_METHODS))})"


def capability_warnings(capabilities: Iterable[Capability]) -> list[str]:
    """Warnings for capabilities that parse but are almost certainly not what was meant.

    A ``,`` is legal in a name or URI pattern, so ``tools/call:echo,tools/call:add`` is one
    capability for a tool named ``echo,tools/call:add``; scopes separate capabilities by
    spaces. The warning suggests the space-separated spelling when every piece is valid.
    """
    warnings = []
    for cap in capabilities:
        text = str(cap)
        if "," not in text:
            continue
        warning = f"{text!r} contains ','; capabilities are separated by spaces, not commas"
        pieces = text.split(",")
        try:
            for piece in pieces:
                Capability.parse(piece, strict=True)
        except CapabilityError:
            pass
        else:
            warning += f" (did you mean {' '.join(pieces)!r}?)"
        warnings.append(warning)
    return warnings


def _missing_target_reason(method: str) -> str:
    if method in _EXAMPLE_TARGET:
        kind, exact, glob, every = _EXAMPLE_TARGET[method]
        return (
            f"{method!r} needs a target: name a {kind} ({exact!r}), a glob ({glob!r}) "
            f"or every {kind} ({every!r})"
        )
    return (
        f"{method!r} needs a target: a URI pattern ('{method}:file:///docs/**') "
        f"or every resource ('{method}:**')"
    )


# --------------------------------------------------------------------------------------------
# Capability
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capability:
    """One capability: an MCP method and, for target-bearing methods, a target pattern.

    Construct with :meth:`parse` (or directly, ``Capability("tools/call", "git-*")``; both
    validate). ``pattern`` holds the canonical pattern — for URI methods its literal parts are
    normalised — so equal capabilities compare and hash equal.
    """

    method: str
    pattern: str | None = None
    _tokens: _Tokens = field(init=False, repr=False, compare=False)
    _match: _Matcher | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        method, pattern = self.method, self.pattern
        if not isinstance(method, str) or (pattern is not None and not isinstance(pattern, str)):
            raise CapabilityError("method and pattern must be strings", repr((method, pattern)))
        text = method if pattern is None else f"{method}:{pattern}"
        if len(text) > MAX_CAPABILITY_LENGTH:
            raise CapabilityError(
                f"too long ({len(text)} > {MAX_CAPABILITY_LENGTH} characters)", text
            )
        if not method:
            raise CapabilityError("empty method", text)
        reason = _bad_char_reason(text)
        if reason is not None:
            raise CapabilityError(reason, text)
        if not _METHOD_RE.fullmatch(method):
            raise CapabilityError(
                f"{method!r} is not an MCP method name (segments [A-Za-z][A-Za-z0-9_.-]* "
                "joined by '/', e.g. 'tools/call')",
                text,
            )
        if pattern is None:
            if method in TARGET_METHODS:
                raise CapabilityError(_missing_target_reason(method), text)
            object.__setattr__(self, "_tokens", ())
            object.__setattr__(self, "_match", None)
            return
        if method not in TARGET_METHODS:
            if method not in MCP_METHODS:
                raise CapabilityError(_unknown_method_reason(method), text)
            raise CapabilityError(
                f"{method!r} takes no target; only {', '.join(sorted(TARGET_METHODS))} do "
                f"(write just {method!r})",
                text,
            )
        if not pattern:
            raise CapabilityError("empty target pattern; " + _missing_target_reason(method), text)
        if "***" in pattern:
            raise CapabilityError(
                "'***' is not a wildcard: use '*' (within a segment) or '**' (across segments)",
                text,
            )
        if method in URI_METHODS:
            pattern = _canonical_uri_pattern(text, pattern)
            if len(method) + 1 + len(pattern) > MAX_CAPABILITY_LENGTH:
                raise CapabilityError(
                    f"too long once normalised (> {MAX_CAPABILITY_LENGTH} characters)", text
                )
            object.__setattr__(self, "pattern", pattern)
        tokens = _tokenize(pattern)
        object.__setattr__(self, "_tokens", tokens)
        object.__setattr__(self, "_match", _compile(tokens, self._excluded))

    def __reduce__(self) -> tuple[type[Capability], tuple[str, str | None]]:
        return (Capability, (self.method, self.pattern))

    @property
    def _excluded(self) -> str:
        return _URI_STAR_EXCLUDED if self.method in URI_METHODS else _NAME_STAR_EXCLUDED

    @classmethod
    def parse(cls, text: str, *, strict: bool = False) -> Capability:
        """Parse one capability (a scope token). Raises :class:`CapabilityError`.

        ``strict`` also refuses a method no MCP protocol revision has (:data:`MCP_METHODS`),
        with a "did you mean": for registering clients, where a typo (``tools/cal``) would
        otherwise be stored as a capability that allows nothing. Verifying a token stays
        lenient, so a scope minted elsewhere never makes verification fail.
        """
        if not isinstance(text, str):
            raise CapabilityError("a capability must be a string", repr(text))
        if not text:
            raise CapabilityError("empty capability", text)
        if len(text) > MAX_CAPABILITY_LENGTH:
            raise CapabilityError(
                f"too long ({len(text)} > {MAX_CAPABILITY_LENGTH} characters)", text
            )
        method, colon, pattern = text.partition(":")
        if strict and method not in MCP_METHODS and _METHOD_RE.fullmatch(method):
            raise CapabilityError(_unknown_method_reason(method), text)
        return cls(method, pattern if colon else None)

    def __str__(self) -> str:
        return self.method if self.pattern is None else f"{self.method}:{self.pattern}"

    def _grants(self, method: str) -> bool:
        return method == self.method or (self.method == RESOURCES_READ and method in _READ_IMPLIES)

    def _matches_prepared(self, target: str | None) -> bool:
        # ``target`` is already normalised for URI methods (None if it failed closed).
        if self._match is None:
            return True
        return target is not None and self._match(target)

    def matches(self, method: str, target: str | None = None) -> bool:
        """Whether this capability allows calling ``method`` on ``target``.

        ``target`` is the tool/prompt name or the resource URI (normalised here; a URI that
        fails closed matches nothing). Target-bearing capabilities never match a missing
        target; target-less capabilities ignore ``target``.
        """
        if not self._grants(method):
            return False
        if self._match is None:
            return True
        if not isinstance(target, str):
            return False
        if method in URI_METHODS:
            normal = normalize_uri(target)
            return normal is not None and self._match(normal)
        return self._match(target)

    def covers(self, other: Capability | str) -> bool:
        """Whether everything ``other`` allows is allowed by this capability (sound test).

        Same method (or ``resources/read`` covering ``resources/subscribe`` and
        ``resources/unsubscribe``), and the language of ``other``'s pattern is a subset of
        ours: ``tools/call:**`` covers ``tools/call:git-*`` covers ``tools/call:git-log``.
        """
        if isinstance(other, str):
            other = Capability.parse(other)
        if not self._grants(other.method):
            return False
        if self._match is None:
            return True
        return _contains(self._tokens, other._tokens, self._excluded)


# --------------------------------------------------------------------------------------------
# CapabilitySet
# --------------------------------------------------------------------------------------------

_T = TypeVar("_T")


class CapabilitySet:
    """An immutable, ordered set of capabilities — the ``scope`` of a token or a client.

    Duplicates (after canonicalisation) are collapsed, first occurrence kept. At most
    :data:`MAX_CAPABILITIES` capabilities, and its scope string at most
    :data:`MAX_SCOPE_LENGTH` characters.
    """

    __slots__ = ("_caps", "_frozen", "_index", "_scope")

    _caps: tuple[Capability, ...]
    _frozen: frozenset[Capability]
    _index: dict[str, tuple[Capability, ...]]
    _scope: str

    def __init__(self, capabilities: Iterable[Capability | str] = ()) -> None:
        unique: dict[Capability, None] = {}
        for item in capabilities:
            cap = item if isinstance(item, Capability) else Capability.parse(item)
            unique[cap] = None
            if len(unique) > MAX_CAPABILITIES:
                raise CapabilityError(f"too many capabilities (> {MAX_CAPABILITIES})")
        caps = tuple(unique)
        scope = " ".join(map(str, caps))
        if len(scope) > MAX_SCOPE_LENGTH:
            raise CapabilityError(f"scope too long ({len(scope)} > {MAX_SCOPE_LENGTH} characters)")
        index: dict[str, list[Capability]] = {}
        for cap in caps:
            index.setdefault(cap.method, []).append(cap)
            if cap.method == RESOURCES_READ:
                for implied in _READ_IMPLIES:
                    index.setdefault(implied, []).append(cap)
        object.__setattr__(self, "_caps", caps)
        object.__setattr__(self, "_frozen", frozenset(caps))
        object.__setattr__(self, "_index", {k: tuple(v) for k, v in index.items()})
        object.__setattr__(self, "_scope", scope)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("CapabilitySet is immutable")

    @classmethod
    def parse(cls, scope: str, *, strict: bool = False) -> CapabilitySet:
        """Parse an OAuth scope string (capabilities separated by spaces).

        Runs of spaces and leading/trailing spaces are tolerated; ``""`` is the empty set.
        Raises :class:`CapabilityError` on any malformed capability or an oversize scope, and
        with ``strict`` on a method MCP does not have (see :meth:`Capability.parse`).
        """
        if not isinstance(scope, str):
            raise CapabilityError("a scope must be a string")
        if len(scope) > MAX_SCOPE_LENGTH:
            raise CapabilityError(f"scope too long ({len(scope)} > {MAX_SCOPE_LENGTH} characters)")
        return cls(Capability.parse(token, strict=strict) for token in scope.split(" ") if token)

    @classmethod
    def from_iterable(cls, capabilities: Iterable[Capability | str]) -> CapabilitySet:
        """Build a set from capabilities or capability strings (validated, deduplicated)."""
        return cls(capabilities)

    def __iter__(self) -> Iterator[Capability]:
        return iter(self._caps)

    def __len__(self) -> int:
        return len(self._caps)

    def __contains__(self, item: object) -> bool:
        """Exact membership (canonical form); see :meth:`covers` for "is within"."""
        if isinstance(item, str):
            try:
                item = Capability.parse(item)
            except CapabilityError:
                return False
        return isinstance(item, Capability) and item in self._frozen

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CapabilitySet):
            return NotImplemented
        return self._frozen == other._frozen

    def __hash__(self) -> int:
        return hash(self._frozen)

    def __repr__(self) -> str:
        return f"CapabilitySet.parse({self._scope!r})"

    def to_scope(self) -> str:
        """The canonical scope string: capabilities in order, separated by single spaces."""
        return self._scope

    def allows(self, method: str, target: str | None = None) -> bool:
        """Whether some capability allows ``method`` on ``target`` (name or resource URI).

        ``*/list`` methods are decided by :meth:`allows_list`; methods that need only a valid
        token (``initialize``, ``ping``, notifications) are the caller's policy, not this one.
        """
        caps = self._index.get(method)
        if not caps:
            return False
        prepared = self._prepare(method, target)
        return any(cap._matches_prepared(prepared) for cap in caps)

    def allows_list(self, list_method: str) -> bool:
        """Whether a ``*/list`` method is allowed: ``tools/list`` with any ``tools/call``
        capability, ``prompts/list`` with any ``prompts/get``, ``resources/list`` and
        ``resources/templates/list`` with any resources capability — or with an explicit
        target-less capability for the list method itself."""
        family = _LIST_FAMILIES.get(list_method)
        if family is not None and any(method in self._index for method in family):
            return True
        return self.allows(list_method)

    def allows_template(self, template: str) -> bool:
        """Whether every URI the resource template (RFC 6570) can expand to is readable:
        some ``resources/read`` capability covers :func:`uri_template_pattern` of it.

        For ``completion/complete`` on a ``ref/resource``, whose completions reveal values of
        the template's variables. A template no pattern can express is allowed only by
        ``resources/read:**``.
        """
        caps = [c for c in self._index.get(RESOURCES_READ, ()) if c.method == RESOURCES_READ]
        pattern = uri_template_pattern(template)
        if pattern is None:
            return any(cap.pattern == _DSTAR for cap in caps)
        wanted = Capability(RESOURCES_READ, pattern)
        return any(cap.covers(wanted) for cap in caps)

    @overload
    def filter(self, method: str, targets: Iterable[str]) -> list[str]: ...

    @overload
    def filter(
        self, method: str, targets: Iterable[_T], *, key: Callable[[_T], str | None]
    ) -> list[_T]: ...

    def filter(
        self,
        method: str,
        targets: Iterable[Any],
        *,
        key: Callable[[Any], str | None] | None = None,
    ) -> list[Any]:
        """Keep the targets this set allows for ``method``, in order.

        For filtering a list result pass the *call* method: ``filter("tools/call", names)``
        for ``tools/list``, ``filter("resources/read", uris)`` for ``resources/list``.
        ``key`` extracts the name/URI from richer items, e.g. ``key=lambda t: t["name"]``.
        """
        caps = self._index.get(method)
        if not caps:
            return []
        kept = []
        for item in targets:
            target = key(item) if key is not None else item
            prepared = self._prepare(method, target)
            if any(cap._matches_prepared(prepared) for cap in caps):
                kept.append(item)
        return kept

    @staticmethod
    def required_for(method: str, target: str | None = None) -> str:
        """The narrowest capability string that allows ``method`` on ``target``.

        For ``insufficient_scope`` challenges (RFC 6750 §3.1): ``tools/call:delete-file``,
        ``resources/read:file:///docs/a.md`` (normalised), ``logging/setLevel``. Raises
        :class:`CapabilityError` if the target is missing, does not normalise, or cannot be
        written as a literal capability (it contains ``*`` or characters a scope token
        cannot carry).
        """
        if method not in TARGET_METHODS:
            return str(Capability(method))
        if not isinstance(target, str) or not target:
            raise CapabilityError(_missing_target_reason(method), method)
        if method in URI_METHODS:
            normal = normalize_uri(target)
            if normal is None:
                raise CapabilityError(
                    "the target URI cannot be normalised (fails closed)", f"{method}:{target}"
                )
            target = normal
        if _STAR in target:
            raise CapabilityError(
                "the target contains '*', which a capability cannot express literally",
                f"{method}:{target}",
            )
        return str(Capability(method, target))

    def covers(self, other: Iterable[Capability | str]) -> bool:
        """Whether every capability of ``other`` is within one of ours (see
        :meth:`Capability.covers`) — e.g. whether a requested scope is a subset of a
        client's allowed capabilities."""
        return not self.uncovered(other)

    def uncovered(self, other: Iterable[Capability | str]) -> list[Capability]:
        """The capabilities of ``other`` not within any of ours, in order."""
        result = []
        for item in other:
            cap = item if isinstance(item, Capability) else Capability.parse(item)
            candidates = self._index.get(cap.method, ())
            if not any(mine.covers(cap) for mine in candidates):
                result.append(cap)
        return result

    @staticmethod
    def _prepare(method: str, target: object) -> str | None:
        if not isinstance(target, str):
            return None
        return normalize_uri(target) if method in URI_METHODS else target
