"""The root of the exceptions the ``idp`` package raises on purpose.

Callers (the CLI, the app) catch :class:`IdPError` to turn any expected failure into a clear,
one-line message; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class IdPError(Exception):
    """An expected failure of the identity provider; ``str(exc)`` is the message for the operator."""
