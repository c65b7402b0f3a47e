"""Network-address predicates shared by the SDK and the gateway."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a name, an IP address, or a bracketed IPv6 literal) is this machine.

    ``localhost`` is trusted by name (RFC 6761 § 6.3); other names are not resolved, so a name
    that merely resolves to 127.0.0.1 does not count.
    """
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
