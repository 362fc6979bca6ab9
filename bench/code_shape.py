"""The shape of the code, as numbers a reader can compare from one version to the next.

- ``reading_path``: the product files whose functions run while one day of one meter's readings
  goes from its DLMS frames to a released feed page (the frames built by the simulated meter,
  verified and stored by the MDMS, decided, transformed and released as a pull feed's page),
  with the folders they sit in. It is traced (``sys.setprofile``), not read from imports, so it
  counts what a newcomer stepping through the flow in a debugger would open; set-up (keys,
  provisioning, the consent) is not traced.
- ``largest_module`` and ``longest_function``: over the product packages, by lines.

Run: ``python -m bench.code_shape`` (prints JSON; ``--files`` lists the traced files in order).
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("broker", "connectors", "deidentify", "consent_ledger")
DAY0 = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)


def _product_files() -> list[Path]:
    return sorted(p for pkg in PRODUCT for p in (ROOT / pkg).rglob("*.py"))


def largest_module() -> dict[str, Any]:
    sizes = [(len(p.read_text().splitlines()), p) for p in _product_files()]
    lines, path = max(sizes)
    over = sorted(str(p.relative_to(ROOT)) for n, p in sizes if n > 500)
    return {"path": str(path.relative_to(ROOT)), "lines": lines, "modules_over_500": over}


def longest_function() -> dict[str, Any]:
    best: tuple[int, str] = (0, "")
    for path in _product_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                if length > best[0]:
                    best = (length, f"{path.relative_to(ROOT)}:{node.name}")
    return {"where": best[1], "lines": best[0]}


class Tracer:
    """Product files entered by calls, in the order first entered."""

    def __init__(self) -> None:
        self.files: dict[str, None] = {}
        self._roots = tuple(str(ROOT / pkg) + "/" for pkg in PRODUCT)

    def __call__(self, frame: FrameType, event: str, arg: object) -> None:  # noqa: ARG002
        if event == "call":
            name = frame.f_code.co_filename
            if name.startswith(self._roots) and name not in self.files:
                self.files[name] = None

    def run(self, step: Callable[[], Any]) -> Any:
        sys.setprofile(self)
        try:
            return step()
        finally:
            sys.setprofile(None)


def reading_path() -> list[str]:
    """Trace one meter's day from frames to a feed page; the product files entered, in order."""
    from bench.flow import Flow  # the flow's set-up, kept apart so that it follows the code

    with tempfile.TemporaryDirectory() as tmp:
        flow = Flow.open(Path(tmp), DAY0)
        try:
            tracer = Tracer()
            frames = tracer.run(flow.frames)
            tracer.run(lambda: flow.ingest(frames))
            flow.consent()
            page = tracer.run(flow.page)
            assert page.rows == 24, f"expected a day of hourly rows, got {page.rows}"
        finally:
            flow.close()
    return [str(Path(f).relative_to(ROOT)) for f in tracer.files]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", action="store_true", help="list the traced files in order")
    args = parser.parse_args()
    files = reading_path()
    folders = sorted({str(Path(f).parent) for f in files})
    out: dict[str, Any] = {
        "reading_path": {"files": len(files), "folders": len(folders)},
        "largest_module": largest_module(),
        "longest_function": longest_function(),
    }
    if args.files:
        out["reading_path"]["in_order"] = files
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
