"""Settings are checked when built, and the backoff stays inside its bounds."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from connectors.concentrator import Backoff, ConcentratorConfig
from connectors.concentrator.config import MiB


def test_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    config = ConcentratorConfig(spool_dir=tmp_path)
    assert (config.max_frames, config.max_batch_bytes, config.max_delay_s) == (1000, 4 * MiB, 1.0)
    assert config.max_spool_bytes == 256 * MiB


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_frames": 10_001}, "max_frames"),
        ({"max_spool_bytes": 4 * MiB}, "two batches"),
        ({"backoff_base_s": 5.0, "backoff_cap_s": 1.0}, "backoff"),
        ({"name": "has space"}, "name"),
        ({"max_delay_s": 0}, "max_delay_s"),
    ],
)
def test_impossible_settings_are_refused(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ConcentratorConfig(spool_dir=tmp_path, **change)  # type: ignore[arg-type]


def test_backoff_doubles_up_to_its_cap_with_jitter_below_each_ceiling() -> None:
    backoff = Backoff(0.5, 30.0, random.Random(1))
    ceilings = [backoff.ceiling(n) for n in range(9)]
    assert ceilings == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    for attempt in range(200):
        delay = backoff.delay(attempt)
        assert backoff.ceiling(attempt) / 2 <= delay <= backoff.ceiling(attempt) <= 30.0
