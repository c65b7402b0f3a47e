"""CBST identity provider: an OAuth 2.1 authorization server issuing capability tokens."""

__version__ = "0.1.0"
