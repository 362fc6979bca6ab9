"""Text the broker accepts at its edges: no control characters, and names people read are free
of invisible formatting.

``text_problem`` says why a string cannot be taken (or None): a C0 control (U+0000 to U+001F),
DEL or a C1 control (U+0080 to U+009F) anywhere, except tab, line feed and carriage return in
text that is genuinely multi-line (``multiline``); and in a name shown to customers
(``display``) also any format character (Unicode category Cf: the bidirectional overrides and
isolates U+202A to U+202E and U+2066 to U+2069, zero-width characters, ...), surrogates and
line or paragraph separators, which can make "Acme \\u202eecivreS" read as another name.
PostgreSQL refuses NUL in text outright and SQLite stores it silently, so a string with one must
never get as far as the database.

The annotated types are for request models (pydantic): ``Text`` for one-line fields,
``MultilineText`` for PEM and the like, ``DisplayName`` for names customers read, ``JsonObject``
for free-form JSON whose every key and string is checked, and ``AwareDatetime`` (a time with a
UTC offset; a naive time is refused).
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator
from pydantic import AwareDatetime as AwareDatetime

MULTILINE_ALLOWED = frozenset("\t\n\r")
_REFUSED_IN_NAMES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def is_control(char: str) -> bool:
    """C0 controls, DEL and C1 controls."""
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F


def text_problem(value: str, multiline: bool = False, display: bool = False) -> str | None:
    """Why ``value`` cannot be taken, naming the first offending character (never the value);
    None when it can."""
    for char in value:
        if is_control(char) and not (multiline and char in MULTILINE_ALLOWED):
            return f"holds the control character U+{ord(char):04X}; control characters are refused"
        if display and unicodedata.category(char) in _REFUSED_IN_NAMES:
            return (
                f"holds the invisible formatting character U+{ord(char):04X} (such as a "
                "bidirectional override); names shown to customers must be plain text"
            )
    return None


def _checked(multiline: bool = False, display: bool = False) -> AfterValidator:
    def check(value: str) -> str:
        problem = text_problem(value, multiline, display)
        if problem is not None:
            raise ValueError(problem)
        return value

    return AfterValidator(check)


def json_problem(value: Any) -> str | None:
    """The first problem of any key or string inside a JSON value (no control characters, line
    breaks included: a JWK's members are one-line)."""
    if isinstance(value, str):
        return text_problem(value)
    if isinstance(value, dict):
        for key, item in value.items():
            problem = json_problem(key) or json_problem(item)
            if problem is not None:
                return problem
    if isinstance(value, list):
        for item in value:
            problem = json_problem(item)
            if problem is not None:
                return problem
    return None


def _check_json(value: Any) -> Any:
    problem = json_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


Text = Annotated[str, _checked()]
"""One line of text: no control characters."""
MultilineText = Annotated[str, _checked(multiline=True)]
"""Text of several lines (PEM): tab, line feed and carriage return allowed, no other control."""
DisplayName = Annotated[str, _checked(display=True)]
"""A name customers read: no control and no invisible formatting characters."""
JsonObject = Annotated[dict[str, Any], AfterValidator(_check_json)]
"""A JSON object whose keys and strings, at any depth, hold no control characters."""
