"""OAuth 2.x protocol logic, one module per specification (Authlib's layout).

Modules here know nothing of the web framework or the database: they take parsed requests and
the provider's storage objects and return :class:`~idp.oauth2.errors.OAuthResponse`.
"""
