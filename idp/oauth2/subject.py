"""Who a token or a grant is for: a person (local account or federated login) or a client."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

USER = "user"
CLIENT = "client"


@dataclass(frozen=True)
class Subject:
    id: str  # the token's ``sub``
    kind: str = USER  # USER or CLIENT
    # What policy and the ID token may read: username, email, groups, the upstream issuer...
    claims: Mapping[str, Any] = field(default_factory=dict)
