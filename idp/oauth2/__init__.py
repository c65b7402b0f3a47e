"""OAuth 2.x protocol logic, one module per specification (Authlib's layout).

Modules here know nothing of the web framework or the database: handlers take one
:class:`~idp.oauth2.request.OAuthRequest` and the storage interfaces of
:mod:`idp.oauth2.stores` (never SQLAlchemy), and return :class:`~idp.oauth2.errors.OAuthResponse`.
Grants (:mod:`.grants`) and client-authentication methods (:mod:`.client_auth`) are registries:
one module each plus one registration line, and the metadata document lists what they hold.
"""
