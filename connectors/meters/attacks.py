"""Frames an attacker, or a tampered meter, would send: the X.1332 threats the MDMS must withstand.

X.1332 lists threats on the meter-MDMS path that the reference path has to show handled, not
merely claimed: T2 forged metering data (forged, replayed, truncated, unprotected frames and
frames from meters nobody provisioned) and T3 a forged load profile (the profile stored in the
meter altered while the link stays authentic). Each function here builds one such frame, on
demand, from a :class:`SimulatedMeter`, and says what the MDMS is expected to do with it: reject
with a :class:`~connectors.dlms.frames.Reason`, or accept and flag. The attacker functions
leave the real meter untouched; the compromised-meter ones (``tampered_profile``,
``skewed_clock``) consume its counter and register as a real meter would.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from connectors.dlms import frames
from connectors.meters.keys import MeterKeys
from connectors.meters.simulator import (
    MAX_SERIAL,
    IntArray,
    SimulatedMeter,
    interval_values,
    profile_notification,
    system_title,
)

M = TypeVar("M")


def forged(
    meter: SimulatedMeter,
    end_s: IntArray,
    interval_wh: IntArray,
    guess: MeterKeys | None = None,
) -> bytes:
    """T2 forged metering data: the meter's title and next counter, sealed under guessed keys.

    Well-formed in every byte an observer can check; only the tag is wrong, so the MDMS
    rejects it with ``Reason.BAD_TAG``. ``guess`` defaults to random keys.
    """
    wh = interval_values(interval_wh)
    apdu = profile_notification(meter.system_title, end_s, meter.registers_after(wh), wh)
    keys = guess or MeterKeys.random()
    ic = meter.invocation_counter
    return frames.seal(meter.system_title, ic, keys.encryption_key, keys.authentication_key, apdu)


def truncated(frame: bytes, keep: int) -> bytes:
    """T2 / malformed input: the first ``keep`` bytes of a frame (``Reason.TRUNCATED``;
    ``MALFORMED`` for an empty frame)."""
    if not 0 <= keep < len(frame):
        raise ValueError(f"keep 0 to {len(frame) - 1} bytes of a {len(frame)}-byte frame")
    return frame[:keep]


class Interceptor:
    """T2 replay: a man in the middle on the meter link who withholds frames to replay later.

    :meth:`relay` passes a stream of ``(meter, frame)`` on, except the first ``count`` frames
    whose (clear-text) system title is ``target``: those it keeps. Sent after newer frames of
    that meter were delivered, :meth:`replay` frames carry a counter no longer above the last
    one accepted, and the MDMS rejects them with ``Reason.REPLAY``. They are genuine frames
    with valid tags: only the counter gives them away.
    """

    def __init__(self, target: bytes, count: int = 1) -> None:
        self.target = target
        self.count = count
        self.withheld: list[bytes] = []

    def capture(self, frame: bytes) -> bool:
        """Keep ``frame`` if it is the target's and the quota is not full; True if kept."""
        title = frames.parse_ciphered(frame).system_title
        if title != self.target or len(self.withheld) >= self.count:
            return False
        self.withheld.append(frame)
        return True

    def relay(self, stream: Iterable[tuple[M, bytes]]) -> Iterator[tuple[M, bytes]]:
        """The stream without the frames this attacker keeps."""
        for item, frame in stream:
            if not self.capture(frame):
                yield item, frame

    def replay(self) -> list[bytes]:
        """The withheld frames, byte for byte, for injection after newer ones."""
        return list(self.withheld)


def tampered_profile(
    meter: SimulatedMeter,
    end_s: IntArray,
    interval_wh: IntArray,
    lowered: Iterable[int] | None = None,
    factor: float = 0.5,
) -> bytes:
    """T3 forged load profile: the meter's stored intervals lowered, its register untouched.

    The frame is authentic (the meter's keys, its next counter): the storage was altered, not
    the link. The register entries are what the meter's protected +A register recorded for the
    true consumption, while the intervals at ``lowered`` (default: the quarter with the most
    energy, the peak-price hours a bill cutter would pick) are scaled by ``factor``. The
    intervals then no longer sum to the register deltas: the MDMS accepts the frame and flags
    it in its register reconciliation.
    """
    true_wh = interval_values(interval_wh)
    registers = meter.registers_after(true_wh)
    reported = _lowered(true_wh, lowered, factor)
    frame = meter.send_profile(end_s, registers, reported)
    meter.register_wh = int(registers[-1])
    return frame


def _lowered(
    wh: NDArray[np.uint32], lowered: Iterable[int] | None, factor: float
) -> NDArray[np.uint32]:
    if not 0.0 <= factor < 1.0:
        raise ValueError("factor is in [0, 1): the values must go down")
    rows = (
        np.argsort(wh, kind="stable")[-max(1, len(wh) // 4) :]
        if lowered is None
        else np.fromiter(lowered, dtype=np.int64)
    )
    out = wh.copy()
    out[rows] = np.floor(wh[rows] * factor).astype(np.uint32)
    if (out == wh).all():
        raise ValueError("no interval to lower: the chosen intervals hold 0 Wh")
    return out


def unknown_meter(
    end_s: IntArray,
    interval_wh: IntArray,
    serial: int = MAX_SERIAL,
    keys: MeterKeys | None = None,
) -> bytes:
    """T2: a well-formed, validly sealed frame from a meter nobody provisioned.

    The MDMS has no keys for the system title and rejects it with ``Reason.UNKNOWN_METER``.
    """
    stranger = SimulatedMeter(system_title(serial), keys or MeterKeys.random(), 1_000_000)
    return stranger.push(end_s, interval_wh)


def unprotected(meter: SimulatedMeter, end_s: IntArray, interval_wh: IntArray) -> bytes:
    """T2: the meter's profile as a plain DataNotification (tag 0x0F), neither encrypted nor
    authenticated; the MDMS rejects it with ``Reason.UNPROTECTED``."""
    wh = interval_values(interval_wh)
    return profile_notification(meter.system_title, end_s, meter.registers_after(wh), wh)


def skewed_clock(meter: SimulatedMeter, now_s: int, skew_s: int, interval_wh: IntArray) -> bytes:
    """T2: an authentic frame whose intervals end ``skew_s`` away from the clock ``now_s``.

    A meter whose clock was set wrong (or an attacker's attempt to fill another day) signs
    readings far in the future (``skew_s > 0``: ``Reason.CLOCK_FUTURE``) or the past
    (``Reason.CLOCK_PAST``). The last interval ends at ``now_s + skew_s``, rounded down to the
    meter's interval; the counter and register advance as for any push.
    """
    count = len(interval_values(interval_wh))
    last = (now_s + skew_s) // meter.interval_s * meter.interval_s
    ends = last - meter.interval_s * np.arange(count - 1, -1, -1, dtype=np.int64)
    return meter.push(ends, interval_wh)
