"""``docs/x1332-traceability.md`` names only tests that exist: every ``tests/...`` path it cites
is a file or folder of the suite, and every ``::test_name`` is defined there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "x1332-traceability.md"


def _references() -> list[str]:
    return re.findall(r"`(tests/[^`]+)`", DOC.read_text(encoding="utf-8"))


def test_every_cited_test_exists() -> None:
    refs = _references()
    assert len(refs) > 40  # the table cites tests for every implemented ID
    assert [ref for ref in refs if not _exists(ref)] == []


def _exists(ref: str) -> bool:
    path, _, name = ref.partition("::")
    target = ROOT / path.split(" ")[0]
    if not target.exists():
        return False
    return not name or target.is_dir() or f"def {name}(" in target.read_text()


def test_every_x1332_id_has_a_row() -> None:
    rows = set(re.findall(r"^\| ([TRC]\d(?:\.\d)?) \|", DOC.read_text(), re.MULTILINE))
    expected = {f"T{i}" for i in range(1, 9)}
    expected |= {f"R1.{i}" for i in range(1, 5)} | {f"R2.{i}" for i in range(1, 6)}
    expected |= {f"R3.{i}" for i in range(1, 6)} | {f"R4.{i}" for i in range(1, 5)}
    expected |= {f"C1.{i}" for i in range(1, 9)} | {f"C2.{i}" for i in range(1, 5)}
    expected |= {f"C3.{i}" for i in range(1, 4)} | {f"C4.{i}" for i in range(1, 4)}
    assert rows == expected
