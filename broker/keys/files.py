"""Secret files on disk: created 0600 and atomically, read back with clear errors.

A key file that is missing, empty, damaged, or readable by others (outside development mode)
stops the command with a message naming the file; nothing is half-written.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from contextlib import suppress
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.errors import ConfigurationError, KeyError_
from broker.settings import Settings


def write_secret_file(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600; refuse to overwrite an existing key."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if path exists: never overwrite a key
    except FileExistsError as exc:
        raise KeyError_(f"key file {path} already exists; refusing to overwrite it") from exc
    finally:
        tmp.unlink()


def write_b64_key(path: Path, key: bytes) -> None:
    write_secret_file(path, base64.b64encode(key) + b"\n")


def read_secret_file(settings: Settings, path: Path) -> bytes:
    settings.check_secret_file(path)
    data = path.read_bytes()
    if not data.strip():
        raise KeyError_(f"key file {path} is empty")
    return data


def read_b64_key(settings: Settings, path: Path, length: int = 32) -> bytes:
    raw = read_secret_file(settings, path)
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except binascii.Error as exc:
        raise KeyError_(f"key file {path} is damaged: not base64") from exc
    if len(key) != length:
        raise KeyError_(f"key file {path} is damaged: {len(key)} bytes, expected {length}")
    return key


def require_dir(path: Path) -> Path:
    if not path.is_dir():
        raise ConfigurationError(f"{path} does not exist; run `broker init` first")
    return path


def ensure_b64_key(settings: Settings, path: Path) -> bytes:
    """A random 256-bit key file (base64, 0600), created on first use in a data directory that
    lacks it; a process racing to create it reads the one written first."""
    if not path.exists():
        require_dir(settings.keys_dir)
        with suppress(KeyError_):  # another process created it first: use that one
            write_b64_key(path, secrets.token_bytes(32))
    return read_b64_key(settings, path)


def write_ed25519_key(path: Path, public_path: Path) -> Ed25519PrivateKey:
    """A new Ed25519 key: private PEM (PKCS#8, 0600, never overwritten), public PEM beside it."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_secret_file(path, pem)
    public_path.write_bytes(public_pem(key))
    return key


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def read_ed25519_key(settings: Settings, path: Path, what: str) -> Ed25519PrivateKey:
    """The Ed25519 private key (PEM) of ``path``; a damaged file or another kind of key is a clear
    ``KeyError_`` naming ``what``."""
    try:
        key = serialization.load_pem_private_key(read_secret_file(settings, path), password=None)
    except ValueError as exc:
        raise KeyError_(f"{what} {path} is damaged: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyError_(f"{what} {path} is not an Ed25519 key")
    return key


def load_ed25519_key(
    settings: Settings, path: Path, public_path: Path, what: str
) -> Ed25519PrivateKey:
    """The Ed25519 key of ``path``, created on first use (a racing process's key wins); its
    public key rewritten beside it if lost. ``what`` names the key in errors."""
    if not path.exists():
        require_dir(settings.keys_dir)
        with suppress(KeyError_):  # another process created it first: use that one
            write_ed25519_key(path, public_path)
    key = read_ed25519_key(settings, path, what)
    if not public_path.exists():  # lost, or the creator stopped between the two files
        public_path.write_bytes(public_pem(key))
    return key
