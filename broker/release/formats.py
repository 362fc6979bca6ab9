"""Serialising a release: JSON, CSV, Parquet and Green Button ESPI XML.

Every format carries the frame's rows as released; times are UTC (ISO 8601 in JSON and CSV,
timestamps in Parquet). Withheld cells (aggregates under a threshold) carry no value: null in
JSON, empty in CSV and Parquet, and no ``IntervalReading`` in ESPI.

**ESPI** (NAESB REQ.21, as Green Button serves it): an Atom feed whose entries hold, per series
(a meter, a pseudonym, or a released group), one ``UsagePoint`` (electricity), one
``MeterReading``, one ``ReadingType`` (energy, uom 72 = Wh, powerOfTenMultiplier 0, the interval
length) and one ``IntervalBlock`` per day with an ``IntervalReading`` per released interval
(``timePeriod`` start/duration in epoch seconds, ``value`` in Wh, rounded to an integer). The
entries are linked as ESPI links them (``self``, ``up``, ``related``), so ESPI parsers such as
``greenbutton-objects`` join them back into usage points.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np
import pandas as pd
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from broker.release.errors import UnknownFormat
from deidentify import frames as F

FORMATS = ("json", "csv", "parquet", "espi")
MEDIA_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "espi": "application/atom+xml",
}
ATOM = "http://www.w3.org/2005/Atom"
ESPI = "http://naesb.org/espi"
UOM_WH = 72
SERIES_COLUMNS = (F.METER, "group")


@dataclass(frozen=True)
class Body:
    content: bytes
    media_type: str


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise UnknownFormat(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    return fmt


def serialise(frame: pd.DataFrame, fmt: str, meta: dict[str, Any]) -> Body:
    """``frame`` in ``fmt``; ``meta`` (release id, tier, manifest digest, ...) goes with it."""
    check_format(fmt)
    if fmt == "json":
        return Body(to_json(frame, meta), MEDIA_TYPES[fmt])
    if fmt == "csv":
        return Body(_plain(frame).to_csv(index=False).encode("utf-8"), MEDIA_TYPES[fmt])
    if fmt == "parquet":
        return Body(to_parquet(frame, meta), MEDIA_TYPES[fmt])
    return Body(to_espi(frame, meta), MEDIA_TYPES[fmt])


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Categoricals as text, datetimes as ISO 8601 UTC text."""
    out = frame.copy()
    for name in out.columns:
        column = out[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            out[name] = column.astype(object)
        if pd.api.types.is_datetime64_any_dtype(column):
            out[name] = column.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def to_json(frame: pd.DataFrame, meta: dict[str, Any]) -> bytes:
    rows = json.loads(_plain(frame).to_json(orient="records", date_format="iso"))
    return json.dumps({"release": meta, "rows": rows}, sort_keys=True).encode("utf-8")


def to_parquet(frame: pd.DataFrame, meta: dict[str, Any]) -> bytes:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[b"broker.release"] = json.dumps(meta, sort_keys=True).encode("utf-8")
    sink = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(metadata), sink)
    return bytes(sink.getvalue())


def _series(frame: pd.DataFrame) -> str:
    for name in SERIES_COLUMNS:
        if name in frame.columns:
            return name
    raise UnknownFormat("ESPI needs a meter or a group per row; this tier has neither")


def _sub(parent: ET.Element, tag: str, text: str | None = None, ns: str = ESPI) -> ET.Element:
    node = ET.SubElement(parent, f"{{{ns}}}{tag}")
    if text is not None:
        node.text = text
    return node


def _entry(feed: ET.Element, title: str, links: dict[str, list[str]]) -> ET.Element:
    entry = _sub(feed, "entry", ns=ATOM)
    digest = hashlib.sha256(links["self"][0].encode("utf-8")).hexdigest()[:32]
    _sub(entry, "id", f"urn:uuid:{uuid.UUID(digest)}", ns=ATOM)
    _sub(entry, "title", title, ns=ATOM)
    for rel, hrefs in links.items():
        for href in hrefs:
            ET.SubElement(entry, f"{{{ATOM}}}link", {"rel": rel, "href": href})
    return _sub(entry, "content", ns=ATOM)


def to_espi(frame: pd.DataFrame, meta: dict[str, Any]) -> bytes:
    ET.register_namespace("", ATOM)
    ET.register_namespace("espi", ESPI)
    feed = ET.Element(f"{{{ATOM}}}feed")
    release = str(meta.get("release_id", "release"))
    _sub(feed, "id", f"urn:broker:release:{release}", ns=ATOM)
    _sub(feed, "title", f"release {release}", ns=ATOM)
    _sub(feed, "updated", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), ns=ATOM)
    base = f"/espi/1_1/resource/Release/{release}"
    if len(frame):
        key = _series(frame)
        values = frame[frame[F.ENERGY].notna()]
        for n, (name, rows) in enumerate(values.groupby(key, observed=True, sort=True), 1):
            _usage_point(feed, f"{base}/UsagePoint/{n}", f"{base}/ReadingType/{n}", str(name), rows)
    return bytes(ET.tostring(feed, encoding="utf-8", xml_declaration=True))


def _usage_point(
    feed: ET.Element, up: str, reading_type: str, name: str, rows: pd.DataFrame
) -> None:
    content = _entry(feed, name, {"self": [up], "related": [f"{up}/MeterReading"]})
    point = _sub(content, "UsagePoint")
    _sub(_sub(point, "ServiceCategory"), "kind", "0")  # electricity
    mr = f"{up}/MeterReading/1"
    related = [f"{mr}/IntervalBlock", reading_type]
    _sub(_entry(feed, name, {"self": [mr], "up": [f"{up}/MeterReading"], "related": related}),
         "MeterReading")  # fmt: skip
    length = int(rows[F.INTERVAL].iloc[0])
    rtype = _sub(_entry(feed, "energy (Wh)", {"self": [reading_type]}), "ReadingType")
    for tag, value in (("accumulationBehaviour", "4"), ("commodity", "1"),
                       ("flowDirection", "1"), ("intervalLength", str(length)), ("kind", "12"),
                       ("powerOfTenMultiplier", "0"), ("uom", str(UOM_WH))):  # fmt: skip
        _sub(rtype, tag, value)
    starts = (rows[F.START].astype("datetime64[us, UTC]").astype("int64") // 1_000_000).to_numpy()
    durations = rows[F.INTERVAL].to_numpy(np.int64)
    energy = np.rint(rows[F.ENERGY].to_numpy(np.float64)).astype(np.int64)
    days = starts // 86_400
    for b, day in enumerate(np.unique(days), 1):
        pick = days == day
        block = f"{mr}/IntervalBlock/{b}"
        content = _entry(feed, name, {"self": [block], "up": [f"{mr}/IntervalBlock"]})
        node = _sub(content, "IntervalBlock")
        first, last = int(starts[pick].min()), int((starts[pick] + durations[pick]).max())
        span = _sub(node, "interval")
        _sub(span, "duration", str(last - first))
        _sub(span, "start", str(first))
        for s, d, v in zip(starts[pick], durations[pick], energy[pick], strict=True):
            reading = _sub(node, "IntervalReading")
            period = _sub(reading, "timePeriod")
            _sub(period, "duration", str(int(d)))
            _sub(period, "start", str(int(s)))
            _sub(reading, "value", str(int(v)))
