"""Secret files on disk: created 0600 and atomically, read back with clear errors.

A key file that is missing, empty, damaged, or readable by others (outside development mode)
stops the command with a message naming the file; nothing is half-written.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

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
