"""``broker audit export`` and offline ``verify``: the regulator's bundle holds, and every
tampering (changed byte, dropped, duplicated, reordered or inserted entry, another key, a
rolled-back checkpoint, truncation) is caught with a reason naming what failed."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.audit.events import AuditEvent
from broker.audit.export import ExportFilters, export_bundle
from broker.audit.log import AuditLog
from broker.audit.note import NoteSigner
from broker.audit.verify import VerificationFailed, verify_bundle
from broker.kit.clock import FixedClock
from broker.schema import migrate
from broker.storage.db import Database
from tests.broker.audit.conftest import ORIGIN


def _fill(db: Database, log: AuditLog, clock: FixedClock, n: int) -> None:
    for i in range(n):
        with db.transaction() as session:
            kind = "key.data_key_destroyed" if i % 3 == 0 else "ca.certificate_issued"
            log.record(session, [AuditEvent(kind, "cli:op", f"hs1:{i:02x}", {"i": i})])
        clock.advance(timedelta(minutes=1))


def _export(db: Database, log: AuditLog, out: Path, **kw: object) -> Path:
    with db.transaction() as session:
        export_bundle(session, log, out, ExportFilters(**kw))  # type: ignore[arg-type]
    return out


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database.from_url(f"sqlite:///{tmp_path / 'audit.db'}")
    migrate.upgrade(database.engine)
    return database


@pytest.fixture
def bundle(db: Database, log: AuditLog, clock: FixedClock, tmp_path: Path) -> Path:
    _fill(db, log, clock, 40)
    return _export(db, log, tmp_path / "audit-export.jsonl")


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def _rewrite(path: Path, change: Callable[[list[str]], list[str]]) -> Path:
    path.write_text("".join(change(_lines(path))))
    return path


def _entry_line(lines: list[str], seq: int) -> int:
    return next(i for i, line in enumerate(lines) if f'"type":"entry","seq":{seq},' in line)


def test_export_verifies_on_both_backends(
    database: Database, log: AuditLog, clock: FixedClock, tmp_path: Path
) -> None:
    _fill(database, log, clock, 300)
    report = verify_bundle(_export(database, log, tmp_path / "e.jsonl"), log.signer.verifier_key())
    assert (report.entries, report.tree_size, report.key_pinned) == (300, 300, True)
    assert report.summary().startswith("OK: 300 entries verified")


def test_filtered_export_verifies(
    db: Database, log: AuditLog, clock: FixedClock, tmp_path: Path
) -> None:
    _fill(db, log, clock, 30)
    start = datetime(2026, 11, 24, 12, 5, tzinfo=UTC)
    out = _export(
        db,
        log,
        tmp_path / "f.jsonl",
        since=start,
        until=start + timedelta(minutes=10),
        types=("key.data_key_destroyed",),
    )
    report = verify_bundle(out, log.signer.verifier_key())
    assert report.entries == 3  # minutes 5..14, every third entry: 6, 9, 12
    assert report.tree_size == 30


def test_without_a_trusted_key_the_report_says_so(bundle: Path) -> None:
    report = verify_bundle(bundle)
    assert not report.key_pinned
    assert report.summary().startswith("UNPINNED: ")
    assert "authenticity NOT checked" in report.summary()


def _flip_in_entry(lines: list[str]) -> list[str]:
    i = _entry_line(lines, 17)
    lines[i] = lines[i].replace('"i":17', '"i":71')
    return lines


def _swap(lines: list[str]) -> list[str]:
    a, b = _entry_line(lines, 5), _entry_line(lines, 6)
    lines[a], lines[b] = lines[b], lines[a]
    return lines


def _insert_forged(lines: list[str]) -> list[str]:
    i = _entry_line(lines, 39)
    forged = json.loads(lines[i])
    forged["seq"] = forged["entry"]["seq"] = 40
    return [*lines[: i + 1], json.dumps(forged, separators=(",", ":")) + "\n", *lines[i + 1 :]]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_flip_in_entry, "entry seq 17 (line"),
        (
            lambda ls: [ln for ln in ls if '"seq":12,' not in ln],
            "entry seq 12 listed in the signed manifest is missing",
        ),
        (
            lambda ls: [
                *ls[: _entry_line(ls, 8) + 1],
                ls[_entry_line(ls, 8)],
                *ls[_entry_line(ls, 8) + 1 :],
            ],
            "entry seq 8 appears again",
        ),
        (_swap, "entry seq 5 listed in the signed manifest is missing"),
        (_insert_forged, "entry seq 40 is not listed in the signed manifest"),
        (lambda ls: ls[:-1], "without its end record: it is truncated"),
        (lambda ls: [*ls[:-1], ls[-1][:-10]], "is cut off: the file is truncated"),
        (lambda ls: [ls[0][:50] + "\n", *ls[1:]], "line 1: not valid JSON"),
        (
            lambda ls: [ls[0].replace('"tree_size":40', '"tree_size":41'), *ls[1:]],
            "manifest was changed",
        ),
    ],
    ids=[
        "changed-byte",
        "dropped",
        "duplicated",
        "reordered",
        "inserted",
        "truncated-line",
        "truncated-bytes",
        "broken-json",
        "manifest-edit",
    ],
)
def test_tampering_is_caught_with_its_reason(
    bundle: Path, log: AuditLog, change: Callable[[list[str]], list[str]], reason: str
) -> None:
    with pytest.raises(VerificationFailed, match=reason.replace("(", r"\(")):
        verify_bundle(_rewrite(bundle, change), log.signer.verifier_key())


def test_every_single_byte_change_is_caught(bundle: Path, log: AuditLog) -> None:
    original = bundle.read_bytes()
    step = max(1, len(original) // 150)
    for position in range(0, len(original), step):
        damaged = bytearray(original)
        damaged[position] ^= 0x04
        bundle.write_bytes(bytes(damaged))
        with pytest.raises(VerificationFailed):
            verify_bundle(bundle, log.signer.verifier_key())


def test_export_signed_by_another_key_is_rejected(
    db: Database, clock: FixedClock, tmp_path: Path, log: AuditLog
) -> None:
    impostor = AuditLog(ORIGIN, NoteSigner(ORIGIN, Ed25519PrivateKey.generate()), clock)
    _fill(db, impostor, clock, 5)
    out = _export(db, impostor, tmp_path / "x.jsonl")
    with pytest.raises(VerificationFailed, match="not by the trusted key"):
        verify_bundle(out, log.signer.verifier_key())


def test_rolled_back_checkpoint_is_caught(
    db: Database, log: AuditLog, clock: FixedClock, tmp_path: Path
) -> None:
    _fill(db, log, clock, 10)
    with db.transaction() as session:
        old_note = log.checkpoint(session).note
    _fill(db, log, clock, 10)
    bundle = _export(db, log, tmp_path / "r.jsonl")

    def swap_checkpoint(lines: list[str]) -> list[str]:
        lines[2] = json.dumps({"type": "checkpoint", "note": old_note}) + "\n"
        return lines

    with pytest.raises(VerificationFailed, match="checkpoint size 10 differs"):
        verify_bundle(_rewrite(bundle, swap_checkpoint), log.signer.verifier_key())


def test_consistency_from_an_earlier_checkpoint(
    db: Database, log: AuditLog, clock: FixedClock, tmp_path: Path
) -> None:
    _fill(db, log, clock, 10)
    with db.transaction() as session:
        earlier = log.checkpoint(session).note
    _fill(db, log, clock, 7)
    out = tmp_path / "c.jsonl"
    with db.transaction() as session:
        export_bundle(session, log, out, ExportFilters(), from_checkpoint=earlier)
    assert verify_bundle(out, log.signer.verifier_key()).previous_size == 10


def test_log_rolled_back_behind_a_published_checkpoint_is_caught(
    db: Database, log: AuditLog, clock: FixedClock, tmp_path: Path
) -> None:
    _fill(db, log, clock, 10)
    bundle = _export(db, log, tmp_path / "old.jsonl")  # what a rolled-back log would serve
    _fill(db, log, clock, 7)
    with db.transaction() as session:
        published = log.checkpoint(session).note  # the regulator saw size 17 before

    def add_published(lines: list[str]) -> list[str]:
        previous = json.dumps({"type": "previous_checkpoint", "note": published}) + "\n"
        return [*lines[:3], previous, *lines[3:]]

    reason = r"rolled back: the checkpoint \(size 10\) is older"
    with pytest.raises(VerificationFailed, match=reason):
        verify_bundle(_rewrite(bundle, add_published), log.signer.verifier_key())


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "is empty"), (b"hello\n", "not valid JSON"), (b'{"type":"x"}\n', "not an audit export")],
)
def test_files_that_are_not_exports_get_a_clear_error(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    with pytest.raises(VerificationFailed, match=reason):
        verify_bundle(path)


def test_missing_file_gets_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VerificationFailed, match="cannot read"):
        verify_bundle(tmp_path / "absent.jsonl")
