"""The file key provider: 0600 key files, wrapping bound to context, clear errors (C1.6)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from broker.errors import ConfigurationError, KeyError_
from broker.keys.provider import FileKeyProvider
from broker.settings import Mode
from tests.broker.fakes import settings_for


def test_C1_6_kek_file_is_created_private(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    provider = FileKeyProvider.create(settings)
    path = settings.keys_dir / "kek-v0001.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert provider.current_kek_id() == "file:v1"


def test_kek_init_refuses_to_overwrite(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    FileKeyProvider.create(settings)
    with pytest.raises(KeyError_, match="already exists"):
        FileKeyProvider.create(settings)


def test_C1_6_wrapped_key_unwraps_only_with_its_context(tmp_path: Path) -> None:
    provider = FileKeyProvider.create(settings_for(tmp_path))
    wrapped = provider.wrap(b"k" * 32, b"dk_1")
    assert provider.unwrap(wrapped, b"dk_1") == b"k" * 32
    with pytest.raises(KeyError_, match="does not unwrap"):
        provider.unwrap(wrapped, b"dk_2")


def test_C1_6_old_kek_versions_still_unwrap_after_a_new_version(tmp_path: Path) -> None:
    provider = FileKeyProvider.create(settings_for(tmp_path))
    old = provider.wrap(b"k" * 32, b"ctx")
    assert provider.add_version() == "file:v2"
    assert provider.wrap(b"k" * 32, b"ctx").kek_id == "file:v2"
    assert provider.unwrap(old, b"ctx") == b"k" * 32


def test_world_readable_kek_is_refused_outside_development(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    FileKeyProvider.create(settings)
    (settings.keys_dir / "kek-v0001.key").chmod(0o644)
    with pytest.raises(ConfigurationError, match="readable by others"):
        FileKeyProvider(settings)
    FileKeyProvider(settings_for(tmp_path, Mode.development))  # allowed while developing


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"not base64!!\n", "not base64"), (b"c2hvcnQ=\n", "5 bytes, expected 32")],
)
def test_damaged_kek_file_gives_a_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    settings = settings_for(tmp_path)
    FileKeyProvider.create(settings)
    (settings.keys_dir / "kek-v0001.key").write_bytes(content)
    with pytest.raises(KeyError_, match=message):
        FileKeyProvider(settings)


def test_missing_kek_tells_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(KeyError_, match="broker keys init"):
        FileKeyProvider(settings_for(tmp_path))


def test_a_different_kek_cannot_unwrap(tmp_path: Path) -> None:
    wrapped = FileKeyProvider.create(settings_for(tmp_path / "a")).wrap(b"k" * 32, b"ctx")
    other = FileKeyProvider.create(settings_for(tmp_path / "b"))
    with pytest.raises(KeyError_):
        other.unwrap(wrapped, b"ctx")
