"""The text rules of the edges (T7, C1.8): which characters a field refuses, and that the
message names the character, never the value."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from broker.kit.text import (
    AwareDatetime,
    DisplayName,
    JsonObject,
    MultilineText,
    Text,
    text_problem,
)


class Body(BaseModel):
    text: Text = "x"
    lines: MultilineText = "x"
    name: DisplayName = "x"
    doc: JsonObject = {}
    at: AwareDatetime | None = None


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\x9f", "\t", "\n"])
def test_T7_one_line_text_refuses_every_control_character(char: str) -> None:
    with pytest.raises(ValidationError, match=f"U\\+{ord(char):04X}") as refused:
        Body(text=f"secret{char}value")
    assert "secret" not in refused.value.errors()[0]["msg"]


def test_T7_multiline_text_allows_line_breaks_and_tabs_only() -> None:
    assert Body(lines="-----BEGIN X-----\r\n\tAAAA\n-----END X-----\n").lines.endswith("\n")
    for char in ("\x00", "\x0b", "\x0c", "\x1b"):
        with pytest.raises(ValidationError, match="control character"):
            Body(lines=f"a{char}b")


@pytest.mark.parametrize(
    "char",
    ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2069", "\u200b", "\u2028"],
)
def test_R3_3_display_names_refuse_invisible_formatting(char: str) -> None:
    with pytest.raises(ValidationError, match="invisible formatting"):
        Body(name=f"Acme {char}ecivreS")
    assert Body(text=f"a{char}b").text == f"a{char}b"  # only names customers read


def test_T7_plain_unicode_names_are_taken() -> None:
    for name in ("Stadtwerke München", "Énergie du Québec", "東京電力", "Ørsted A/S"):
        assert Body(name=name).name == name and text_problem(name, display=True) is None


def test_T7_json_objects_are_checked_at_every_depth() -> None:
    assert Body(doc={"kid": "k1", "n": [1, {"x": "a b"}]}).doc["kid"] == "k1"
    for bad in ({"kid": "k\x00"}, {"k\x00": 1}, {"a": [{"b": ["\x1b"]}]}, {"x": "a\nb"}):
        with pytest.raises(ValidationError, match="control character"):
            Body(doc=bad)


def test_T7_times_need_a_utc_offset() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        Body(at="2026-11-20T00:00:00")  # type: ignore[arg-type]
    assert Body(at="2026-11-20T00:00:00Z").at is not None  # type: ignore[arg-type]
