"""CLI tests run against a data directory of their own, set through the environment."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``BROKER_DATA_DIR`` pointing at a fresh path (not created); embedded defaults otherwise."""
    path = tmp_path / "var"
    monkeypatch.setenv("BROKER_DATA_DIR", str(path))
    monkeypatch.delenv("BROKER_DATABASE_URL", raising=False)
    monkeypatch.delenv("BROKER_MODE", raising=False)
    return path
