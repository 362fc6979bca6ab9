"""Fixtures for policy tests: the shipped bundle, and copies of it to break on purpose."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from broker.policy.bundle import Bundle, load_bundle, shipped_bundle_dir


@pytest.fixture(scope="session")
def shipped() -> Bundle:
    return load_bundle(shipped_bundle_dir())


@pytest.fixture
def bundle_copy(tmp_path: Path) -> Path:
    """A writable copy of the shipped bundle."""
    target = tmp_path / "candidate"
    shutil.copytree(shipped_bundle_dir(), target, ignore=shutil.ignore_patterns("*.md", "*.yaml"))
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


POLICY = Path("broker/release/policy.rego")
TESTS = Path("broker/release/policy_test.rego")
CATALOGUE = Path("broker/catalogue/data.json")
