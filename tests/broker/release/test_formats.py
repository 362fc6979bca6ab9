"""Every format parses back to the release (JSON, CSV, Parquet round trip; ESPI XML with an XML
parser and with ``greenbutton-objects``, the Green Button reference objects)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from xml.etree import ElementTree as ET

import pandas as pd
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from greenbutton_objects import parse  # type: ignore[import-untyped]

from broker.release.errors import UnknownFormat
from broker.release.formats import ESPI, serialise

META = {"release_id": "rl_test", "tier": "raw", "manifest_sha256": "ab" * 32}


def _frame() -> pd.DataFrame:
    starts = pd.date_range("2026-11-20", periods=48, freq="h", tz="UTC")
    return pd.DataFrame(
        {
            "meter_id": ["58534D0000000001"] * 24 + ["58534D0000000002"] * 24,
            "start": list(starts[:24]) + list(starts[:24]),
            "interval_s": [3600] * 48,
            "energy_wh": [float(100 + i) for i in range(48)],
        }
    )


def test_json_round_trip() -> None:
    frame = _frame()
    doc = json.loads(serialise(frame, "json", META).content)
    assert doc["release"] == META
    back = pd.DataFrame(doc["rows"])
    assert back["energy_wh"].tolist() == frame["energy_wh"].tolist()
    assert pd.to_datetime(back["start"], utc=True).tolist() == frame["start"].tolist()


def test_csv_round_trip() -> None:
    frame = _frame()
    body = serialise(frame, "csv", META)
    assert body.media_type.startswith("text/csv")
    back = pd.read_csv(io.BytesIO(body.content))
    assert back["meter_id"].tolist() == frame["meter_id"].tolist()
    assert back["energy_wh"].tolist() == frame["energy_wh"].tolist()
    assert pd.to_datetime(back["start"], utc=True).tolist() == frame["start"].tolist()


def test_parquet_round_trip() -> None:
    frame = _frame()
    table = pq.read_table(io.BytesIO(serialise(frame, "parquet", META).content))
    assert json.loads(table.schema.metadata[b"broker.release"]) == META
    back = table.to_pandas()
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)


def test_espi_xml_has_one_interval_reading_per_row(tmp_path: Path) -> None:
    frame = _frame()
    xml = serialise(frame, "espi", META).content
    root = ET.fromstring(xml)
    ns = {"espi": ESPI, "atom": "http://www.w3.org/2005/Atom"}
    readings = root.findall(".//espi:IntervalReading", ns)
    assert len(readings) == 48
    assert [int(r.findtext("espi:value", namespaces=ns) or 0) for r in readings[:3]] == [
        100, 101, 102
    ]  # fmt: skip
    assert {e.text for e in root.findall(".//espi:powerOfTenMultiplier", ns)} == {"0"}
    assert {e.text for e in root.findall(".//espi:uom", ns)} == {"72"}
    path = tmp_path / "feed.xml"
    path.write_bytes(xml)
    points = parse.parse_feed(str(path))
    assert len(points) == 2
    got = [
        (ir.timePeriod.duration.total_seconds(), ir.value)
        for up in points
        for mr in up.meterReadings
        for ir in mr.intervalReadings
    ]
    assert len(got) == 48
    assert sorted(v for _, v in got) == frame["energy_wh"].tolist()
    assert {d for d, _ in got} == {3600}
    for up in points:
        for mr in up.meterReadings:
            assert mr.readingType.powerOfTenMultiplier == 0


def test_espi_skips_withheld_cells() -> None:
    frame = pd.DataFrame(
        {
            "group": ["F-001", "F-002"],
            "start": pd.to_datetime(["2026-11-20", "2026-11-20"], utc=True),
            "interval_s": [3600, 3600],
            "energy_wh": [5000.0, None],
        }
    )
    root = ET.fromstring(serialise(frame, "espi", META).content)
    assert len(root.findall(f".//{{{ESPI}}}IntervalReading")) == 1


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(UnknownFormat):
        serialise(_frame(), "xlsx", META)
