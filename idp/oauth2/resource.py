"""A registered protected resource as the protocol sees it (RFC 8707 resource, RFC 9728 resource server)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def tool_flags(tool: Mapping[str, Any]) -> tuple[bool, bool]:
    """(destructive, read_only) of a catalogue tool by the MCP defaults: ``destructiveHint``
    defaults to true and counts only when the tool is not read-only (``readOnlyHint``)."""
    annotations = tool.get("annotations")
    annotations = annotations if isinstance(annotations, Mapping) else {}
    read_only = annotations.get("readOnlyHint") is True
    return not read_only and annotations.get("destructiveHint") is not False, read_only


@dataclass(frozen=True)
class ResourceRecord:
    uri: str
    name: str
    catalogue: dict[str, Any] = field(default_factory=dict)  # {"tools": [...], "resources": [...], "prompts": [...]}
    catalogue_updated_at: int | None = None
    client_id: str | None = None  # the resource server's client, which may push the catalogue
    created_at: int = 0

    def tool(self, name: str) -> dict[str, Any] | None:
        """The catalogue entry of a tool, or None."""
        for tool in self.catalogue.get("tools") or ():
            if isinstance(tool, dict) and tool.get("name") == name:
                return tool
        return None

    def public_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri, "name": self.name, "client_id": self.client_id, "created_at": self.created_at,
            "catalogue_updated_at": self.catalogue_updated_at,
            "tools": len(self.catalogue.get("tools", [])), "resources": len(self.catalogue.get("resources", [])),
            "prompts": len(self.catalogue.get("prompts", [])),
        }
