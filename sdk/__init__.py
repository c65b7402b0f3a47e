"""CBST SDK: capability grammar, token format and verification for MCP clients and servers.

Never imports ``idp``: the identity provider depends on this package, not the reverse.
"""
