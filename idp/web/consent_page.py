"""What the consent page asks: the requested capabilities, in the MCP server's own words.

From the request to the page:

1. policy (``stores.policy.decide``) says which requested capabilities may be granted at all;
   the others are shown as not grantable;
2. each grantable capability becomes items in human terms from the resource's catalogue: a
   tool's id, title, description and whether it is destructive; a tool pattern
   (``tools/call:git-*``) expands to the catalogue tools it matches, one item each, so the
   person approves tools they can see (a pattern that matches nothing listed, or too many,
   stays one item); resource and prompt patterns list what they match;
3. an item is *covered* when the remembered grant (``idp.consent``) already allows it. A
   destructive tool is covered only by an explicit remembered approval of exactly that
   capability: a remembered ``tools/call:*`` or an approval of other tools does not cover it;
4. the page asks for the items not covered only (a step-up asks for the new ones), destructive
   ones unticked. With nothing to ask, the code is issued without a page.

MCP's defaults apply to annotations: a tool is destructive unless it says ``readOnlyHint: true``
or ``destructiveHint: false``; a tool the catalogue does not list counts as destructive.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sdk.capabilities import TOOLS_CALL, URI_METHODS, Capability, CapabilityError, CapabilitySet

from ..oauth2.client import ClientRecord
from ..oauth2.subject import Subject

if TYPE_CHECKING:
    from ..provider import Provider

__all__ = ["Item", "Plan", "is_destructive", "plan"]

#: A tool pattern matching more listed tools than this stays one item (a token holds at most 256).
EXPAND_LIMIT = 64
_TEXT_LIMIT = 600  # catalogue text is the server's; keep the page readable

METHOD_TEXT = {
    "logging/setLevel": "Change how much the server logs",
    "completion/complete": "Ask the server to complete arguments of prompts and resources",
    "resources/list": "List the server's resources",
    "resources/templates/list": "List the server's resource templates",
    "tools/list": "List the server's tools",
    "prompts/list": "List the server's prompts",
}


@dataclass(frozen=True)
class Item:
    capability: str  # what is granted when it is ticked
    kind: str  # "tool", "resource", "prompt" or "method"
    name: str  # the tool or prompt id, the URI pattern, the method
    title: str
    description: str | None = None
    destructive: bool = False
    listed: bool = True  # found in the server's catalogue
    via: str | None = None  # the requested pattern this item comes from
    matches: tuple[str, ...] = ()  # what a resource or prompt pattern (or an unexpanded tool pattern) matches

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Item:
        return cls(**{**data, "matches": tuple(data.get("matches", ()))})


@dataclass(frozen=True)
class Plan:
    new: tuple[Item, ...] = ()  # to ask about
    covered: tuple[Item, ...] = ()  # remembered: granted without asking
    denied: tuple[str, ...] = ()  # refused by policy
    subject: str = ""
    info: tuple[str, ...] = field(default=())  # other scopes (openid, offline_access...) for the page

    @property
    def covered_set(self) -> CapabilitySet:
        return CapabilitySet(i.capability for i in self.covered)

    def offered(self) -> dict[str, Item]:
        return {i.capability: i for i in self.new}

    def to_json(self) -> dict[str, Any]:
        return {"new": [asdict(i) for i in self.new], "covered": [asdict(i) for i in self.covered],
                "denied": list(self.denied), "subject": self.subject, "info": list(self.info)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        return cls(new=tuple(Item.from_json(i) for i in data.get("new", ())),
                   covered=tuple(Item.from_json(i) for i in data.get("covered", ())),
                   denied=tuple(data.get("denied", ())), subject=str(data.get("subject", "")),
                   info=tuple(data.get("info", ())))


def _text(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return value if len(value) <= _TEXT_LIMIT else value[: _TEXT_LIMIT - 1] + "\u2026"


def is_destructive(tool: Mapping[str, Any]) -> bool:
    """MCP ToolAnnotations: destructiveHint defaults to true and matters only when not read-only."""
    annotations = tool.get("annotations")
    if not isinstance(annotations, Mapping):
        return True
    if annotations.get("readOnlyHint") is True:
        return False
    return annotations.get("destructiveHint") is not False


def _entries(catalogue: Mapping[str, Any], kind: str, key: str) -> list[Mapping[str, Any]]:
    items = catalogue.get(kind)
    if not isinstance(items, list):
        return []
    return [i for i in items if isinstance(i, Mapping) and isinstance(i.get(key), str)]


def _tool_item(tool: Mapping[str, Any], capability: str, via: str | None) -> Item:
    raw = tool.get("annotations")
    annotations: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    name = str(tool["name"])
    title = _text(tool.get("title")) or _text(annotations.get("title")) or name
    return Item(capability=capability, kind="tool", name=name, title=title, description=_text(tool.get("description")),
                destructive=is_destructive(tool), via=via)


def _exact(method: str, name: str) -> str | None:
    try:
        return CapabilitySet.required_for(method, name)
    except CapabilityError:
        return None  # a name a capability cannot spell literally: only a pattern can grant it


def items_for(cap: Capability, catalogue: Mapping[str, Any]) -> list[Item]:
    text = str(cap)
    if cap.method == TOOLS_CALL:
        tools = _entries(catalogue, "tools", "name")
        assert cap.pattern is not None
        if "*" not in cap.pattern:
            found = next((t for t in tools if t["name"] == cap.pattern), None)
            if found is not None:
                return [_tool_item(found, text, None)]
            return [Item(text, "tool", cap.pattern, cap.pattern, destructive=True, listed=False)]
        matching = [t for t in tools if cap.matches(TOOLS_CALL, t["name"])]
        exact = [(t, _exact(TOOLS_CALL, t["name"])) for t in matching]
        if matching and len(matching) <= EXPAND_LIMIT and all(c for _, c in exact):
            return [_tool_item(t, c, text) for t, c in exact if c]
        # Nothing listed matches (tools added later would), or too many to list one by one.
        return [Item(text, "tool", cap.pattern, f"Tools matching {cap.pattern}", destructive=True,
                     listed=bool(matching), matches=tuple(str(t["name"]) for t in matching[:EXPAND_LIMIT]))]
    if cap.method in URI_METHODS:
        entries = _entries(catalogue, "resources", "uri")
        matches = tuple(_text(r.get("title")) or _text(r.get("name")) or str(r["uri"])
                        for r in entries if cap.matches(cap.method, r["uri"]))
        verb = {"resources/read": "Read", "resources/subscribe": "Watch for changes to",
                "resources/unsubscribe": "Stop watching"}.get(cap.method, cap.method)
        return [Item(text, "resource", cap.pattern or "", f"{verb} resources {cap.pattern}",
                     matches=matches[:EXPAND_LIMIT], listed=bool(matches))]
    if cap.method == "prompts/get":
        entries = _entries(catalogue, "prompts", "name")
        prompts = [p for p in entries if cap.matches(cap.method, p["name"])]
        single = prompts[0] if len(prompts) == 1 and prompts[0]["name"] == cap.pattern else None
        title = (_text(single.get("title")) if single else None) or f"Prompt {cap.pattern}"
        return [Item(text, "prompt", cap.pattern or "", title,
                     description=_text(single.get("description")) if single else None, listed=bool(prompts),
                     matches=tuple(str(p["name"]) for p in prompts[:EXPAND_LIMIT]) if not single else ())]
    return [Item(text, "method", cap.method, METHOD_TEXT.get(cap.method, cap.method))]


def covered_by(item: Item, remembered: CapabilitySet) -> bool:
    if item.destructive:  # only an explicit approval of exactly this capability
        return item.capability in remembered
    return remembered.covers([item.capability])


def plan(stores: Provider, *, client: ClientRecord, subject: Subject, resource: str, requested: CapabilitySet,
         info: tuple[str, ...] = ()) -> Plan:
    decision = stores.policy.decide(subject, client, resource, requested)
    record = stores.resources.get(resource)
    catalogue = record.catalogue if record is not None and isinstance(record.catalogue, Mapping) else {}
    remembered = stores.consents.get(subject.id, client.client_id, resource)
    seen: dict[str, Item] = {}
    for cap in decision.allowed:
        for item in items_for(cap, catalogue):
            seen.setdefault(item.capability, item)
    new = tuple(i for i in seen.values() if not covered_by(i, remembered))
    covered = tuple(i for i in seen.values() if covered_by(i, remembered))
    return Plan(new=new, covered=covered, denied=tuple(str(c) for c in decision.denied), subject=subject.id,
                info=info)
