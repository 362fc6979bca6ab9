"""Helpers shared by CLI commands: the runtime, the acting user, output."""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

from broker.runtime import Runtime
from broker.settings import load_settings

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


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))
