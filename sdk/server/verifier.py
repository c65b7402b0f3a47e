"""Bearer token verification for the middleware: offline, against the IdP's JWKS, with a
verified-token cache and the revocation list (see :mod:`sdk.access_token`, :mod:`.issuer`)."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..access_token import (
    AccessToken,
    InvalidToken,
    UnknownSigningKey,
    VerifiedTokenCache,
    token_hash,
    verify_access_token,
)
from .config import ProtectionConfig
from .issuer import IssuerClient, IssuerUnavailable

__all__ = ["IssuerUnavailable", "TokenVerifier"]


class TokenVerifier:
    def __init__(self, config: ProtectionConfig, issuer: IssuerClient | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.issuer = issuer or IssuerClient(
            config.issuer, http_client=config.http_client, timeout=config.http_timeout,
            jwks_min_refetch_interval=config.jwks_min_refetch_interval,
            jwks_default_max_age=config.jwks_default_max_age, jwks_max_age_cap=config.jwks_max_age_cap,
            revocation_poll_interval=config.revocation_poll_interval,
            revocation_fail_closed_after=config.revocation_fail_closed_after,
        )
        self.cache = VerifiedTokenCache(config.token_cache_size, leeway=config.clock_skew)
        self.issuer.on_revoked = self.cache.discard_jtis
        self._clock = clock

    async def verify(self, token: str) -> AccessToken:
        """The verified token, or :class:`InvalidToken` / :class:`IssuerUnavailable`."""
        issuer = self.issuer
        if not issuer.revocations_fresh():  # the fast path stays synchronous
            await issuer.ensure_revocations()
        now = self._clock()
        key = token_hash(token)
        hit = self.cache.get(key, now, issuer.is_revoked)
        if hit is not None:
            return hit
        cfg = self.config
        keys = issuer.fresh_keys() or await issuer.keys()
        try:
            result = verify_access_token(token, keys, issuer=cfg.issuer, audience=cfg.resource,
                                         now=now, leeway=cfg.clock_skew)
        except UnknownSigningKey:
            if not await self.issuer.refetch_for_unknown_kid():
                raise InvalidToken("token is signed with an unknown key") from None
            try:
                result = verify_access_token(token, self.issuer.cached_keys, issuer=cfg.issuer,
                                             audience=cfg.resource, now=now, leeway=cfg.clock_skew)
            except UnknownSigningKey:
                raise InvalidToken("token is signed with an unknown key") from None
        if self.issuer.is_revoked(result.jti):
            raise InvalidToken("token has been revoked")
        self.cache.put(key, result)
        return result

    async def aclose(self) -> None:
        await self.issuer.aclose()
