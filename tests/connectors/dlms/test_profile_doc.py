"""``docs/dlms-profile.md`` says what the code does: its worked example is read out of the page
(the fenced ```` ```hex NAME ```` blocks, ``#`` starting a comment) and decoded here."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from connectors.dlms import batch, frames, keytransfer, profile
from connectors.dlms.frames import Reason
from connectors.dlms.keytransfer import KeyId
from connectors.mdms.vee import Quality
from tests.connectors.dlms.vectors import (
    AUTHENTICATION_KEY,
    ENCRYPTION_KEY,
    MASTER_KEY,
    SYSTEM_TITLE,
)

DOC = Path(__file__).resolve().parents[3] / "docs" / "dlms-profile.md"
TEXT = DOC.read_text(encoding="utf-8")
EXAMPLE_IC = 0x01234567


def hex_blocks(text: str) -> dict[str, bytes]:
    """The ```hex NAME blocks of the page, comments dropped, as bytes."""
    blocks = {}
    for name, content in re.findall(
        r"^```hex ([\w-]+)\n(.*?)^```$", text, re.MULTILINE | re.DOTALL
    ):
        blocks[name] = bytes.fromhex(
            "".join(line.split("#", 1)[0] for line in content.splitlines())
        )
    return blocks


BLOCKS = hex_blocks(TEXT)


def table_value(name: str) -> str:
    found = re.search(rf"^\| {re.escape(name)} \| `([0-9A-F]+)`", TEXT, re.MULTILINE)
    assert found is not None, name
    return found.group(1)


def documented_readings() -> list[tuple[int, int, int, int]]:
    rows = re.findall(r"^\| (\S+Z) \| 0x([0-9A-F]{2}) \| (\d+) \| (\d+) \|$", TEXT, re.MULTILINE)
    assert rows
    return [
        (int(dt.datetime.fromisoformat(t).timestamp()), int(s, 16), int(r), int(v))
        for t, s, r, v in rows
    ]


def test_the_page_has_the_example_blocks() -> None:
    assert set(BLOCKS) == {"apdu", "iv", "aad", "frame", "key-data"}


def test_the_example_uses_the_blue_book_keys_and_the_green_book_title() -> None:
    assert bytes.fromhex(table_value("system title")) == SYSTEM_TITLE
    assert bytes.fromhex(table_value("encryption key (EK)")) == ENCRYPTION_KEY
    assert bytes.fromhex(table_value("authentication key (AK)")) == AUTHENTICATION_KEY
    assert int(table_value("invocation counter"), 16) == EXAMPLE_IC


def test_C1_3_the_example_frame_is_what_seal_builds_from_the_example_apdu() -> None:
    frame = frames.seal(
        SYSTEM_TITLE, EXAMPLE_IC, ENCRYPTION_KEY, AUTHENTICATION_KEY, BLOCKS["apdu"]
    )
    assert frame == BLOCKS["frame"]
    assert f"({len(BLOCKS['apdu'])} bytes)" in TEXT
    assert f"({len(frame)} bytes)" in TEXT


def test_R1_1_the_example_iv_and_aad_are_the_gcm_inputs() -> None:
    assert BLOCKS["iv"] == SYSTEM_TITLE + EXAMPLE_IC.to_bytes(4, "big")
    assert BLOCKS["aad"] == b"\x30" + AUTHENTICATION_KEY
    sealed = AESGCM(ENCRYPTION_KEY).encrypt(BLOCKS["iv"], BLOCKS["apdu"], BLOCKS["aad"])
    assert BLOCKS["frame"].endswith(sealed[:-4])


def test_C1_5_the_example_frame_decodes_to_the_documented_readings() -> None:
    c = frames.parse_ciphered(BLOCKS["frame"])
    assert (c.system_title, c.invocation_counter) == (SYSTEM_TITLE, EXAMPLE_IC)
    apdu = frames.open_ciphered(c, ENCRYPTION_KEY, AUTHENTICATION_KEY)
    assert apdu == BLOCKS["apdu"]
    decoded = profile.decode_body(frames.data_notification_body(apdu))
    assert decoded.system_title == SYSTEM_TITLE
    rows = list(
        zip(
            decoded.end_s.tolist(),
            decoded.status.tolist(),
            decoded.register_wh.tolist(),
            decoded.interval_wh.tolist(),
            strict=True,
        )
    )
    assert rows == documented_readings()


def test_C1_6_the_key_data_example_is_the_rfc_3394_vector_as_key_data_builds_it() -> None:
    key = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    data = keytransfer.key_data(MASTER_KEY, {KeyId.GLOBAL_UNICAST_ENCRYPTION: key})
    assert data == BLOCKS["key-data"]


def test_every_reason_code_has_a_row_in_the_table_and_no_other_does() -> None:
    start = TEXT.index("## 7. Why a frame is refused")
    table = TEXT[start : TEXT.index("\n## ", start)]
    codes = re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE)
    assert codes == [r.value for r in Reason]


@pytest.mark.parametrize(
    "fact",
    [
        f"1 to {profile.MAX_ENTRIES}",
        f"`{batch.MEDIA_TYPE}`",
        f"1 to {batch.MAX_FRAMES:,}".replace(",", " "),
        f"1 to {batch.MAX_FRAME_BYTES:,}".replace(",", " "),
        f"magic `{batch.MAGIC.decode()}`",
        f"version `{batch.VERSION:02X}`",
        "OBIS 0.0.43.0.0.255",
    ],
)
def test_the_page_states_the_limits_the_code_enforces(fact: str) -> None:
    assert fact in TEXT


def test_every_vee_quality_flag_has_a_row_in_the_vee_table() -> None:
    table = TEXT[TEXT.index("## Validation, estimation and editing (VEE)") :]
    flags = re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE)
    assert sorted(flags) == sorted(str(q.name).lower() for q in Quality)
