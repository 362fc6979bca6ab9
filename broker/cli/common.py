"""Helpers shared by CLI commands: the runtime, the acting user, output."""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

from broker.errors import BrokerError
from broker.runtime.core import Runtime
from broker.settings import load_settings
from connectors.meters.load import INTERVALS_S

console = Console(soft_wrap=True)


def actor() -> str:
    """Who runs this command, as written into audit entries."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


@contextmanager
def runtime() -> Iterator[Runtime]:
    rt = Runtime.open(load_settings())
    try:
        yield rt
    finally:
        rt.close()


def check_pushes(interval_s: int, push_intervals: int) -> None:
    """Refuse a simulated interval the load model lacks, or pushes that do not tile a day."""
    if interval_s not in INTERVALS_S:
        choices = ", ".join(map(str, INTERVALS_S))
        raise BrokerError(f"--interval {interval_s}: the simulator offers {choices} seconds")
    per_day = 86_400 // interval_s
    if push_intervals < 1 or per_day % push_intervals:
        raise BrokerError(
            f"--push-intervals {push_intervals} must divide the {per_day} intervals of a day"
        )


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))
