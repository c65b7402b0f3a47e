"""JSON-RPC messages of the MCP streamable-HTTP transport, as the middleware judges them.

* :func:`parse_messages` — strict JSON-RPC 2.0 shape checks on a POST body (one message or a
  batch), raising :class:`RPCRefusal` (an HTTP status plus a JSON-RPC error) on anything else.
* :func:`check_routing_headers` — the 2026-07-28 generation mirrors the body in
  ``Mcp-Method``/``Mcp-Name``/``MCP-Protocol-Version`` headers; a header that disagrees with
  the body is refused (HTTP 400, ``HEADER_MISMATCH``). Decisions are always taken on the body,
  never on the headers (notes/mcp-protocol.md).
* :func:`check_methods` (run by :func:`check_routing`) — a method the request's protocol
  revision does not have gets the protocol's answer, ``-32601`` (HTTP 404 in 2026-07-28), not
  a step-up challenge for a capability that cannot exist.
* :func:`required_capability` — what a message needs (design.md § Capability grammar).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..capabilities import (
    HANDSHAKE_METHODS,
    MODERN_METHODS,
    PROMPTS_GET,
    RESOURCES_READ,
    URI_METHODS,
    CapabilityError,
    CapabilitySet,
    uri_template_pattern,
)
from ..errors import CBSTError

__all__ = [
    "LIST_FILTERS",
    "Message",
    "RPCRefusal",
    "check_methods",
    "check_routing_headers",
    "parse_messages",
    "required_capability",
]

# JSON-RPC 2.0 and MCP error codes, and the protocol versions: one definition, in sdk.mcp_protocol.
from .. import mcp_protocol as _protocol

PARSE_ERROR = _protocol.PARSE_ERROR
INVALID_REQUEST = _protocol.INVALID_REQUEST
INVALID_PARAMS = _protocol.INVALID_PARAMS
HEADER_MISMATCH = _protocol.HEADER_MISMATCH
HANDSHAKE_VERSIONS = _protocol.HANDSHAKE_VERSIONS
PROTOCOL_VERSION_META_KEY = _protocol.META_PROTOCOL_VERSION

#: CBST: implementation-defined codes (-32000..-32019 band; -32000/-32001 are SDK-internal,
#: -32002 is retired). One code per kind of refusal so clients can tell them apart.
UNAUTHORIZED = -32005
FORBIDDEN = -32003
RATE_LIMITED = -32004
UNAVAILABLE = -32006

#: Methods that need only a valid token.
OPEN_METHODS = frozenset({"initialize", "ping", "server/discover"})
#: Body field mirrored in ``Mcp-Name`` (mcp.shared.inbound.NAME_BEARING_METHODS), and the
#: target of the capability check.
NAME_FIELDS = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
    "resources/subscribe": "uri",
    "resources/unsubscribe": "uri",
}
_MIRRORED_NAME = frozenset({"tools/call", "prompts/get", "resources/read"})
#: list method -> (result member, item key, call method the items are filtered by)
LIST_FILTERS: dict[str, tuple[str, str, str]] = {
    "tools/list": ("tools", "name", "tools/call"),
    "prompts/list": ("prompts", "name", "prompts/get"),
    "resources/list": ("resources", "uri", "resources/read"),
    "resources/templates/list": ("resourceTemplates", "uriTemplate", "resources/read"),
}
_B64_SENTINEL = re.compile(r"=\?base64\?(.*)\?=", re.DOTALL)
METHOD_NOT_FOUND = _protocol.METHOD_NOT_FOUND
COMPLETE = "completion/complete"
#: completion/complete ``params.ref.type`` -> (ref member, the capability method it is checked by)
COMPLETION_REFS = {"ref/prompt": ("name", PROMPTS_GET), "ref/resource": ("uri", RESOURCES_READ)}


class RPCRefusal(CBSTError):
    """A refusal before the app sees the request: HTTP ``status`` and a JSON-RPC error."""

    def __init__(self, status: int, code: int, message: str, *, reason: str, request_id: Any = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.reason = reason
        self.request_id = request_id
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        return error_body(self.request_id, self.code, self.message)


def error_body(request_id: Any, code: int, message: str) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}},
                      separators=(",", ":")).encode()


@dataclass(slots=True)
class Message:
    kind: str  #: "request", "notification" or "response"
    id: Any
    method: str | None
    params: Mapping[str, Any] | None
    target: str | None = None  #: tool/prompt name or resource URI, from the body
    #: Why the params are invalid, raised by :func:`check_methods` only once the method is known
    #: to exist in the request's revision (a removed method is "not found", not "invalid params").
    invalid: str | None = None

    @property
    def protocol_version(self) -> str | None:
        meta = self.params.get("_meta") if self.params else None
        if isinstance(meta, Mapping):
            value = meta.get(PROTOCOL_VERSION_META_KEY)
            return value if isinstance(value, str) else None
        return None


def _valid_id(value: Any) -> bool:
    return (isinstance(value, str) and len(value) <= 256) or (
        isinstance(value, int) and not isinstance(value, bool)
    )


def _one(obj: Any) -> Message:
    if not isinstance(obj, dict) or obj.get("jsonrpc") != "2.0":
        raise RPCRefusal(400, INVALID_REQUEST, "not a JSON-RPC 2.0 message", reason="malformed")
    has_id = "id" in obj
    rid = obj.get("id")
    if has_id and not _valid_id(rid):
        raise RPCRefusal(400, INVALID_REQUEST, "JSON-RPC id must be a string or an integer",
                         reason="malformed")
    method = obj.get("method")
    if method is None:
        if not has_id or ("result" in obj) == ("error" in obj):
            raise RPCRefusal(400, INVALID_REQUEST, "a message needs a method, or an id with a result "
                             "or an error", reason="malformed", request_id=rid if has_id else None)
        return Message("response", rid, None, None)
    if not isinstance(method, str) or not method or len(method) > 256:
        raise RPCRefusal(400, INVALID_REQUEST, "method must be a non-empty string",
                         reason="malformed", request_id=rid)
    params = obj.get("params")
    if params is not None and not isinstance(params, dict):
        raise RPCRefusal(400, INVALID_REQUEST, "params must be an object", reason="malformed",
                         request_id=rid)
    msg = Message("request" if has_id else "notification", rid, method, params)
    field = NAME_FIELDS.get(method)
    if field is not None:
        target = params.get(field) if params else None
        if not isinstance(target, str) or not target:
            msg.invalid = f"{method} needs params.{field} (a string)"
        else:
            msg.target = target
    elif method == COMPLETE:
        msg.target = _completion_ref(params, rid)[1]
    return msg


def _completion_ref(params: Mapping[str, Any] | None, rid: Any) -> tuple[str, str]:
    """(capability method, name or URI template) of a completion's ``params.ref``."""
    ref = params.get("ref") if params else None
    ref_type = ref.get("type") if isinstance(ref, dict) else None
    kind = COMPLETION_REFS.get(ref_type) if isinstance(ref_type, str) else None
    value = ref.get(kind[0]) if kind is not None and isinstance(ref, dict) else None
    if kind is None or not isinstance(value, str) or not value:
        raise RPCRefusal(400, INVALID_PARAMS, "completion/complete needs params.ref: "
                         '{"type": "ref/prompt", "name": ...} or {"type": "ref/resource", "uri": ...}',
                         reason="malformed", request_id=rid)
    return kind[1], value


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey
    return obj


#: Members the decisions (and the audit) read. Written without escapes they can only appear in
#: the raw body as these exact byte strings; the only JSON escapes that can spell one of their
#: characters are ``\u`` and ``\/``.
_DECISION_KEYS = tuple(f'"{k}"'.encode() for k in (
    "jsonrpc", "id", "method", "params", "name", "uri", "arguments", "_meta", "result", "error",
    PROTOCOL_VERSION_META_KEY))


def _duplicates_impossible(body: bytes) -> bool:
    """True when no object in ``body`` can repeat a member that decisions read: no escape that
    could spell one, and each such member name at most once in the whole body. Then the fast C
    parser is safe; otherwise the body is parsed with a duplicate-refusing hook."""
    if b"\\u" in body or b"\\/" in body:
        return False
    return all(body.count(k) <= 1 for k in _DECISION_KEYS)


def parse_messages(body: bytes, *, max_batch: int) -> tuple[list[Message], bool]:
    """Parse a POST body: (messages, is_batch). Raises :class:`RPCRefusal`.

    Objects with a repeated member are refused: parsers disagree on which copy wins
    (``{"name": "echo", "name": "delete-file"}``), and the app must see what was checked.
    """
    try:
        text = body.decode("utf-8")
        hook = None if _duplicates_impossible(body) else _no_duplicates
        data = json.loads(text, object_pairs_hook=hook)
    except _DuplicateKey:
        raise RPCRefusal(400, INVALID_REQUEST, "a JSON object in the request repeats a member",
                         reason="malformed") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RPCRefusal(400, PARSE_ERROR, "request body is not valid JSON", reason="malformed") from None
    if isinstance(data, list):
        if not data:
            raise RPCRefusal(400, INVALID_REQUEST, "empty JSON-RPC batch", reason="malformed")
        if len(data) > max_batch:
            raise RPCRefusal(400, INVALID_REQUEST, f"JSON-RPC batch larger than {max_batch} messages",
                             reason="malformed")
        messages = [_one(item) for item in data]
        ids = [m.id for m in messages if m.kind == "request"]
        if len(ids) != len({json.dumps(i) for i in ids}):
            raise RPCRefusal(400, INVALID_REQUEST, "duplicate request ids in a batch", reason="malformed")
        return messages, True
    return [_one(data)], False


def decode_header_value(value: str) -> str | None:
    """Inverse of the SDK's ``=?base64?…?=`` header encoding; None if malformed."""
    m = _B64_SENTINEL.fullmatch(value)
    if m is None:
        return value
    try:
        raw = base64.b64decode(m.group(1), validate=True)
    except (binascii.Error, ValueError):
        return None
    if base64.b64encode(raw).decode("ascii") != m.group(1):
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _mismatch(text: str, rid: Any = None) -> RPCRefusal:
    return RPCRefusal(400, HEADER_MISMATCH, text, reason="header_mismatch", request_id=rid)


ROUTING_HEADERS = (b"mcp-protocol-version", b"mcp-method", b"mcp-name")


def check_routing_headers(raw_headers: Sequence[tuple[bytes, bytes]], messages: list[Message],
                          is_batch: bool) -> str | None:
    """Compare the mirrored routing headers with the body; return the modern protocol version
    (or None for the handshake generation). Raises :class:`RPCRefusal` on any disagreement.

    A request is treated as modern when its ``MCP-Protocol-Version`` header names a version the
    handshake generation does not have (that is how the official server routes it) or when its
    body carries the per-request ``_meta`` protocol version. Present headers are compared in
    every generation; in the modern one ``Mcp-Method`` (and ``Mcp-Name`` where the body names
    something) is required.
    """
    found: dict[bytes, bytes] = {}
    for key, value in raw_headers:
        if key in ROUTING_HEADERS:
            if key in found:
                raise _mismatch(f"duplicate {key.decode()} header")
            found[key] = value
    return check_routing(found, messages, is_batch)


def check_routing(found: Mapping[bytes, bytes], messages: list[Message], is_batch: bool) -> str | None:
    """:func:`check_routing_headers` on headers already collected (each at most once)."""
    raw_version = found.get(b"mcp-protocol-version")
    raw_method = found.get(b"mcp-method")
    raw_name = found.get(b"mcp-name")
    version = raw_version.decode("latin-1") if raw_version is not None else None
    method_h = raw_method.decode("latin-1") if raw_method is not None else None
    name_h = raw_name.decode("latin-1") if raw_name is not None else None
    body_versions = {v for v in (m.protocol_version for m in messages) if v is not None}
    modern = (version is not None and version not in HANDSHAKE_VERSIONS) or bool(body_versions)
    if is_batch:
        if modern or method_h is not None or name_h is not None:
            raise _mismatch("JSON-RPC batches are not part of the 2026-07-28 protocol, and routing "
                            "headers cannot describe a batch")
        check_methods(messages, None)
        return None
    msg = messages[0]
    if body_versions and version is not None and version not in body_versions:
        raise _mismatch("MCP-Protocol-Version header does not match the request envelope's protocol "
                        "version", msg.id)
    if method_h is None:
        if modern and msg.kind != "response":
            raise _mismatch("Mcp-Method header is required in the 2026-07-28 protocol", msg.id)
    elif method_h != msg.method:
        raise _mismatch("Mcp-Method header does not match the request body's method", msg.id)
    generation = None  # the handshake generation
    if modern:
        generation = version
        if version is None or version in HANDSHAKE_VERSIONS:
            generation = next(iter(body_versions), None) or version
    check_methods(messages, generation)
    if msg.method in _MIRRORED_NAME and (name_h is not None or modern):
        if name_h is None:
            raise _mismatch("Mcp-Name header is required for this method in the 2026-07-28 protocol",
                            msg.id)
        if decode_header_value(name_h) != msg.target:
            raise _mismatch("Mcp-Name header does not match the request body", msg.id)
    elif name_h is not None and msg.method not in _MIRRORED_NAME:
        raise _mismatch("Mcp-Name header on a method that names nothing", msg.id)
    return generation


def check_methods(messages: Sequence[Message], generation: str | None) -> None:
    """Refuse a request (or a non-``notifications/`` notification) whose method the protocol
    revision does not have — unknown names, and those 2026-07-28 removed (``ping``,
    ``initialize``, ``logging/setLevel``, ``resources/subscribe``...) — the way the protocol
    does: JSON-RPC ``-32601``, with HTTP 404 in 2026-07-28 (``ERROR_CODE_HTTP_STATUS`` of the
    official server) and in a 200 response in the handshake generation. No capability can
    allow such a method, so a 403 step-up challenge would send the client after a scope that
    helps nothing. ``generation`` is what :func:`check_routing` returns (None: handshake)."""
    known = HANDSHAKE_METHODS if generation is None else MODERN_METHODS
    for msg in messages:
        method = msg.method
        if method is None or method in known:
            continue
        if msg.kind == "notification" and method.startswith("notifications/"):
            continue  # servers ignore notifications they do not know
        shown = method if len(method) <= 64 else method[:61] + "..."
        revision = "the handshake generation" if generation is None else generation
        raise RPCRefusal(404 if generation is not None else 200, METHOD_NOT_FOUND,
                         f"method not found: {shown!r} is not a method of MCP {revision}",
                         reason="method_not_found", request_id=msg.id if len(messages) == 1 else None)
    for msg in messages:
        if msg.invalid is not None:
            raise RPCRefusal(400, INVALID_PARAMS, msg.invalid, reason="malformed", request_id=msg.id)


class Requirement(NamedTuple):
    """What a message needs: nothing but a valid token (``open``), a list capability (filtered
    result), or one capability of ``method`` on ``target`` — for ``completion/complete`` also
    the capability its ``ref`` names (``ref_method`` on the prompt name or URI template
    ``target``)."""

    open: bool = False
    list_method: str | None = None
    method: str | None = None
    target: str | None = None
    ref_method: str | None = None

    @property
    def scope(self) -> str | None:
        """The capabilities to name in a challenge (computed only when a challenge is sent).

        None for a list: any capability of its family allows it, and naming the broadest
        (``tools/call:**``) would send a client after more than it may be granted
        (``invalid_scope``); without a scope the client asks for what it is registered for.
        """
        if self.open or self.list_method is not None:
            return None
        try:
            if self.ref_method == RESOURCES_READ:
                pattern = uri_template_pattern(self.target or "")
                if pattern is None:
                    return None
                return f"{COMPLETE} {RESOURCES_READ}:{pattern}"
            if self.ref_method is not None:
                return f"{COMPLETE} {CapabilitySet.required_for(self.ref_method, self.target)}"
            return CapabilitySet.required_for(self.method or "", self.target)
        except CapabilityError:
            return None  # cannot be written as a capability: nothing can allow it


_OPEN = Requirement(open=True)


def required_capability(msg: Message) -> Requirement:
    if msg.kind == "response":  # the client answering a server request (sampling, elicitation...)
        return _OPEN
    method = msg.method
    assert method is not None
    if method in OPEN_METHODS or (msg.kind == "notification" and method.startswith("notifications/")):
        return _OPEN
    if method in LIST_FILTERS:
        return Requirement(list_method=method)
    if method == COMPLETE:
        # Completions reveal argument values of a prompt or resource template: they need the
        # capability to get that prompt, or to read everything the template can expand to.
        ref_method, target = _completion_ref(msg.params, msg.id)
        return Requirement(method=method, target=target, ref_method=ref_method)
    return Requirement(method=method, target=msg.target)


def allows(scope: CapabilitySet, msg: Message, req: Requirement) -> bool:
    if req.open:
        return True
    if req.list_method is not None:
        return scope.allows_list(req.list_method)
    assert msg.method is not None
    if req.ref_method is not None:
        if not scope.allows(msg.method):
            return False
        if req.ref_method == RESOURCES_READ:
            return scope.allows_template(req.target or "")
        return scope.allows(req.ref_method, req.target)
    return scope.allows(msg.method, msg.target)


# --- list filtering ---------------------------------------------------------------------------


def _template_prefix(template: str) -> str:
    return template.split("{", 1)[0]


def _template_allowed(scope: CapabilitySet, template: str) -> bool:
    """Whether a resource template may expand to a URI the token can read.

    Over-approximation: the template's literal prefix (before the first ``{``) and some
    capability's literal prefix (before its first ``*``) overlap. Listing a template reveals
    only the template; every read is still checked on its own URI.
    """
    from ..capabilities import normalize_uri

    prefix = _template_prefix(template)
    normal = normalize_uri(prefix) if prefix else ""
    if normal is None:
        return False
    for cap in scope:
        if cap.method not in URI_METHODS or cap.pattern is None:
            continue
        cprefix = cap.pattern.split("*", 1)[0]
        if normal.startswith(cprefix) or cprefix.startswith(normal):
            return True
    return False


def filter_result(scope: CapabilitySet, list_method: str, result: Any) -> Any:
    """Keep only the list items ``scope`` allows (in place on a copy of ``result``)."""
    spec = LIST_FILTERS.get(list_method)
    if spec is None or not isinstance(result, dict):
        return result
    member, key, call = spec
    items = result.get(member)
    if not isinstance(items, list):
        return result
    out = dict(result)
    if "cacheScope" in out:  # 2026-07-28 caching hint: a filtered list is per token, never shared
        out["cacheScope"] = "private"
    dicts = [i for i in items if isinstance(i, dict) and isinstance(i.get(key), str)]
    if member == "resourceTemplates":
        out[member] = [i for i in dicts if _template_allowed(scope, i[key])]
    else:
        out[member] = scope.filter(call, dicts, key=lambda i: i[key])
    return out
