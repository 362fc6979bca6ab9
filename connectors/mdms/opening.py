"""The per-frame stage of ingest: parse, match to a meter, verify and decrypt, decode, check
(C1.3, C1.5, T2). A frame either comes out as an ``Opened`` frame or is rejected with its reason
through the ``reject`` callback; ``connectors.mdms.ingest`` places what comes out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from connectors.dlms.bulk import Decoded, decode_bodies
from connectors.dlms.frames import (
    FrameRejected,
    Reason,
    data_notification_body,
    open_ciphered,
    parse_ciphered,
)
from connectors.mdms.block import Readings
from connectors.mdms.registry import ACTIVE, KeyState, MeterContext, MeterRegistry

Reject = Callable[[int, FrameRejected, "str | None"], None]


@dataclass(frozen=True)
class Window:
    """The MDMS clock and how far from it interval ends may be."""

    now_us: int
    max_future_s: int
    max_age_s: int

    @property
    def now_s(self) -> int:
        return self.now_us // 1_000_000


@dataclass
class Opened:
    """A frame that verified and decoded; still to be placed."""

    index: int
    ctx: MeterContext
    key: KeyState
    ic: int
    readings: Readings


def parse_envelopes(frames: Sequence[bytes], reject: Reject) -> dict[int, tuple[Any, str]]:
    """Each frame's envelope and meter id (what anyone on the link can read), by index."""
    out: dict[int, tuple[Any, str]] = {}
    for i, frame in enumerate(frames):
        try:
            envelope = parse_ciphered(frame)
        except FrameRejected as exc:
            reject(i, exc, None)
            continue
        out[i] = (envelope, envelope.system_title.hex().upper())
    return out


class FrameOpener:
    def __init__(
        self,
        registry: MeterRegistry,
        window: Window,
        key_refs: dict[str, str | None],
        reject: Reject,
    ) -> None:
        self.registry = registry
        self.window = window
        self.key_refs = key_refs
        self.reject = reject

    def open_all(
        self, envelopes: dict[int, tuple[Any, str]], contexts: dict[str, MeterContext]
    ) -> list[Opened]:
        """Verify and decrypt each frame, decode all bodies at once, then check each."""
        plain: list[tuple[int, Any, MeterContext, KeyState, bytes]] = []
        for i, (envelope, meter_id) in envelopes.items():
            ctx = contexts.get(meter_id)
            try:
                if ctx is None or ctx.status != ACTIVE:
                    raise FrameRejected(
                        Reason.UNKNOWN_METER, f"system title {meter_id} is not provisioned"
                    )
                if self.key_refs.get(ctx.customer_ref) is None:
                    raise FrameRejected(
                        Reason.UNKNOWN_METER, f"meter {meter_id}: its customer was erased"
                    )
                apdu, key = self._decrypt(envelope, ctx)
                plain.append((i, envelope, ctx, key, data_notification_body(apdu)))
            except FrameRejected as exc:
                self.reject(i, exc, meter_id)
        profiles = decode_bodies([p[4] for p in plain])
        opened: list[Opened] = []
        for (i, envelope, ctx, key, _body), profile in zip(plain, profiles, strict=True):
            try:
                if isinstance(profile, FrameRejected):
                    raise profile
                opened.append(self._check(i, envelope, ctx, key, profile))
            except FrameRejected as exc:
                self.reject(i, exc, ctx.meter_id)
        return opened

    def _check(
        self, index: int, envelope: Any, ctx: MeterContext, key: KeyState, body: Decoded
    ) -> Opened:
        if body.system_title != envelope.system_title:
            raise FrameRejected(
                Reason.BODY_MISMATCH,
                f"body names meter {body.system_title.hex().upper()}, envelope {ctx.meter_id}",
            )
        if body.latest > self.window.now_s + self.window.max_future_s:
            ahead = body.latest - self.window.now_s
            raise FrameRejected(Reason.CLOCK_FUTURE, f"interval ends {ahead} s ahead")
        if body.earliest < self.window.now_s - self.window.max_age_s:
            old = self.window.now_s - body.earliest
            raise FrameRejected(Reason.CLOCK_PAST, f"interval ends {old} s old")
        quality = np.zeros(len(body.end_s), np.uint8)
        readings = Readings(body.end_s, body.register, body.value, body.status, quality)
        return Opened(index, ctx, key, envelope.invocation_counter, readings)

    def _decrypt(self, envelope: Any, ctx: MeterContext) -> tuple[bytes, KeyState]:
        for key in ctx.candidates(self.window.now_us):
            ek, ak = self.registry.keys_of(ctx.meter_id, key)
            try:
                return open_ciphered(envelope, ek, ak), key
            except FrameRejected:
                continue
        raise FrameRejected(
            Reason.BAD_TAG, "authentication tag does not verify under the meter's keys"
        )
