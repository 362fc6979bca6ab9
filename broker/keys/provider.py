"""The key-encryption key (KEK) in files: one 0600 file per version, AES-256-GCM key wrapping.

``FileKeyProvider`` is the embedded implementation of ``broker.kit.envelope.KeyProvider``; a
KMS or HSM provider implements the same three methods. Every version stays readable until the
data keys wrapped by it are re-wrapped (``broker keys rotate``), after which it is retired.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.errors import KeyError_
from broker.keys.files import read_b64_key, write_b64_key
from broker.kit.envelope import WrappedKey
from broker.settings import Settings

_KEK_FILE = re.compile(r"^kek-v(\d{4})\.key$")


def _kek_id(version: int) -> str:
    return f"file:v{version}"


class FileKeyProvider:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._dir = settings.keys_dir
        self._ciphers: dict[str, AESGCM] = {}
        for version in self._versions():
            key = read_b64_key(settings, self._path(version))
            self._ciphers[_kek_id(version)] = AESGCM(key)
        if not self._ciphers:
            raise KeyError_(f"no key-encryption key in {self._dir}; run `broker keys init`")

    @classmethod
    def create(cls, settings: Settings) -> FileKeyProvider:
        """Generate version 1 (``broker keys init``); refuses if a KEK already exists."""
        path = settings.keys_dir / "kek-v0001.key"
        write_b64_key(path, AESGCM.generate_key(bit_length=256))
        return cls(settings)

    def _path(self, version: int) -> Path:
        return self._dir / f"kek-v{version:04d}.key"

    def _versions(self) -> list[int]:
        if not self._dir.is_dir():
            return []
        found = (_KEK_FILE.match(p.name) for p in self._dir.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def kek_ids(self) -> list[str]:
        return list(self._ciphers)

    def current_kek_id(self) -> str:
        """The newest version this provider loaded (or added): wrapping needs its key in
        memory, so a version another process adds is used after a restart."""
        return max(self._ciphers, key=lambda k: int(k.removeprefix("file:v")))

    def wrap(self, key: bytes, context: bytes) -> WrappedKey:
        kek_id = self.current_kek_id()
        nonce = os.urandom(12)
        blob = nonce + self._ciphers[kek_id].encrypt(nonce, key, kek_id.encode() + b"|" + context)
        return WrappedKey(kek_id=kek_id, blob=blob)

    def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes:
        cipher = self._ciphers.get(wrapped.kek_id)
        if cipher is None:
            raise KeyError_(f"key-encryption key {wrapped.kek_id} is not available")
        aad = wrapped.kek_id.encode() + b"|" + context
        try:
            return cipher.decrypt(wrapped.blob[:12], wrapped.blob[12:], aad)
        except InvalidTag as exc:
            raise KeyError_(
                f"a data key does not unwrap under {wrapped.kek_id}: the key file or the "
                "stored key is damaged, or it was wrapped for another record"
            ) from exc

    def add_version(self) -> str:
        """Create the next KEK version and make it current; returns its id."""
        version = self._versions()[-1] + 1
        key = AESGCM.generate_key(bit_length=256)
        write_b64_key(self._path(version), key)
        self._ciphers[_kek_id(version)] = AESGCM(key)
        return _kek_id(version)

    def retire(self, kek_id: str) -> None:
        """Delete an old KEK version's file once nothing is wrapped by it."""
        if kek_id == self.current_kek_id():
            raise KeyError_("refusing to retire the current key-encryption key")
        version = int(kek_id.removeprefix("file:v"))
        self._path(version).unlink(missing_ok=True)
        self._ciphers.pop(kek_id, None)
