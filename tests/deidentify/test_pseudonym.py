"""Pseudonyms of the pseudonymised tier: keyed per recipient, stable, unlinkable across recipients
and key versions, and nothing personal left in the output (X.1332 C3.3, C4.3, R3.5)."""

from __future__ import annotations

import base64
import hmac
import io
import re

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deidentify.errors import InvalidData, InvalidParameter, MissingColumns
from deidentify.frames import PERSONAL_FIELDS
from deidentify.generalise import coarsen_time
from deidentify.pseudonym import MIN_KEY_BYTES, PseudonymKey, pseudonymise
from tests.deidentify.factories_ga import households, readings

KEY = PseudonymKey("acme-energy", bytes(range(32)), 1)
PSEUDONYM = re.compile(r"ps1:(\d+):([0-9a-f]{32})")


def reference(key: PseudonymKey, column: str, identifier: str) -> str:
    """The pseudonym as documented, computed with the standard library's HMAC only."""
    context = f"ps1\0{key.domain}\0{key.version}\0{column}".encode()
    column_key = hmac.digest(key.key, context, "sha256")
    digest = hmac.digest(column_key, identifier.encode(), "sha256")
    return f"ps1:{key.version}:{digest[:16].hex()}"


def pseudonyms(ids: list[str], key: PseudonymKey = KEY) -> list[str]:
    out, _ = pseudonymise(pd.DataFrame({"meter_id": ids}), key=key)
    return [str(p) for p in out["meter_id"]]


# --- keys -----------------------------------------------------------------------------------


def test_c3_3_key_shorter_than_256_bits_is_refused() -> None:
    with pytest.raises(InvalidParameter, match="at least 32 bytes"):
        PseudonymKey("acme-energy", b"k" * (MIN_KEY_BYTES - 1))
    assert PseudonymKey("acme-energy", b"k" * MIN_KEY_BYTES).version == 1


@pytest.mark.parametrize(
    ("domain", "key", "version"),
    [
        ("", b"k" * 32, 1),
        ("acme", "k" * 32, 1),
        ("acme", b"k" * 32, 0),
        ("acme", b"k" * 32, True),
    ],
)
def test_key_without_domain_bytes_or_version_is_refused(
    domain: str, key: bytes, version: int
) -> None:
    with pytest.raises(InvalidParameter):
        PseudonymKey(domain, key, version)


def test_key_bytes_are_not_in_its_repr() -> None:
    key = PseudonymKey("acme-energy", b"\xaa" * 40, 3)
    assert "aa" not in repr(key).lower() and "key=" not in repr(key)
    assert "acme-energy" in repr(key) and "version=3" in repr(key)


# --- the pseudonyms -------------------------------------------------------------------------


def test_c3_3_pseudonym_is_hmac_sha256_under_the_domain_column_key() -> None:
    ids = ["58534D0000000001", "58534D0000000002", "CUST-0000003"]
    assert pseudonyms(ids) == [reference(KEY, "meter_id", i) for i in ids]
    assert all(PSEUDONYM.fullmatch(p) for p in pseudonyms(ids))


@settings(max_examples=60, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=100),
    version=st.integers(1, 10**6),
    ids=st.lists(st.text(st.characters(blacklist_categories=["Cs"]), max_size=120), max_size=8),
)
def test_fast_hmac_equals_the_standard_library(key: bytes, version: int, ids: list[str]) -> None:
    """The per-identifier HMAC from precomputed pad states is HMAC-SHA-256 exactly, for any key,
    any text (empty, non-ASCII, longer than a block) and any version."""
    pkey = PseudonymKey("d", key, version)
    assert pseudonyms(ids, pkey) == [reference(pkey, "meter_id", i) for i in ids]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([f"M{i}" for i in range(12)]), max_size=40))
def test_equal_identifiers_share_a_pseudonym_and_distinct_ones_do_not(ids: list[str]) -> None:
    out = pseudonyms(ids)
    assert len(set(out)) == len(set(ids))
    pairs = list(zip(ids, out, strict=True))
    assert all((a == b) == (p == q) for a, p in pairs for b, q in pairs)


def test_c3_3_same_recipient_key_gives_the_same_pseudonyms_in_every_release() -> None:
    frame = households(60)
    first, _ = pseudonymise(frame, key=KEY)
    again, _ = pseudonymise(frame.iloc[::-1].iloc[10:], key=PseudonymKey(KEY.domain, KEY.key, 1))
    assert again["meter_id"].astype(str).equals(first["meter_id"].loc[again.index].astype(str))


def test_r3_5_recipients_get_unrelated_pseudonyms_even_under_the_same_key_bytes() -> None:
    ids = list(households(60)["meter_id"])
    mine = set(pseudonyms(ids))
    for other in (
        PseudonymKey("other-energy", KEY.key, 1),  # same bytes, another domain
        PseudonymKey(KEY.domain, bytes(range(1, 33)), 1),  # another key
    ):
        assert mine.isdisjoint(pseudonyms(ids, other))


def test_rekeyed_domain_is_the_next_version_and_every_pseudonym_changes() -> None:
    ids = list(households(60)["meter_id"])
    rotated = KEY.rotated(bytes(range(100, 132)))
    assert (rotated.domain, rotated.version) == (KEY.domain, 2)
    new = pseudonyms(ids, rotated)
    assert set(new).isdisjoint(pseudonyms(ids))
    assert all(p.startswith("ps1:2:") for p in new)
    same_bytes = KEY.rotated(KEY.key)  # even a careless re-key with the old bytes changes them
    assert set(pseudonyms(ids, same_bytes)).isdisjoint(pseudonyms(ids))


def test_same_identifier_in_two_columns_gets_unrelated_pseudonyms() -> None:
    frame = pd.DataFrame({"meter_id": ["X1", "X2"], "customer_ref": ["X1", "X2"]})
    out, _ = pseudonymise(frame, ("meter_id", "customer_ref"), key=KEY)
    assert set(out["meter_id"]).isdisjoint(set(out["customer_ref"]))


def test_identifiers_are_taken_as_text() -> None:
    out, _ = pseudonymise(pd.DataFrame({"meter_id": [42, 7]}), key=KEY)
    assert list(out["meter_id"]) == pseudonyms(["42", "7"])


# --- what leaves ----------------------------------------------------------------------------


def test_r3_5_personal_fields_are_dropped_and_the_rest_kept() -> None:
    frame = households(40)
    before = frame.copy()
    out, manifest = pseudonymise(frame, key=KEY)
    kept = [c for c in frame.columns if c not in PERSONAL_FIELDS or c == "meter_id"]
    assert list(out.columns) == kept
    assert out.drop(columns="meter_id").equals(frame[kept].drop(columns="meter_id"))
    assert out.index.equals(frame.index)
    frame_unchanged = frame.equals(before)
    assert frame_unchanged
    assert manifest.tier == "pseudonymised"
    assert manifest.transforms == [
        "pseudonymise(meter_id)",
        "drop_fields(customer_ref, name, address, account)",
    ]
    assert (manifest.rows_in, manifest.rows_out) == (40, 40)


def test_customer_ref_can_be_pseudonymised_instead_of_dropped() -> None:
    out, _ = pseudonymise(households(10), ("meter_id", "customer_ref"), key=KEY)
    assert "customer_ref" in out and all(PSEUDONYM.fullmatch(str(p)) for p in out["customer_ref"])


def _serialisations(frame: pd.DataFrame, manifest_json: str) -> bytes:
    csv = frame.to_csv().encode()
    parts = [csv, manifest_json.encode(), repr(frame).encode(), frame.to_string().encode()]
    parts += [
        frame.to_json(orient=o, date_format="iso").encode() for o in ("records", "split", "table")
    ]
    buffer = io.BytesIO()
    frame.to_pickle(buffer)
    return b"\n".join([*parts, buffer.getvalue()])


def test_c3_3_no_raw_identifier_or_key_in_any_output() -> None:
    frame = households(80)
    key = PseudonymKey("acme-energy", b"Q7\x01" * 11, 5)
    out, manifest = pseudonymise(frame, key=key)
    data = _serialisations(out, str(manifest.as_json()))
    secrets = [key.key, key.key.hex().encode(), base64.b64encode(key.key)]
    personal = [str(v).encode() for f in PERSONAL_FIELDS for v in frame[f]]
    lowered = data.lower()
    assert not [s for s in secrets + personal if s in data or s.lower() in lowered]
    readings_out, _ = pseudonymise(readings(5, 8), key=key)
    meters = {m.encode() for m in readings(5, 8)["meter_id"]}
    assert not [m for m in meters if m.lower() in _serialisations(readings_out, "{}").lower()]


def test_pseudonymised_readings_still_coarsen_and_sum_per_meter() -> None:
    raw = readings(6, 96)
    out, _ = pseudonymise(raw, key=KEY)
    daily = coarsen_time(out, "day")
    totals = raw.groupby("meter_id")["energy_wh"].sum()
    expected = {reference(KEY, "meter_id", str(m)): int(t) for m, t in totals.items()}
    assert daily.groupby("meter_id", observed=True)["energy_wh"].sum().to_dict() == expected


# --- bad input: clear errors, nothing released ----------------------------------------------


def test_missing_identifier_column_is_refused() -> None:
    with pytest.raises(MissingColumns, match="meter_id"):
        pseudonymise(pd.DataFrame({"name": ["x"]}), key=KEY)


def test_missing_identifiers_are_refused_and_counted() -> None:
    with pytest.raises(InvalidData, match="1 missing identifier"):
        pseudonymise(pd.DataFrame({"meter_id": ["a", None]}), key=KEY)


def test_identifiers_in_the_index_are_refused() -> None:
    frame = households(5).set_index("meter_id")
    with pytest.raises(InvalidData, match="reset_index"):
        pseudonymise(frame, ("customer_ref",), key=KEY)


@pytest.mark.parametrize("columns", [(), ("meter_id", "meter_id")])
def test_no_or_repeated_columns_are_refused(columns: tuple[str, ...]) -> None:
    with pytest.raises(InvalidParameter):
        pseudonymise(households(5), columns, key=KEY)


def test_empty_frame_gives_an_empty_frame() -> None:
    out, manifest = pseudonymise(households(5).iloc[:0], key=KEY)
    assert out.empty and "meter_id" in out and "name" not in out
    assert (manifest.rows_in, manifest.rows_out) == (0, 0)
