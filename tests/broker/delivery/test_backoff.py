"""Retry delays of the push outbox (T7): exponential with equal jitter, capped."""

from __future__ import annotations

import random

from broker.delivery.outbox import backoff_s
from broker.delivery.settings import PushSettings


def test_T7_delays_double_with_equal_jitter_up_to_the_cap() -> None:
    settings = PushSettings(backoff_base_s=2.0, backoff_cap_s=60.0)
    rng = random.Random(7)
    for attempts in range(1, 12):
        ceiling = min(60.0, 2.0 * 2 ** (attempts - 1))
        delays = [backoff_s(attempts, settings, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), attempts
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not a fixed step
    assert backoff_s(30, settings, rng) <= 60.0
