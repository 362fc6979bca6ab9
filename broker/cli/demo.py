"""``broker demo``: placeholder until the foundation demo lands."""

from __future__ import annotations


def demo() -> None:
    """Run the demo."""
    raise SystemExit("not built yet")
