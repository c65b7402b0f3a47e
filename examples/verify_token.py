"""Verify a CBST with an independent JOSE library (joserfc), from the IdP's published JWKS.

    .venv/bin/python examples/verify_token.py "$TOKEN" --audience https://mcp.example.test/mcp

Shows that any standard JOSE library can check a capability token: it discovers the JWKS from the
issuer's RFC 8414 metadata, verifies the signature and the RFC 9068 claims, and prints them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("token")
    parser.add_argument("--issuer", default="http://127.0.0.1:8000")
    parser.add_argument("--audience", required=True, help="the resource URI the token must be for")
    args = parser.parse_args()

    meta = httpx.get(f"{args.issuer}/.well-known/oauth-authorization-server", timeout=5).json()
    keys = KeySet.import_key_set(httpx.get(meta["jwks_uri"], timeout=5).json())
    try:
        token = jwt.decode(args.token, keys, algorithms=["ES256", "EdDSA"])
    except JoseError as exc:
        print(f"INVALID: {exc}", file=sys.stderr)
        return 1
    claims, header = token.claims, token.header
    problems = []
    if header.get("typ") != "at+jwt":
        problems.append("typ is not at+jwt")
    if claims.get("iss") != meta["issuer"]:
        problems.append("wrong issuer")
    if claims.get("aud") != args.audience:
        problems.append("wrong audience")
    if claims.get("exp", 0) <= time.time():
        problems.append("expired")
    if problems:
        print("INVALID: " + ", ".join(problems), file=sys.stderr)
        return 1
    print(json.dumps({"valid": True, "header": header, "claims": claims}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
