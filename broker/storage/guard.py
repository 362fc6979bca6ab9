"""Defence in depth below every edge: no statement sends text with a control character.

PostgreSQL refuses NUL in text (a driver error, so a 500 wherever it was not checked first) and
SQLite stores it silently; other C0 controls are never meant either. The edges check their input
(``broker.kit.text``); this listener, on every engine ``make_engine`` builds, refuses any
statement whose parameters hold a string with NUL or another C0 control (tab, line feed and
carriage return are allowed: PEM, policy sources and notices are multi-line), whether it
inserts, updates or looks something up, with ``UnstorableText`` (422) before the driver sees it.
The CLI and service paths are covered so. The ingest hot path (``broker.storage.raw``) talks to
the driver directly and is not seen here: its values are numbers and identifiers the MDMS
frame parser has checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import Engine, event

from broker.errors import BrokerError

_STORED_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


class UnstorableText(BrokerError):
    """Text with a NUL or another control character, on its way to the database."""

    status_code = 422


class UnstorableNumber(BrokerError):
    """An integer outside the signed 64 bits both databases store (SQLite's driver raised
    ``OverflowError``, a 500, for ``after_seq=89482238066410353852416``)."""

    status_code = 422


MAX_SEQ = 2**63 - 1
"""The largest integer a statement may carry (BIGINT, SQLite INTEGER); query parameters that
reach the database are bounded by it at the edge too."""


def _values(parameters: Any) -> Iterator[tuple[str, object]]:
    """(where, value) of every parameter of a statement (a mapping or sequence, and one level of
    arrays inside)."""
    items = parameters.items() if isinstance(parameters, Mapping) else enumerate(parameters)
    for key, value in items:
        if isinstance(value, list | tuple):
            yield from ((str(key), v) for v in value)
        else:
            yield str(key), value


def check_parameters(parameters: Any, executemany: bool) -> None:
    """Raise ``UnstorableText`` if any string parameter holds a refused control character, and
    ``UnstorableNumber`` if an integer does not fit in 64 bits."""
    if not parameters:
        return
    for row in parameters if executemany else (parameters,):
        for where, value in _values(row):
            if isinstance(value, int) and not -MAX_SEQ - 1 <= value <= MAX_SEQ:
                raise UnstorableNumber(
                    f"the number in parameter {where} is outside the 64-bit range the database "
                    "stores; it is never stored or looked up"
                )
            if not isinstance(value, str):
                continue
            found = _STORED_CONTROL.search(value)
            if found is not None:
                code = ord(found.group())
                raise UnstorableText(
                    f"text holding the control character U+{code:04X} is refused "
                    f"(parameter {where}); it is never stored or looked up"
                )


def _before_cursor_execute(
    _conn: Any,
    _cursor: Any,
    _statement: str,
    parameters: Any,
    _context: Any,
    executemany: bool,
) -> None:
    check_parameters(parameters, executemany)


def refuse_control_text(engine: Engine) -> None:
    """Install the check on ``engine`` (every statement it runs)."""
    event.listen(engine, "before_cursor_execute", _before_cursor_execute)
