"""Which capabilities a subject may be granted, for a client at a resource (the policy decision point).

Placeholder interface: allows everything. Cedar policies (issue 7) replace the implementation
behind this same interface.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdk.capabilities import Capability, CapabilitySet

from .oauth2.client import ClientRecord
from .oauth2.subject import Subject


@dataclass(frozen=True)
class Decision:
    allowed: CapabilitySet  # what may be granted (consent may still narrow it)
    denied: tuple[Capability, ...]  # requested but refused by policy


class Policy:
    def decide(self, subject: Subject, client: ClientRecord, resource: str, requested: CapabilitySet) -> Decision:
        return Decision(allowed=requested, denied=())
