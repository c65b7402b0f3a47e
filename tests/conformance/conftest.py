"""Fixtures for the conformance run: the real IdP and ``cbst-gateway`` process from the gateway
tests' helpers, plus the npm-installed suite and the Node.js it runs on."""

from __future__ import annotations

import sys
from pathlib import Path

# The gateway tests' helpers (a plain module beside their conftest), importable by name.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway"))

from gateway_support import gateway_process, idp

__all__ = ["gateway_process", "idp"]
