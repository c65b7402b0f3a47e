"""Federated login: people log in at upstream OpenID Connect providers the operator configures.

- :mod:`.upstreams`: the registry of upstreams (``federation_upstreams``; secrets sealed by the keystore);
- :mod:`.oidc_client`: discovery, the code flow with PKCE and ``nonce``, ID token validation (Authlib);
- :mod:`.identities`: upstream (issuer, subject) to a stable local subject (``federated_identities``);
- :mod:`.routes`: ``/login/upstream/{name}`` and ``/federation/callback/{name}``, and the chooser entries.
"""
