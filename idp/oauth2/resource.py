"""A registered protected resource as the protocol sees it (RFC 8707 resource, RFC 9728 resource server)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ResourceRecord:
    uri: str
    name: str
    catalogue: dict[str, Any] = field(default_factory=dict)  # {"tools": [...], "resources": [...], "prompts": [...]}
    catalogue_updated_at: int | None = None
    client_id: str | None = None  # the resource server's client, which may push the catalogue
    created_at: int = 0

    def public_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri, "name": self.name, "client_id": self.client_id, "created_at": self.created_at,
            "catalogue_updated_at": self.catalogue_updated_at,
            "tools": len(self.catalogue.get("tools", [])), "resources": len(self.catalogue.get("resources", [])),
            "prompts": len(self.catalogue.get("prompts", [])),
        }
