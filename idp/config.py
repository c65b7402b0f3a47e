"""Configuration: environment variables (``IDP_*``) over an optional TOML file over defaults.

The TOML file is named by ``IDP_CONFIG`` (or ``idp --config FILE``); its keys are the field
names below without the prefix (``issuer = "https://idp.example"``). See docs/configuration.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

SigningAlg = Literal["ES256", "EdDSA"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IDP_", extra="forbid", validate_default=True)

    issuer: str = Field(
        "http://127.0.0.1:8000",
        description="Issuer identifier (RFC 8414 §2); no trailing slash. Default: http://127.0.0.1:<port>.",
    )
    database_url: str = Field("sqlite:///idp.db", description="SQLAlchemy URL: sqlite:///PATH or postgresql://...")
    keys_dir: Path = Field(Path("keys"), description="Keystore directory (generated key-encryption key lives here).")
    keystore_passphrase: SecretStr | None = Field(None, description="Passphrase that encrypts signing keys (scrypt).")
    keystore_kek: SecretStr | None = Field(
        None, description="Base64url 32-byte key-encryption key (instead of a passphrase).")
    signing_alg: SigningAlg = Field("ES256", description="Algorithm of newly created signing keys.")
    access_token_ttl: int = Field(300, ge=30, le=86400, description="Access token lifetime, seconds.")
    clock_skew: int = Field(60, ge=0, le=600, description="Allowed clock skew, seconds.")
    jwks_max_age: int = Field(300, ge=0, le=86400, description="Cache-Control max-age of the JWKS, seconds.")
    key_prepublication: int | None = Field(
        None, ge=0, description="Seconds a new key is published before it signs; default 2 x jwks_max_age."
    )
    key_rotation_interval: int = Field(30 * 86400, ge=0, description="Automatic rotation period, seconds; 0 = off.")
    key_refresh_interval: int = Field(5, ge=1, le=300, description="How often a process re-reads keys, seconds.")
    audit_retention_days: int = Field(30, ge=7, le=30, description="Audit records older than this are pruned.")
    max_body_bytes: int = Field(16 * 1024, ge=1024, le=1024 * 1024, description="Largest request body accepted.")
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL", description="SQLite durability: FULL survives power loss, NORMAL only process crashes."
    )
    # Failed client authentications (idp.oauth2.throttle; see docs/configuration.md).
    auth_fail_window: int = Field(60, ge=1, le=86400, description="Window of the failure limits, seconds.")
    auth_fail_client: int = Field(
        20, ge=0, le=1_000_000, description="Failed authentications per client_id per window before 429; 0 = no limit."
    )
    auth_fail_address: int = Field(
        100, ge=0, le=1_000_000,
        description="Failed authentications per remote address per window before 429; 0 = no limit.",
    )
    auth_fail_audits: int = Field(
        100, ge=0, le=1_000_000,
        description="Audit records of failed authentications per window (per process); 0 = none.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = Field(True, description="Structured JSON log lines on stderr.")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    # --- fault tolerance (docs/operations.md#when-the-database-hangs) ---
    database_timeout: float = Field(
        5.0, ge=0.1, le=300, description="Longest a request waits for the database before answering 503, seconds."
    )
    request_read_timeout: float = Field(
        10.0, ge=0.5, le=300, description="Time a client has to send a whole request (headers and body), seconds."
    )
    client_connections: int = Field(
        64, ge=0, description="Open connections per client address and worker process; 0 = no limit."
    )
    # --- policy and resources (docs/policy.md, docs/resources.md) ---
    policy_dir: Path | None = Field(
        None, description="Folder of Cedar policies (*.cedar, optional *.cedarschema); unset = permit all.")
    policy_reload: float = Field(
        2.0, ge=0, le=3600, description="How often the policy folder is checked for changes, seconds; 0 = never.")
    catalogue_max_age: int = Field(
        0, ge=0, le=30 * 86400,
        description="Refresh a resource's catalogue from its MCP server when older than this, seconds; 0 = never.")

    # --- web pages: sessions, local-account login, interactions (idp/web; docs/authorization.md) ---
    session_idle_ttl: int = Field(
        3600, ge=60, le=30 * 86400, description="A browser session at the IdP ends after this long unused, seconds.")
    session_absolute_ttl: int = Field(
        8 * 3600, ge=60, le=90 * 86400, description="A browser session ends this long after login at the latest, s.")
    interaction_ttl: int = Field(
        600, ge=60, le=3600, description="How long a person has to log in and consent to one authorization request, s.")
    login_fail_window: int = Field(900, ge=1, le=86400, description="Window of the login failure limits, seconds.")
    login_fail_account: int = Field(
        5, ge=0, le=1_000_000, description="Failed logins per local account per window before 429; 0 = no limit.")
    login_fail_address: int = Field(
        50, ge=0, le=1_000_000, description="Failed logins per remote address per window before 429; 0 = no limit.")

    # --- authorization code flow (docs/authorization.md) ---
    authorization_code_ttl: int = Field(60, ge=10, le=600, description="Authorization code lifetime, seconds.")
    refresh_token_ttl: int = Field(
        14 * 86400, ge=60, le=365 * 86400, description="Refresh token lifetime (each rotation renews it), seconds.")
    refresh_family_lifetime: int = Field(
        90 * 86400, ge=60, le=3 * 365 * 86400,
        description="Longest a login's refresh-token chain lasts, however often it rotates, seconds.")
    refresh_retry_grace: int = Field(
        10, ge=0, le=300,
        description="A client may retry a refresh whose answer it lost within this many seconds; 0 = never.")

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError("issuer must be an http(s) URL without query or fragment")
        if value.endswith("/"):
            raise ValueError("issuer must not end with '/' (MCP clients compare it byte for byte)")
        if parts.path:
            # RFC 8414 §3.1 would put the metadata at /.well-known/oauth-authorization-server<path>
            # and every endpoint under the path; the IdP serves from the origin's root.
            raise ValueError("issuer must be an origin without a path (https://idp.example.com); "
                             "serve the IdP at the root of its own host name")
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_issuer(cls, data: Any) -> Any:
        # Unless set, the issuer is where `idp serve` listens: changing only the port must not
        # leave the issuer (and so every resource server) pointing at port 8000.
        if isinstance(data, dict) and data.get("issuer") is None:
            port = data.get("port", 8000)
            if isinstance(port, int) or (isinstance(port, str) and port.strip().isdigit()):
                data = {**data, "issuer": f"http://127.0.0.1:{int(port)}"}
        return data

    @model_validator(mode="after")
    def _derived(self) -> Settings:
        if self.key_prepublication is None:
            self.key_prepublication = 2 * self.jwks_max_age
        return self

    @property
    def prepublication(self) -> int:
        assert self.key_prepublication is not None
        return self.key_prepublication

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("IDP_CONFIG")
        if config_file:
            if not Path(config_file).is_file():
                raise ValueError(f"IDP_CONFIG names {config_file!r}, which is not a file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    def masked(self) -> dict[str, Any]:
        """Effective configuration with secrets masked, for ``idp config show``."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "********"
            elif name == "database_url":
                value = mask_url(value)
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        return out


def mask_url(url: str) -> str:
    """Hide a password in a database URL."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
