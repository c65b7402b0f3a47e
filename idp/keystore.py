"""Encryption of signing keys at rest.

Private keys are stored in the database only as an AES-256-GCM envelope (the key id is the
associated data, so an envelope cannot be moved to another key's row). The key-encryption
key (KEK) comes from, in order:

1. ``IDP_KEYSTORE_KEK``: 32 random bytes, base64url — for secret managers;
2. ``IDP_KEYSTORE_PASSPHRASE``: stretched with scrypt (RFC 7914) and a per-envelope salt;
3. neither: a random KEK generated on first start into ``<keys_dir>/kek`` (mode 0600). Fine for
   a single host and development; production sets 1 or 2 (and every IdP process sharing one
   database must use the same one).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from sdk.jws import b64url_decode, b64url_encode

from .errors import IdPError

KEK_FILE = "kek"
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1


class KeystoreError(IdPError, RuntimeError):
    """The keystore cannot be opened or an envelope cannot be decrypted."""


@dataclass(frozen=True)
class Keystore:
    """Seals and opens private keys. Holds the KEK (or passphrase) in memory only."""

    source: str  # "kek", "passphrase" or "file:<path>"
    _kek: bytes | None = None
    _passphrase: bytes | None = None

    @classmethod
    def open(cls, *, keys_dir: Path, kek: str | None = None, passphrase: str | None = None,
             create: bool = True) -> Keystore:
        if kek:
            try:
                raw = base64.urlsafe_b64decode(kek + "=" * (-len(kek) % 4))
            except ValueError:
                raw = b""
            if len(raw) != 32:
                raise KeystoreError("IDP_KEYSTORE_KEK must be 32 bytes, base64url-encoded")
            return cls("kek", _kek=raw)
        if passphrase:
            if len(passphrase) < 12:
                raise KeystoreError("IDP_KEYSTORE_PASSPHRASE must be at least 12 characters")
            return cls("passphrase", _passphrase=passphrase.encode("utf-8"))
        path = Path(keys_dir) / KEK_FILE
        if not path.exists():
            if not create:
                raise KeystoreError(f"no keystore KEK at {path} and none configured")
            _make_private_dir(path.parent)
            # Write the whole key to a private temporary file, then link it into place: the
            # link is atomic, so a process starting at the same moment sees either no file or
            # a complete one (never the empty file an O_EXCL create leaves before its write).
            try:
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".kek-")  # mode 0600
            except OSError as exc:
                raise KeystoreError(f"cannot write the keystore KEK in {path.parent}: {exc.strerror}") from None
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.write(b64url_encode(secrets.token_bytes(32)) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                with contextlib.suppress(FileExistsError):  # another process created it first: use theirs
                    os.link(tmp, path)
            except OSError as exc:  # e.g. a full disk: the partial temporary file goes below
                raise KeystoreError(f"cannot write the keystore KEK {path}: {exc.strerror}") from None
            finally:
                os.unlink(tmp)
        try:
            if path.stat().st_mode & 0o077:
                raise KeystoreError(f"{path} must be readable by its owner only (chmod 600)")
            text = path.read_text()
        except OSError as exc:
            raise KeystoreError(f"cannot read the keystore KEK {path}: {exc.strerror}") from None
        try:
            raw = b64url_decode(text.strip())
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise KeystoreError(f"{path} does not hold a 32-byte key")
        return cls(f"file:{path}", _kek=raw)

    def _key(self, salt: bytes | None) -> bytes:
        if self._kek is not None:
            return self._kek
        if self._passphrase is None or salt is None:
            raise KeystoreError("a passphrase keystore needs the envelope's salt")
        return Scrypt(salt=salt, length=32, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P).derive(self._passphrase)

    def seal(self, plaintext: bytes, *, kid: str) -> str:
        salt = secrets.token_bytes(16) if self._passphrase is not None else None
        nonce = secrets.token_bytes(12)
        ct = AESGCM(self._key(salt)).encrypt(nonce, plaintext, kid.encode("utf-8"))
        env = {"v": 1, "enc": "A256GCM", "kdf": "scrypt" if salt else "kek", "nonce": b64url_encode(nonce),
               "ct": b64url_encode(ct)}
        if salt:
            env.update(salt=b64url_encode(salt), n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
        return json.dumps(env, separators=(",", ":"))

    def open_envelope(self, envelope: str, *, kid: str) -> bytes:
        try:
            env = json.loads(envelope)
            salt = b64url_decode(env["salt"]) if env.get("kdf") == "scrypt" else None
            if (salt is None) != (self._passphrase is None):
                raise KeystoreError(
                    f"key {kid} was sealed with a {env.get('kdf')} keystore; this process has a {self.source} one"
                )
            return AESGCM(self._key(salt)).decrypt(b64url_decode(env["nonce"]), b64url_decode(env["ct"]),
                                                   kid.encode("utf-8"))
        except InvalidTag:
            raise KeystoreError(f"cannot decrypt key {kid}: wrong passphrase/KEK for this database") from None
        except (KeyError, ValueError, TypeError) as exc:
            raise KeystoreError(f"corrupt keystore envelope for key {kid}: {exc}") from None


def _make_private_dir(path: Path) -> None:
    """Create the keys directory owner-only (0700) whatever the umask; an existing one is left as is."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            return
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
    except OSError as exc:
        raise KeystoreError(f"cannot create the keys directory {path}: {exc.strerror}") from None
