"""Settings: defaults, validation, TOML file under environment, masking of secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from idp.config import Settings, mask_url


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("IDP_"):
            monkeypatch.delenv(name)


def test_defaults_follow_the_recommended_values() -> None:
    s = Settings()
    assert s.audit_retention_days == 30
    assert s.jwks_max_age == 300 and s.prepublication == 600  # 2 x jwks_max_age
    assert s.key_rotation_interval == 30 * 86400
    assert 30 <= s.access_token_ttl <= 900  # short-lived (minutes)
    assert Settings(jwks_max_age=100).prepublication == 200
    assert Settings(jwks_max_age=100, key_prepublication=0).prepublication == 0


@pytest.mark.parametrize("days", [7, 30])
def test_audit_retention_accepts_7_to_30_days(days: int) -> None:
    assert Settings(audit_retention_days=days).audit_retention_days == days


@pytest.mark.parametrize("days", [0, 6, 31, 365])
def test_audit_retention_outside_7_to_30_days_is_refused(days: int) -> None:
    with pytest.raises(ValidationError, match="audit_retention_days"):
        Settings(audit_retention_days=days)


@pytest.mark.parametrize("issuer", ["https://idp.example/", "https://idp.example/tenant/", "https://idp.example/tenant", "ftp://idp.example",
                                    "https://idp.example?x=1", "https://idp.example#f", "idp.example", ""])
def test_invalid_issuer_is_refused(issuer: str) -> None:
    with pytest.raises(ValidationError, match="issuer"):
        Settings(issuer=issuer)


def test_valid_issuers_are_kept_byte_for_byte() -> None:
    for issuer in ("https://idp.example", "https://idp.example:8443", "http://127.0.0.1:8000"):
        assert Settings(issuer=issuer).issuer == issuer


@pytest.mark.parametrize(("name", "value"), [("IDP_ACCESS_TOKEN_TTL", "abc"), ("IDP_ACCESS_TOKEN_TTL", "5"),
                                             ("IDP_SIGNING_ALG", "HS256"), ("IDP_PORT", "70000"),
                                             ("IDP_AUDIT_RETENTION_DAYS", "31"), ("IDP_LOG_LEVEL", "verbose")])
def test_invalid_environment_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("IDP_").lower()):
        Settings()


def test_toml_file_under_environment_under_explicit_values(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    toml = tmp_path / "idp.toml"
    toml.write_text('issuer = "https://file.example"\naccess_token_ttl = 120\njwks_max_age = 50\n'
                    'keystore_passphrase = "from the file, long enough"\n')
    monkeypatch.setenv("IDP_CONFIG", str(toml))
    s = Settings()
    assert (s.issuer, s.access_token_ttl, s.prepublication) == ("https://file.example", 120, 100)
    assert s.keystore_passphrase is not None
    monkeypatch.setenv("IDP_ACCESS_TOKEN_TTL", "240")
    s = Settings()
    assert (s.issuer, s.access_token_ttl) == ("https://file.example", 240)
    assert Settings(access_token_ttl=60).access_token_ttl == 60


def test_bad_config_files_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IDP_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ValueError, match="missing.toml"):
        Settings()
    bad = tmp_path / "bad.toml"
    monkeypatch.setenv("IDP_CONFIG", str(bad))
    bad.write_text("unknown_setting = 1\n")
    with pytest.raises(ValidationError, match="unknown_setting"):
        Settings()
    bad.write_text('issuer = "https://idp.example/"\n')
    with pytest.raises(ValidationError, match="issuer"):
        Settings()
    bad.write_text("this is not toml = = \n")
    with pytest.raises(ValueError):
        Settings()


def test_masked_configuration_hides_every_secret() -> None:
    s = Settings(keystore_passphrase="a long passphrase value", keystore_kek="K" * 43,
                 database_url="postgresql://idp:p%40ssw0rd-secret@db.example:5432/idp")
    shown = s.masked()
    assert shown["keystore_passphrase"] == "********" and shown["keystore_kek"] == "********"
    text = repr(shown)
    assert "a long passphrase value" not in text and "K" * 43 not in text and "ssw0rd-secret" not in text
    assert "db.example:5432/idp" in shown["database_url"]
    assert set(shown) == set(Settings.model_fields)
    assert Settings().masked()["keystore_passphrase"] is None
    assert "hunter2" not in mask_url("postgresql://u:hunter2@host/db")
    assert "hunter2" not in mask_url("not a url://u:hunter2@host/db")
