"""Fixtures for the gateway tests; they and their helpers live in ``gateway_support.py`` (a plain
module, so test files can import helpers by name)."""

from gateway_support import *  # noqa: F403
