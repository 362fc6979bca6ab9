"""What the canonical cells of both tiers share: the hierarchy of a unit and the unit's frame.

Aggregated cells (``deidentify.canonical``) and dp cells (``deidentify.canonical_dp``) are both
computed per unit, a parent group (a substation) and one UTC day, from the feeder -> substation
hierarchy (``tree_of``), and both give a unit's cells as one frame in ``AGGREGATE_COLUMNS``. The
types of that frame are set here only (``unit_frame``), for the cells computed here and for the
cells the broker records and reads back (``plain_columns``, ``from_plain``: the frame as lists of
JSON values, starts in microseconds), so that a recorded unit is served exactly as it was made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from deidentify.aggregate import GROUP, LEVEL, MEMBERS, MERGED_INTO, REASON, STATUS
from deidentify.cells_ad import Matrix
from deidentify.errors import InvalidData
from deidentify.frames import ENERGY, INTERVAL, START

NS = 1_000_000_000
"""Nanoseconds a second."""


@dataclass(frozen=True)
class Tree:
    labels: pd.Index
    """The parents' labels."""
    children: tuple[NDArray[np.intp], ...]
    """Per parent, the indices of its groups in the grid (label order)."""


def tree_of(households: pd.DataFrame, group_by: str, parent: str, matrix: Matrix) -> Tree:
    """Each parent's groups in ``matrix``'s grid; refuses a household without a parent and a
    group under two parents."""
    pairs = households[[group_by, parent]].drop_duplicates()
    blank = pairs[parent].isna() | (pairs[parent].astype(str).str.strip() == "")
    if blank.any():
        raise InvalidData(f"some households have an empty {parent}")
    twice = pairs[group_by].duplicated()
    if twice.any():
        raise InvalidData(f"{group_by} {pairs[group_by][twice].iloc[0]} lies under two {parent}s")
    under = pd.Series(pairs[parent].to_numpy(), index=pairs[group_by].to_numpy())
    of_group = under.reindex(matrix.grid.groups).to_numpy()
    labels = pd.Index(sorted(set(of_group)))
    children = tuple(np.flatnonzero(of_group == label) for label in labels)
    return Tree(labels, children)


def unit_frame(columns: Mapping[str, Any]) -> pd.DataFrame:
    """A unit's cells in ``AGGREGATE_COLUMNS``, typed: ``columns`` holds a sequence per column
    (starts already UTC datetimes; None where a count, a sum or a merged-into is absent)."""
    return pd.DataFrame(
        {
            GROUP: columns[GROUP],
            LEVEL: columns[LEVEL],
            START: columns[START],
            INTERVAL: np.asarray(columns[INTERVAL], dtype=np.int64),
            MEMBERS: pd.array(columns[MEMBERS], dtype="Int64"),
            ENERGY: pd.array(columns[ENERGY], dtype="Float64"),
            STATUS: columns[STATUS],
            REASON: columns[REASON],
            MERGED_INTO: pd.array(columns[MERGED_INTO], dtype="str"),
        }
    )


def plain_columns(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """A unit frame as lists of JSON values (None where absent; starts in microseconds as
    ``start_us``): what the broker records."""

    def plain(series: pd.Series) -> list[Any]:
        return [None if pd.isna(v) else v for v in series.tolist()]

    starts = frame[START].astype("int64") // 1_000
    return {
        GROUP: frame[GROUP].astype(str).tolist(),
        LEVEL: frame[LEVEL].astype(str).tolist(),
        "start_us": starts.tolist(),
        INTERVAL: frame[INTERVAL].astype(int).tolist(),
        MEMBERS: plain(frame[MEMBERS]),
        ENERGY: plain(frame[ENERGY].astype("Float64")),
        STATUS: frame[STATUS].astype(str).tolist(),
        REASON: frame[REASON].astype(str).tolist(),
        MERGED_INTO: plain(frame[MERGED_INTO]),
    }


def from_plain(columns: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    """The unit frame ``plain_columns`` gave."""
    starts = np.asarray(columns["start_us"], dtype=np.int64)
    return unit_frame({**columns, START: pd.to_datetime(starts, unit="us", utc=True)})
