"""The root of the SDK's exceptions: ``except CBSTError`` catches every error the SDK raises on
purpose (token, capability, JOSE, discovery, JSON-RPC refusals), and nothing else."""

from __future__ import annotations

__all__ = ["CBSTError"]


class CBSTError(Exception):
    """Base class of every exception the SDK raises on purpose."""
