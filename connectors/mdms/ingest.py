"""MDMS ingest: every frame of a batch answered accepted, duplicate or rejected (C1.5, T2, T3).

One batch is one transaction (the caller's): the meters of the batch are read (and locked) in
one query, each frame is parsed, matched to its meter, verified and decrypted under the meter's
keys (C1.3, C1.5), decoded, and checked:

- parse errors → ``malformed``, ``truncated``, ``unprotected``, ``wrong_suite``;
- unknown or retired system title → ``unknown_meter``; a tag that does not verify under any
  usable key version → ``bad_tag`` (T2);
- the body's system title differs from the envelope's → ``body_mismatch``;
- interval ends too far in the future or past of the MDMS clock → ``clock_future``/``clock_past``;
- a counter not above the last accepted under that key: a ``duplicate`` when every reading it
  carries is already stored with the same values (a resend: at-least-once delivery), else
  ``replay`` (T2: an old frame injected after newer ones).

Accepted readings go through VEE (``connectors.mdms.vee``) and are merged into the meter's day
blocks (``connectors.mdms.merge``), sealed under the customer's data key. The batch ends with
one audit entry summarising it and one tally row per outcome, so a flood of bad frames becomes
a few summary entries.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from broker.audit.events import AuditEvent, AuditSink
from broker.keys.service import DataKeys, KeyDestroyed
from broker.kit.clock import Clock, to_us
from broker.kit.envelope import KeyRing, key_ref_of
from broker.kit.ids import SubjectHasher
from broker.storage.raw import Raw
from connectors.dlms.frames import FrameRejected, Reason
from connectors.mdms import fastlane
from connectors.mdms.answers import ACCEPTED, DUPLICATE, REJECTED, BatchResult, FrameAnswer
from connectors.mdms.block import DAY_S, Readings, block_context, day_of, decode_day, encode_day
from connectors.mdms.fastlane import FastFrame, eligible
from connectors.mdms.merge import all_stored, merge, unique
from connectors.mdms.opening import FrameOpener, Opened, Window, parse_envelopes
from connectors.mdms.readings import fetch_sealed_days
from connectors.mdms.registry import ACTIVE, KeyState, MeterContext, MeterRegistry
from connectors.mdms.vee import Previous, Quality, VeeLimits, flag_names, validate

DATA_KEY_CACHE = 100_000
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class IngestSettings:
    max_future_s: int = 900
    """Interval ends later than this past the MDMS clock are refused (meter clock ahead)."""
    max_age_s: int = 35 * 86_400
    """Interval ends older than this are refused (stale or replayed history)."""
    fast_lane: bool = True
    """Place the common case (a meter's next push) for the whole batch at once."""
    key_grace_s: int = 86_400
    """How long frames under a superseded meter key still verify."""
    vee: VeeLimits = field(default_factory=VeeLimits)


@dataclass
class _Day:
    existing: Readings | None = None
    key_ref: str | None = None
    incoming: list[Readings] = field(default_factory=list)


class IngestPipeline:
    def __init__(
        self,
        registry: MeterRegistry,
        data_keys: DataKeys,
        audit: AuditSink,
        clock: Clock,
        hasher: SubjectHasher,
        settings: IngestSettings | None = None,
    ) -> None:
        self._registry = registry
        self._data_keys = data_keys
        self._audit = audit
        self._clock = clock
        self._hash = hasher
        self.settings = settings or IngestSettings()
        self._data_key_cache: OrderedDict[str, bytes] = OrderedDict()

    def ingest(
        self, session: Any, frames: Sequence[bytes], source: str, batch_id: str, actor: str
    ) -> BatchResult:
        """Answer every frame of a batch inside the caller's transaction (no commit here)."""
        run = _Run(self, session, frames, source, batch_id)
        result = run.execute()
        self._record(session, result, run, actor)
        return result

    def _record(self, session: Any, result: BatchResult, run: _Run, actor: str) -> None:
        day = int(to_us(self._clock.now()) // (DAY_S * 1_000_000))
        outcomes = result.outcomes()
        raw = Raw(session)
        raw.executemany(
            "INSERT INTO ingest_tally (day, source, outcome, frames) VALUES (?,?,?,?) "
            "ON CONFLICT (day, source, outcome) DO UPDATE SET frames = ingest_tally.frames + "
            "excluded.frames",
            [(day, result.source[:120], outcome, n) for outcome, n in sorted(outcomes.items())],
        )
        details: dict[str, Any] = {
            "batch_id": result.batch_id,
            "source": result.source,
            **{k: v for k, v in result.to_json(frames=False).items() if k != "batch_id"},
            "rejected_meters": {
                r: sorted(m)[:MAX_EXAMPLES] for r, m in run.rejected_meters.items()
            },
        }
        self._audit.record(session, [AuditEvent("mdms.ingest_batch", actor, None, details)])


class _Run:
    """One batch's work: open frames, place their readings, write what changed."""

    def __init__(
        self,
        pipeline: IngestPipeline,
        session: Any,
        frames: Sequence[bytes],
        source: str,
        batch_id: str,
    ) -> None:
        self.p = pipeline
        self.session = session
        self.frames = frames
        self.now_us = to_us(pipeline._clock.now())
        settings = pipeline.settings
        self.window = Window(self.now_us, settings.max_future_s, settings.max_age_s)
        self.answers: list[FrameAnswer | None] = [None] * len(frames)
        self.result = BatchResult(batch_id, source, [])
        self.rejected_meters: dict[str, set[str]] = defaultdict(set)
        self.key_refs: dict[str, str | None] = {}
        self.days: dict[tuple[str, int], _Day] = {}
        self.horizon: dict[str, int] = {}
        """Per meter, the last day that can hold a stored block (before this batch)."""
        self.touched: dict[str, MeterContext] = {}
        self.fast_blocks: list[tuple[str, int, bytes, int, int]] = []
        self.flag_counts: Counter[str] = Counter()

    def reject(self, index: int, exc: FrameRejected, meter_id: str | None = None) -> None:
        self.answers[index] = FrameAnswer(REJECTED, exc.reason.value, exc.detail)
        if meter_id is not None and len(self.rejected_meters[exc.reason.value]) < MAX_EXAMPLES:
            self.rejected_meters[exc.reason.value].add(self.p._hash(meter_id))

    def execute(self) -> BatchResult:
        envelopes = parse_envelopes(self.frames, self.reject)
        contexts = self.p._registry.load(self.session, [c[1] for c in envelopes.values()])
        self.horizon = {
            m: int((c.last_end_s - 1) // DAY_S) for m, c in contexts.items() if c.last_end_s
        }
        self._customer_keys(contexts)
        opener = FrameOpener(self.p._registry, self.window, self.key_refs, self.reject)
        opened = opener.open_all(envelopes, contexts)
        accepted, candidates = self._order(opened)
        self._place(accepted, {o.ctx.meter_id for o in candidates})
        self._judge_candidates(candidates)
        self._write(contexts)
        assert all(a is not None for a in self.answers), "every frame is answered"
        self.result.answers = [a for a in self.answers if a is not None]
        return self.result

    # ---- per frame --------------------------------------------------------------------------

    def _customer_keys(self, contexts: dict[str, MeterContext]) -> None:
        """Each customer's live data key, read with the meters; keys created for customers
        that have none (provisioned before they had one)."""
        self.key_refs = {c.customer_ref: c.data_key_ref for c in contexts.values()}
        missing = [
            c.customer_ref
            for c in contexts.values()
            if c.data_key_ref is None and c.status == ACTIVE
        ]
        if missing:
            self.key_refs.update(self.p._data_keys.current_refs(self.session, missing, "mdms"))

    def _order(self, opened: list[Opened]) -> tuple[list[Opened], list[Opened]]:
        """Counters in arrival order: above the last accepted → accepted, else a candidate."""
        accepted, candidates = [], []
        for o in opened:
            if o.ic > o.key.last_ic:
                o.key.last_ic = o.ic
                o.key.changed = o.key.version != o.ctx.key_version
                accepted.append(o)
                if o.key.version > o.ctx.key_version:
                    self._promote(o.ctx, o.key)
            else:
                candidates.append(o)
        return accepted, candidates

    def _promote(self, ctx: MeterContext, key: KeyState) -> None:
        """A frame verified under a key sent to the meter whose answer never came back: the
        meter has it, so it becomes current and the old one enters its grace window."""
        for old in ctx.keys:
            if old.version < key.version and old.valid_until_us is None:
                old.valid_until_us = self.now_us + self.p.settings.key_grace_s * 1_000_000
                old.changed = True  # now a past version: its counter moves to meter_key
        ctx.key_version = key.version
        key.changed = False
        self.touched[ctx.meter_id] = ctx

    # ---- placing readings -------------------------------------------------------------------

    def _place(self, accepted: list[Opened], with_candidates: set[str]) -> None:
        by_meter: dict[str, list[Opened]] = defaultdict(list)
        for o in accepted:
            by_meter[o.ctx.meter_id].append(o)
        if self.p.settings.fast_lane:
            self._place_fast(by_meter, with_candidates)
        flagged: dict[str, Readings] = {}
        for meter_id, group in by_meter.items():
            flagged[meter_id] = self._validate(group)
        self._load_days(list(self.days))
        for meter_id, group in by_meter.items():
            self._answer(group, flagged[meter_id])

    def _place_fast(self, by_meter: dict[str, list[Opened]], with_candidates: set[str]) -> None:
        """Take the meters the fast lane can place out of ``by_meter`` and place them."""
        chosen: list[tuple[Opened, FastFrame]] = []
        for meter_id, group in by_meter.items():
            if len(group) != 1 or meter_id in with_candidates:
                continue
            o = group[0]
            interval = o.ctx.interval_s
            frame = FastFrame(
                meter_id, interval, o.ctx.last_end_s, o.ctx.last_register_wh, o.readings
            )
            if eligible(frame, self.horizon.get(meter_id, -1)):
                chosen.append((o, frame))
        if not chosen:
            return
        placed, counts = fastlane.place([f for _o, f in chosen], self.p.settings.vee)
        self.flag_counts.update(counts)
        for (o, _frame), block in zip(chosen, placed, strict=True):
            if block is not None:
                del by_meter[o.ctx.meter_id]
                self._take_fast(o, block)

    def _take_fast(self, o: Opened, block: fastlane.Placed) -> None:
        ctx = o.ctx
        ctx.last_end_s, ctx.last_register_wh = block.last_end, block.last_register
        self.touched[ctx.meter_id] = ctx
        self.fast_blocks.append(
            (ctx.meter_id, block.day, block.plaintext, block.readings, block.flags)
        )
        self.result.readings_stored += block.readings
        self.answers[o.index] = FrameAnswer(
            ACCEPTED, readings=block.readings, flags=flag_names(block.flags)
        )

    def _validate(self, group: list[Opened]) -> Readings:
        ctx = group[0].ctx
        self.touched[ctx.meter_id] = ctx
        new = unique(Readings.concat([o.readings for o in group]))
        interval = ctx.interval_s
        flagged, estimates = validate(
            new, Previous(ctx.last_end_s, ctx.last_register_wh), interval, self.p.settings.vee
        )
        for part in (flagged, estimates):
            self._stage(ctx.meter_id, part)
        last = int(flagged.end_s[-1])
        if ctx.last_end_s is None or last > ctx.last_end_s:
            ctx.last_end_s, ctx.last_register_wh = last, int(flagged.register[-1])
        for q in Quality:  # estimates are counted when stored (an interval may have a reading)
            n = int(np.count_nonzero(flagged.quality & q.value))
            if n:
                self.flag_counts[str(q.name).lower()] += n
        return flagged

    def _stage(self, meter_id: str, readings: Readings) -> None:
        if len(readings) == 0:
            return
        days = day_of(readings.end_s)
        cuts = np.flatnonzero(np.diff(days)) + 1
        for start, stop in zip([0, *cuts.tolist()], [*cuts.tolist(), len(days)], strict=True):
            key = (meter_id, int(days[start]))
            self.days.setdefault(key, _Day()).incoming.append(readings.take(slice(start, stop)))

    def _answer(self, group: list[Opened], flagged: Readings) -> None:
        for o in group:
            pos = np.searchsorted(flagged.end_s, o.readings.end_s)
            flags = int(np.bitwise_or.reduce(flagged.quality[pos])) if len(pos) else 0
            self.answers[o.index] = FrameAnswer(
                ACCEPTED, readings=len(o.readings), flags=flag_names(flags)
            )

    def _load_days(self, keys: Sequence[tuple[str, int]]) -> None:
        """Read the stored blocks of ``keys`` not read yet; only days up to the day of the
        meter's last stored reading can exist, the others are known empty without a query."""
        wanted: list[tuple[str, int]] = []
        for key in sorted(set(keys)):
            day = self.days.setdefault(key, _Day())
            if day.existing is not None:
                continue
            if key[1] > self.horizon.get(key[0], -1):
                day.existing = Readings.empty()
            else:
                wanted.append(key)
        if not wanted:
            return
        found = fetch_sealed_days(Raw(self.session), wanted)
        ring = self._ring([key_ref_of(sealed) for sealed in found.values()])
        for key in wanted:
            day = self.days[key]
            sealed = found.get(key)
            if sealed is None:
                day.existing = Readings.empty()
                continue
            plain = ring.open(sealed, block_context(*key))
            day.existing = decode_day(key[1], plain)[1]
            day.key_ref = key_ref_of(sealed)

    def _ring(self, key_refs: Sequence[str]) -> KeyRing:
        """Data keys, unwrapped once and kept in a bounded cache across batches (a key that
        is destroyed stops being asked for: ``_customer_keys`` no longer names it)."""
        cache = self.p._data_key_cache
        missing = [r for r in set(key_refs) if r not in cache]
        if missing:
            cache.update(self.p._data_keys.load_many(self.session, missing))
        while len(cache) > DATA_KEY_CACHE:
            cache.popitem(last=False)  # the oldest first, in constant time
        return KeyRing(lambda ref: cache[ref] if ref in cache else self._load_one(ref))

    def _load_one(self, key_ref: str) -> bytes:
        found = self.p._data_keys.load_many(self.session, [key_ref])
        if key_ref not in found:
            raise KeyDestroyed(f"data key {key_ref} was destroyed")
        return found[key_ref]

    def _judge_candidates(self, candidates: list[Opened]) -> None:
        """A counter not above the last accepted: a resend (duplicate) or a replay."""
        if not candidates:
            return
        self._load_days(
            [
                (o.ctx.meter_id, int(d))
                for o in candidates
                for d in np.unique(day_of(o.readings.end_s))
            ]
        )
        for o in candidates:
            if self._stored_everywhere(o):
                self.answers[o.index] = FrameAnswer(DUPLICATE, readings=len(o.readings))
            else:
                last = o.key.last_ic
                self.reject(
                    o.index,
                    FrameRejected(
                        Reason.REPLAY,
                        f"counter {o.ic} is not above {last}, and its readings are new",
                    ),
                    o.ctx.meter_id,
                )

    def _stored_everywhere(self, o: Opened) -> bool:
        days = day_of(o.readings.end_s)
        for d in np.unique(days):
            day = self.days[(o.ctx.meter_id, int(d))]
            if not all_stored(self._merged(day), o.readings.take(days == d)):
                return False
        return True

    def _merged(self, day: _Day) -> Readings:
        existing = day.existing if day.existing is not None else Readings.empty()
        if not day.incoming:
            return existing
        return merge(existing, unique(Readings.concat(day.incoming))).readings

    # ---- writing ----------------------------------------------------------------------------

    def _write(self, contexts: dict[str, MeterContext]) -> None:
        ring = self._ring([r for r in self.key_refs.values() if r is not None])
        inserts, updates = self._blocks(contexts, ring)
        raw = Raw(self.session)
        if inserts or self.fast_blocks:
            # fast-lane blocks are sealed while COPY streams: PostgreSQL stores the first rows
            # on the other core while Python seals the next ones
            raw.copy_in(
                "reading_day",
                ("meter_id", "day", "readings", "estimated", "flags", "sealed", "updated_us"),
                ("text", "int4", "int2", "int2", "int2", "bytea", "int8"),
                chain(self._fast_rows(contexts, ring), inserts),
            )
        raw.update_many(
            "reading_day",
            ("meter_id", "day"),
            ("readings", "estimated", "flags", "sealed", "updated_us"),
            ("int2", "int2", "int2", "bytea", "int8", "text", "int4"),
            updates,
        )
        touched = list(self.touched.values())
        raw.update_many(
            "meter",
            ("meter_id",),
            ("last_end_s", "last_register_wh", "key_version", "last_ic"),
            ("int8", "int8", "int4", "int8", "text"),
            [
                (
                    c.last_end_s,
                    c.last_register_wh,
                    c.key_version,
                    c.last_ic(),
                    c.meter_id,
                )
                for c in touched
            ],
        )
        raw.update_many(
            "meter_key",
            ("meter_id", "version"),
            ("last_ic", "valid_until_us"),
            ("int8", "int8", "text", "int4"),
            [
                (k.last_ic, k.valid_until_us, c.meter_id, k.version)
                for c in touched
                for k in c.keys
                if k.changed
            ],
        )

    def _fast_rows(
        self, contexts: dict[str, MeterContext], ring: KeyRing
    ) -> Iterator[tuple[Any, ...]]:
        for meter_id, day_no, plain, n, flags in self.fast_blocks:
            key_ref = self.key_refs[contexts[meter_id].customer_ref]
            assert key_ref is not None
            sealed = ring.seal(key_ref, plain, block_context(meter_id, day_no))
            yield (meter_id, day_no, n, 0, flags, sealed, self.now_us)

    def _blocks(
        self, contexts: dict[str, MeterContext], ring: KeyRing
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The general path's blocks, merged with what is stored: (inserts, updates)."""
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        for (meter_id, day_no), day in sorted(self.days.items()):
            if not day.incoming:
                continue
            existing = day.existing if day.existing is not None else Readings.empty()
            merged = merge(existing, unique(Readings.concat(day.incoming)))
            self.result.readings_stored += merged.added + merged.replaced_estimates
            self.result.estimates += merged.estimates_added
            if merged.estimates_added:
                self.flag_counts["estimated"] += merged.estimates_added
            ctx = contexts[meter_id]
            key_ref = self.key_refs[ctx.customer_ref]
            assert key_ref is not None
            plain = encode_day(day_no, ctx.interval_s, merged.readings)
            sealed = ring.seal(key_ref, plain, block_context(meter_id, day_no))
            q = merged.readings.quality
            estimated = int(np.count_nonzero(q & Quality.ESTIMATED))
            flags = int(np.bitwise_or.reduce(q)) if len(q) else 0
            if day.key_ref is None and len(existing) == 0:
                inserts.append((meter_id, day_no, len(q), estimated, flags, sealed, self.now_us))
            else:
                updates.append((len(q), estimated, flags, sealed, self.now_us, meter_id, day_no))
        self.result.flagged = dict(sorted(self.flag_counts.items()))
        return inserts, updates
