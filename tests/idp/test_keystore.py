"""Keystore: signing keys are encrypted at rest, never logged, bound to their kid, and a wrong
KEK/passphrase is a clear error (library and CLI) that never leads to a key sealed with it."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from idp_testing import env_for, random_kek, run_cli

from idp.config import Settings
from idp.keystore import Keystore, KeystoreError
from idp.logs import JsonFormatter
from idp.provider import Provider

PASSPHRASE = "correct horse battery staple"


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def all_logs() -> Iterator[Collect]:
    """Every log record at DEBUG, including SQLAlchemy's statement and parameter logging."""
    handler = Collect()
    names = ["", "cbst", "idp", "sqlalchemy", "alembic"]
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).addHandler(handler)
        logging.getLogger(n).setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for n in names:
            logging.getLogger(n).removeHandler(handler)
            logging.getLogger(n).setLevel(saved[n])


def with_keystore(settings: Settings, mode: str, **changes: Any) -> Settings:
    data = settings.model_dump()
    data.update(keystore_kek=None, keystore_passphrase=None)
    if mode == "kek":
        data["keystore_kek"] = random_kek()
    elif mode == "passphrase":
        data["keystore_passphrase"] = PASSPHRASE
    data.update(changes)
    return Settings(**data)


def needles(pkcs8: bytes) -> dict[str, bytes]:
    """Every usual encoding of the private scalar and of the PKCS#8 document."""
    key = serialization.load_der_private_key(pkcs8, password=None)
    scalar = key.private_numbers().private_value.to_bytes(32, "big")  # type: ignore[union-attr]
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode().splitlines()
    out: dict[str, bytes] = {}
    for label, raw in (("scalar", scalar), ("pkcs8", pkcs8)):
        out[f"{label}.raw"] = raw
        out[f"{label}.hex"] = raw.hex().encode()
        out[f"{label}.b64"] = base64.b64encode(raw).rstrip(b"=")
        out[f"{label}.b64url"] = base64.urlsafe_b64encode(raw).rstrip(b"=")
    out["scalar.int"] = str(int.from_bytes(scalar, "big")).encode()
    out["pem.line2"] = pem[2].encode()  # the PEM line that carries the scalar
    return out


def db_dump(prov: Provider) -> bytes:
    parts = []
    with prov.engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            for row in conn.execute(sa.text(f"SELECT * FROM {table}")):
                parts.append(repr(tuple(row)).encode())
    return b"\n".join(parts)


def files_under(*dirs: Path) -> dict[str, bytes]:
    out = {}
    for d in dirs:
        for p in Path(d).rglob("*"):
            if p.is_file():
                out[str(p)] = p.read_bytes()
    return out


@pytest.mark.parametrize("mode", ["kek", "passphrase", "file"])
def test_private_keys_never_stored_or_logged_in_clear(settings: Settings, mode: str, tmp_path: Path,
                                                      all_logs: Collect) -> None:
    s = with_keystore(settings, mode)
    prov = Provider.open(s)
    try:
        prov.keys.rotate(actor="test")
        prov.keys.rotate(actor="test", immediate=True)
        prov.keys.signer()  # decrypts every key in this process
        with prov.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT kid, private_key FROM signing_keys")).all()
        assert len(rows) == 3
        assert prov.keystore.source.startswith({"kek": "kek", "passphrase": "passphrase", "file": "file:"}[mode])
        found = []
        dump = db_dump(prov)
        files = files_under(tmp_path)  # the SQLite file and its WAL, the keys dir, anything else written
        logs = "\n".join(all_logs.lines).encode()
        assert any("INSERT INTO signing_keys" in line for line in all_logs.lines)  # SQL logging was captured
        for kid, envelope in rows:
            env = json.loads(envelope)
            assert env["enc"] == "A256GCM" and env["kdf"] == ("scrypt" if mode == "passphrase" else "kek")
            pkcs8 = prov.keystore.open_envelope(envelope, kid=kid)
            for label, needle in needles(pkcs8).items():
                if needle in dump:
                    found.append(f"{kid} {label} in database rows")
                if needle in logs:
                    found.append(f"{kid} {label} in logs")
                for path, content in files.items():
                    if needle in content:
                        found.append(f"{kid} {label} in {path}")
        assert not found, found
        kek_file = Path(s.keys_dir) / "kek"
        if mode == "file":
            assert kek_file.is_file()
            assert stat.S_IMODE(kek_file.stat().st_mode) == 0o600
        else:
            assert not kek_file.exists(), "a configured KEK/passphrase must not generate a key file"
    finally:
        prov.close()


def test_generated_kek_file_is_reused_and_refused_when_readable_by_others(tmp_path: Path) -> None:
    ks = Keystore.open(keys_dir=tmp_path / "keys")
    path = tmp_path / "keys" / "kek"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    envelope = ks.seal(b"secret pkcs8", kid="k1")
    again = Keystore.open(keys_dir=tmp_path / "keys")
    assert again.open_envelope(envelope, kid="k1") == b"secret pkcs8"
    os.chmod(path, 0o644)
    with pytest.raises(KeystoreError, match="chmod 600"):
        Keystore.open(keys_dir=tmp_path / "keys")
    with pytest.raises(KeystoreError, match="no keystore KEK"):
        Keystore.open(keys_dir=tmp_path / "other", create=False)


@pytest.mark.parametrize("bad", ["short", base64.urlsafe_b64encode(b"x" * 31).decode(), "!!!not base64!!!"])
def test_malformed_kek_is_a_clear_keystore_error(tmp_path: Path, bad: str) -> None:
    with pytest.raises(KeystoreError, match="32 bytes"):
        Keystore.open(keys_dir=tmp_path, kek=bad)
    with pytest.raises(KeystoreError, match="at least 12"):
        Keystore.open(keys_dir=tmp_path, passphrase="short")


def test_envelope_is_bound_to_its_kid(tmp_path: Path) -> None:
    for ks in (Keystore.open(keys_dir=tmp_path, kek=random_kek()),
               Keystore.open(keys_dir=tmp_path, passphrase=PASSPHRASE)):
        env_a = ks.seal(b"key material a", kid="kid-a")
        assert ks.open_envelope(env_a, kid="kid-a") == b"key material a"
        with pytest.raises(KeystoreError, match="cannot decrypt key kid-b"):
            ks.open_envelope(env_a, kid="kid-b")
        tampered = json.loads(env_a)
        ct = bytearray(base64.urlsafe_b64decode(tampered["ct"] + "=="))
        ct[0] ^= 1
        tampered["ct"] = base64.urlsafe_b64encode(bytes(ct)).rstrip(b"=").decode()
        with pytest.raises(KeystoreError):
            ks.open_envelope(json.dumps(tampered), kid="kid-a")
        with pytest.raises(KeystoreError):
            ks.open_envelope("{}", kid="kid-a")
        with pytest.raises(KeystoreError, match="corrupt"):
            ks.open_envelope("not json", kid="kid-a")


def test_swapping_envelopes_between_key_rows_fails(settings: Settings) -> None:
    prov = Provider.open(settings)
    try:
        prov.keys.rotate(actor="test")
        with prov.engine.begin() as conn:
            (a, env_a), (b, env_b) = conn.execute(sa.text("SELECT kid, private_key FROM signing_keys")).all()
            conn.execute(sa.text("UPDATE signing_keys SET private_key = :e WHERE kid = :k"), [
                {"e": env_b, "k": a}, {"e": env_a, "k": b}])
        with pytest.raises(KeystoreError, match="cannot decrypt key"):
            prov.keystore.open_envelope(env_b, kid=a)
        other = Provider.open(settings)
        try:
            with pytest.raises(KeystoreError, match="cannot decrypt key"):
                other.keys.refresh(force=True)
        finally:
            other.close()
    finally:
        prov.close()


@pytest.mark.parametrize("mode", ["kek", "passphrase"])
def test_wrong_kek_or_passphrase_is_a_clear_error_and_never_seals_a_new_key(settings: Settings, mode: str) -> None:
    good = with_keystore(settings, mode)
    other_secret = {"keystore_passphrase": "another long passphrase"} if mode == "passphrase" else {}
    wrong = with_keystore(settings, mode, **other_secret)
    prov = Provider.open(good)
    prov.close()
    other = Provider.open(wrong)
    try:
        with pytest.raises(KeystoreError, match="wrong passphrase/KEK"):
            other.keys.signer()
        # A rotation (by an operator or the scheduler) with the wrong secret must not add a key
        # that the correctly configured processes could not decrypt.
        with pytest.raises(KeystoreError, match="wrong passphrase/KEK"):
            other.keys.rotate(actor="test")
        with other.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM signing_keys")).scalar() == 1
    finally:
        other.close()
    # A KEK process cannot open passphrase envelopes (and vice versa): clear message, not a crash.
    mismatched = with_keystore(settings, "passphrase" if mode == "kek" else "kek")
    third = Provider.open(mismatched)
    try:
        with pytest.raises(KeystoreError, match="sealed with a"):
            third.keys.signer()
    finally:
        third.close()


@pytest.mark.slow
def test_cli_with_wrong_kek_prints_a_clear_error_without_traceback(settings: Settings) -> None:
    prov = Provider.open(settings)
    prov.close()
    env = {**env_for(settings), "IDP_KEYSTORE_KEK": random_kek()}
    for args in (["keys", "rotate"], ["keys", "list"], ["serve", "--port", "1"]):
        result = run_cli(*args, env=env, timeout=30)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout
        assert "wrong passphrase/KEK" in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    result = run_cli("keys", "rotate", "--json", env=env)
    assert result.returncode == 1 and "wrong passphrase/KEK" in json.loads(result.stdout)["error"]
    with sa.create_engine(settings.database_url.replace("postgresql://", "postgresql+psycopg://")).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM signing_keys")).scalar() == 1


def test_concurrent_first_starts_share_one_generated_kek(tmp_path: Path) -> None:
    """Several processes starting at once on an empty keys dir (replicas on a shared volume, or
    `idp serve` and a CLI command) must all end up with the same, complete KEK file."""
    import threading

    for round_ in range(40):
        keys_dir = tmp_path / f"keys{round_}"
        barrier = threading.Barrier(6)
        results: list[Any] = []

        def start(barrier: threading.Barrier, keys_dir: Path, results: list[Any]) -> None:
            barrier.wait()
            try:
                results.append(Keystore.open(keys_dir=keys_dir)._kek)
            except KeystoreError as exc:
                results.append(exc)

        threads = [threading.Thread(target=start, args=(barrier, keys_dir, results)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        errors = [r for r in results if isinstance(r, Exception)]
        assert not errors, f"round {round_}: {errors}"
        assert len(set(results)) == 1 and len(results) == 6
        assert sorted(p.name for p in keys_dir.iterdir()) == ["kek"]
        assert stat.S_IMODE((keys_dir / "kek").stat().st_mode) == 0o600
