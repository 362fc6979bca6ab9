"""The differencing check: refuse a release that, with an earlier one, gives back a household.

Two aggregates that each pass 15/15 can still be subtracted: if a recipient gets the sum of a
group of 100 households and later the sum of the same group without one of them, over the same
intervals, the difference is that household's load profile, exactly. No per-release threshold
sees this; only the release history does. ``check_differencing`` takes the member sets of the
release about to be made and the history of earlier releases to the same recipient (an input:
the broker stores it; every recipient's, since recipients can pool what they receive) and
refuses (``DifferencingRefused``) when a member set overlaps an
earlier one in time and in membership and the two differ by 1 to ``min_difference - 1``
members (15 by default, as the N rule). Identical sets are allowed: their difference is zero
and reveals nothing new.

Overlap is decided by membership, not by the group's label: renaming a group, or asking for a
substation where a feeder was released before, would otherwise evade the check.

A set already released to the recipient (the same members over a period covering this one) is
not checked again: its sums are ones the recipient holds, so its difference from any earlier
set is one the recipient could already take. Without this, a release holding a feeder and the
substation it was merged into (sets a few members apart, never in the same interval) could
never be repeated.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd

from deidentify.errors import DifferencingRefused, InvalidParameter


@dataclass(frozen=True)
class MemberSet:
    """The meters behind one released group over ``[start, end)``."""

    group: str
    start: pd.Timestamp
    end: pd.Timestamp
    members: frozenset[str]

    def overlaps(self, other: MemberSet) -> bool:
        """Both cover some common time and hold some common member."""
        in_time = self.start < other.end and other.start < self.end
        return in_time and not self.members.isdisjoint(other.members)


@dataclass(frozen=True)
class PastRelease:
    """An earlier release to ``recipient``: its id and the member sets it released."""

    release_id: str
    recipient: str
    sets: tuple[MemberSet, ...]


def check_differencing(
    members: Sequence[MemberSet],
    history: Iterable[PastRelease],
    recipient: str | None,
    min_difference: int = 15,
) -> None:
    """Refuse when a set of ``members`` overlaps one released earlier to ``recipient`` (None:
    to anyone, as recipients can pool what they receive) and the two differ by fewer than
    ``min_difference`` members (but by at least one)."""
    if min_difference < 1:
        raise InvalidParameter(f"min_difference must be >= 1, got {min_difference}")
    holding: defaultdict[str, set[int]] = defaultdict(set)
    for i, current in enumerate(members):
        for meter in current.members:
            holding[meter].add(i)
    history = [r for r in history if recipient is None or r.recipient == recipient]
    held: defaultdict[frozenset[str], list[MemberSet]] = defaultdict(list)
    for release in history:
        for past in release.sets:
            held[past.members].append(past)
    repeated = {
        i
        for i, current in enumerate(members)
        if any(p.start <= current.start and current.end <= p.end for p in held[current.members])
    }
    for release in history:
        for past in release.sets:
            # A set within min_difference - 1 members of ``past`` misses at most that many of
            # its members: any min_difference of them name every such set (one index lookup
            # per member of this release, not per member of the whole history).
            probe = itertools.islice(past.members, min_difference)
            for i in set().union(*(holding.get(m, ()) for m in probe)) - repeated:
                _refuse_close(members[i], release, past, min_difference, recipient)


def _refuse_close(
    current: MemberSet, release: PastRelease, past: MemberSet, least: int, recipient: str | None
) -> None:
    if not current.overlaps(past):
        return
    differ = len(current.members ^ past.members)
    if 0 < differ < least:
        raise DifferencingRefused(
            f"group {current.group} differs by {differ} member(s) (fewer than {least}) from "
            f"group {past.group} of release {release.release_id} to "
            f"{'the same recipient' if recipient else 'a recipient'} over an overlapping period: "
            "their difference would give back those households' data"
        )
