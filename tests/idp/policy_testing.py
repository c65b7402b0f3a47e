"""Helpers for the policy tests: client records and a folder of Cedar files."""

from __future__ import annotations

from pathlib import Path

from sdk.capabilities import CapabilitySet

from idp.oauth2.client import ClientRecord
from idp.oauth2.resource import ResourceRecord

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "policies"
SERVER = "https://mcp.example.com/mcp"
OTHER = "http://127.0.0.1:8001/mcp"


def client(client_id: str = "claude", *, registered_by: str = "operator", updated_at: int = 0) -> ClientRecord:
    return ClientRecord(client_id=client_id, name=client_id, auth_method="none", secret_hash=None, jwks=None,
                        capabilities=CapabilitySet(), audiences=(), enabled=True, created_at=0,
                        updated_at=updated_at, registered_by=registered_by)


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


class Catalogues:
    """A ResourceStore over a dict (the policy reads catalogues through this interface)."""

    def __init__(self, catalogues: dict[str, dict[str, object]]) -> None:
        self.records = {uri: ResourceRecord(uri, uri, dict(cat), catalogue_updated_at=1) for uri, cat in
                        catalogues.items()}

    def get(self, uri: str) -> ResourceRecord | None:
        return self.records.get(uri)
