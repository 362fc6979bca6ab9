"""The same batches through the fast lane and through the general path, and what each stored.

``test_fastlane`` runs a sequence of batches once with ``IngestSettings(fast_lane=True)`` and
once with ``fast_lane=False`` on the same (emptied) database and compares what came out: every
frame's answer, the batch counts, the meter rows, the day rows and the opened day blocks. A spy
on ``fastlane.place`` counts the frames the fast lane really placed, so a comparison in which the
fast lane never ran cannot pass for one.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from broker.audit.log import AuditLog
from broker.audit.note import NoteSigner
from broker.keys.provider import FileKeyProvider
from broker.keys.service import DataKeys
from broker.kit.clock import FixedClock
from broker.kit.ids import SubjectHasher
from broker.schema.tables import metadata
from broker.storage.db import Database
from connectors.mdms import fastlane
from connectors.mdms.answers import BatchResult
from connectors.mdms.ingest import IngestPipeline, IngestSettings
from connectors.mdms.keyfile import MeterKeyRow
from connectors.mdms.readings import read_days
from connectors.mdms.registry import MeterRegistry
from connectors.mdms.vee import VeeLimits
from tests.broker.fakes import settings_for
from tests.connectors.mdms.conftest import ORIGIN, Mdms

Answer = tuple[str, str | None, str | None, int, tuple[str, ...]]
Totals = tuple[int, int, dict[str, int]]
Block = tuple[int, list[int], list[int], list[int], list[int], list[int]]


def build_mdms(
    db: Database, data_dir: Path, at: datetime, settings: IngestSettings | None = None
) -> Mdms:
    """An MDMS of its own (KEK, audit log, hasher) over ``db``, its clock fixed at ``at``."""
    clock = FixedClock(at)
    provider = FileKeyProvider.create(settings_for(data_dir))
    audit = AuditLog(ORIGIN, NoteSigner(ORIGIN, Ed25519PrivateKey.generate()), clock)
    hasher = SubjectHasher(secrets.token_bytes(32))
    data_keys = DataKeys(provider, audit, clock, hasher)
    registry = MeterRegistry(provider, data_keys, audit, clock, hasher)
    pipeline = IngestPipeline(registry, data_keys, audit, clock, hasher, settings)
    return Mdms(db, clock, provider, audit, data_keys, registry, pipeline, hasher)


def empty(db: Database) -> None:
    """Delete every row (children first) and put back the audit log's head row."""
    with db.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
        conn.execute(text("INSERT INTO audit_head (id, size) VALUES (1, 0)"))


@dataclass
class Seen:
    """Everything an MDMS made of a sequence of batches, in comparable form."""

    answers: list[list[Answer]] = field(default_factory=list)
    totals: list[Totals] = field(default_factory=list)
    meters: list[tuple[Any, ...]] = field(default_factory=list)
    day_rows: list[tuple[Any, ...]] = field(default_factory=list)
    blocks: dict[tuple[str, int], Block] = field(default_factory=dict)
    fast_frames: int = 0
    """Frames the fast lane placed (counted by a spy on ``fastlane.place``)."""

    def outcomes(self) -> dict[str, int]:
        """Frames per status or rejection reason, over all batches."""
        out: dict[str, int] = {}
        for batch in self.answers:
            for status, reason, *_ in batch:
                key = reason if reason is not None else status
                out[key] = out.get(key, 0) + 1
        return out

    def flags(self) -> set[str]:
        return {f for batch in self.answers for a in batch for f in a[4]}


def answers_of(result: BatchResult) -> list[Answer]:
    return [(a.status, a.reason, a.detail, a.readings, tuple(a.flags)) for a in result.answers]


class Lanes:
    """Runs batches through both paths on one database, emptied before each run."""

    def __init__(
        self, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: datetime
    ) -> None:
        self.db, self.at = db, at
        self._dirs = (tmp_path / f"lane-{i}" for i in itertools.count())
        self._placed = 0
        original = fastlane.place

        def spy(
            frames: list[fastlane.FastFrame], limits: VeeLimits
        ) -> tuple[list[fastlane.Placed | None], dict[str, int]]:
            placed, counts = original(frames, limits)
            self._placed += sum(p is not None for p in placed)
            return placed, counts

        monkeypatch.setattr(fastlane, "place", spy)

    def run(
        self,
        rows: Sequence[MeterKeyRow],
        batches: Sequence[Sequence[bytes]],
        fast_lane: bool,
        vee: VeeLimits | None = None,
    ) -> Seen:
        empty(self.db)
        settings = IngestSettings(fast_lane=fast_lane, vee=vee or VeeLimits())
        mdms = build_mdms(self.db, next(self._dirs), self.at, settings)
        with self.db.transaction() as session:
            mdms.registry.provision(session, rows, "test", "test")
        self._placed = 0
        seen = Seen()
        for i, batch in enumerate(batches):
            result = mdms.ingest(*batch, batch_id=f"b{i}")
            seen.answers.append(answers_of(result))
            seen.totals.append((result.readings_stored, result.estimates, result.flagged))
        seen.fast_frames = self._placed
        self._collect(mdms, seen)
        return seen

    def _collect(self, mdms: Mdms, seen: Seen) -> None:
        with self.db.engine.connect() as conn:
            seen.meters = [
                tuple(r)
                for r in conn.execute(
                    text(
                        "SELECT meter_id, key_version, last_ic, interval_s, last_end_s, "
                        "last_register_wh FROM meter ORDER BY meter_id"
                    )
                )
            ]
            seen.day_rows = [
                tuple(r)
                for r in conn.execute(
                    text(
                        "SELECT meter_id, day, readings, estimated, flags FROM reading_day "
                        "ORDER BY meter_id, day"
                    )
                )
            ]
        with self.db.transaction() as session:
            for meter_id in sorted({r[0] for r in seen.day_rows}):
                for d in read_days(session, mdms.data_keys, meter_id, 0, 2**31 - 1):
                    r = d.readings
                    columns = (r.end_s, r.register, r.value, r.status, r.quality)
                    seen.blocks[(meter_id, d.day)] = (
                        d.interval_s,
                        *(np.asarray(c).tolist() for c in columns),
                    )

    def both(
        self,
        rows: Sequence[MeterKeyRow],
        batches: Sequence[Sequence[bytes]],
        vee: VeeLimits | None = None,
    ) -> tuple[Seen, Seen]:
        """(fast lane, general path), after checking that the general path took no shortcut."""
        fast = self.run(rows, batches, True, vee)
        general = self.run(rows, batches, False, vee)
        assert general.fast_frames == 0
        return fast, general


def assert_same(fast: Seen, general: Seen) -> None:
    """Both paths answered, counted and stored exactly the same; the first difference named."""
    assert len(fast.answers) == len(general.answers)
    for i, (a, b) in enumerate(zip(fast.answers, general.answers, strict=True)):
        for j, (x, y) in enumerate(zip(a, b, strict=True)):
            assert x == y, f"batch {i}, frame {j}: fast lane {x} != general path {y}"
    for i, (t, u) in enumerate(zip(fast.totals, general.totals, strict=True)):
        assert t == u, f"batch {i} (stored, estimates, flagged): fast {t} != general {u}"
    assert fast.meters == general.meters
    assert fast.day_rows == general.day_rows
    assert fast.blocks.keys() == general.blocks.keys()
    for key, block in fast.blocks.items():
        assert block == general.blocks[key], f"day block {key} differs"
