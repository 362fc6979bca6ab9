"""What a customer agreed to: the fields of an ISO/IEC TS 27560 consent record, and their checks.

``ConsentTerms`` is the record as it stands after an event; it is built only through
``ConsentRequest.terms`` (a new consent) or ``ConsentChanges.apply`` (a modification), which
sort and de-duplicate the scope, and ``validate`` refuses anything the ledger must not hold,
naming every problem at once so an operator fixes a request in one go.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from broker.kit.clock import parse_rfc3339, to_rfc3339
from consent_ledger.errors import InvalidConsent
from consent_ledger.vocabulary import GRANULARITY_S, Vocabulary

MAX_HISTORY_DAYS = 3660
"""About ten years: billing records reach back seven; anything longer is a typo, and a bound
keeps ``given_at - history_days`` a representable date."""
_NOTICE_HASH = re.compile(r"sha256:[0-9a-f]{64}")
_MAX_NAME = {"customer": 64, "controller": 120, "recipient": 120, "collection_method": 64}


@dataclass(frozen=True)
class ConsentTerms:
    """One consent as it stands (ISO/IEC TS 27560 fields); times are aware, in UTC."""

    consent_id: str
    customer: str
    """The customer reference (``customer.customer_ref``)."""
    controller: str
    recipient: str
    """The recipient's id (the name in its client certificate)."""
    purposes: tuple[str, ...]
    categories: tuple[str, ...]
    granularity: str
    """The finest granularity the recipient may receive."""
    history_days: int
    """How many days before ``given_at`` released data may reach back."""
    identified: bool
    """True: data may name the customer; False: pseudonymous only."""
    explicit: bool
    """Given by an explicit opt-in action (the policy requires it for finer than daily and for
    marketing; the ledger records it)."""
    expires_at: datetime
    notice_hash: str
    """``sha256:<hex>`` of the notice text the customer was shown."""
    collection_method: str
    given_at: datetime
    """When the consent was first given (a modification keeps it)."""

    @property
    def history_start(self) -> datetime:
        """The earliest instant released data may cover."""
        return self.given_at - timedelta(days=self.history_days)


@dataclass(frozen=True)
class ConsentRequest:
    """The terms of a new consent, before the ledger gives it an id and a time."""

    customer: str
    recipient: str
    purposes: Iterable[str]
    categories: Iterable[str]
    granularity: str
    expires_at: datetime
    notice_hash: str
    collection_method: str
    controller: str
    history_days: int = 0
    identified: bool = False
    explicit: bool = False

    def terms(self, consent_id: str, given_at: datetime) -> ConsentTerms:
        return ConsentTerms(
            consent_id=consent_id,
            customer=self.customer,
            controller=self.controller,
            recipient=self.recipient,
            purposes=_scope(self.purposes),
            categories=_scope(self.categories),
            granularity=self.granularity,
            history_days=self.history_days,
            identified=self.identified,
            explicit=self.explicit,
            expires_at=_utc(self.expires_at, "expiry"),
            notice_hash=self.notice_hash,
            collection_method=self.collection_method,
            given_at=_utc(given_at, "given_at"),
        )


@dataclass(frozen=True)
class ConsentChanges:
    """A modification: the fields given replace the current ones; customer, recipient and
    controller never change (another party or controller is another consent)."""

    purposes: Iterable[str] | None = None
    categories: Iterable[str] | None = None
    granularity: str | None = None
    history_days: int | None = None
    identified: bool | None = None
    explicit: bool | None = None
    expires_at: datetime | None = None
    notice_hash: str | None = None
    collection_method: str | None = None

    def apply(self, terms: ConsentTerms) -> ConsentTerms:
        given = {k: v for k, v in self.__dict__.items() if v is not None}
        if not given:
            raise InvalidConsent(f"modification of {terms.consent_id} changes nothing")
        for name in ("purposes", "categories"):
            if name in given:
                given[name] = _scope(given[name])
        if "expires_at" in given:
            given["expires_at"] = _utc(given["expires_at"], "expiry")
        return replace(terms, **given)


def notice_hash(notice: bytes) -> str:
    """The ``notice_hash`` of a notice text as shown to the customer."""
    return "sha256:" + hashlib.sha256(notice).hexdigest()


def validate(terms: ConsentTerms, at: datetime, vocabulary: Vocabulary, max_days: int) -> None:
    """Refuse terms the ledger must not hold, as of an event at ``at``; every problem is named."""
    if _valid(terms, at, vocabulary, max_days):
        return
    problems = [
        *_name_problems(terms),
        *_scope_problems(terms, vocabulary),
        *_time_problems(terms, at, max_days),
    ]
    if not _NOTICE_HASH.fullmatch(terms.notice_hash):
        problems.append(f"notice hash {terms.notice_hash!r} is not sha256:<64 hex digits>")
    if problems:
        raise InvalidConsent(f"consent {terms.consent_id} refused: " + "; ".join(problems))


def _valid(terms: ConsentTerms, at: datetime, vocabulary: Vocabulary, max_days: int) -> bool:
    """The same checks as the problem lists below, as one expression that names nothing (an
    append validates every event; building the lists cost ~6 µs of its ~40). False sends the
    terms through the lists, which name every problem; ``test_validate_agrees_with_problems``
    keeps the two in step. Anything odd (a value of the wrong type) is left to the lists too,
    which raise on it as they always did."""
    purposes, categories = terms.purposes, terms.categories
    known_p, known_c = vocabulary.purposes, vocabulary.categories
    try:
        return bool(
            0 < len(terms.customer) <= _MAX_NAME["customer"]
            and 0 < len(terms.controller) <= _MAX_NAME["controller"]
            and 0 < len(terms.recipient) <= _MAX_NAME["recipient"]
            and 0 < len(terms.collection_method) <= _MAX_NAME["collection_method"]
            and not terms.customer.isspace()
            and not terms.controller.isspace()
            and not terms.recipient.isspace()
            and not terms.collection_method.isspace()
            and bool(purposes)
            and bool(categories)
            and all(p in known_p for p in purposes)
            and all(c in known_c for c in categories)
            and terms.granularity in GRANULARITY_S
            and 0 <= terms.history_days <= MAX_HISTORY_DAYS
            and max(at, terms.given_at) < terms.expires_at <= at + timedelta(days=max_days)
            and _NOTICE_HASH.fullmatch(terms.notice_hash) is not None
        )
    except Exception:
        return False


def _name_problems(terms: ConsentTerms) -> Iterable[str]:
    for name, limit in _MAX_NAME.items():
        value = getattr(terms, name)
        if not value or not value.strip() or len(value) > limit:
            yield f"{name.replace('_', ' ')} must be 1 to {limit} characters, not {value!r}"


def _scope_problems(terms: ConsentTerms, vocabulary: Vocabulary) -> Iterable[str]:
    for name, chosen, known in (
        ("purpose", terms.purposes, vocabulary.purposes),
        ("category", terms.categories, vocabulary.categories),
    ):
        if not chosen:
            yield f"at least one {name} is needed"
        for value in chosen:
            if value not in known:
                yield f"unknown {name} {value!r} (known: {', '.join(sorted(known))})"
    if terms.granularity not in GRANULARITY_S:
        yield (f"unknown granularity {terms.granularity!r} (known: {', '.join(GRANULARITY_S)})")
    if not 0 <= terms.history_days <= MAX_HISTORY_DAYS:
        yield f"history days must be 0 to {MAX_HISTORY_DAYS}, not {terms.history_days}"


def _time_problems(terms: ConsentTerms, at: datetime, max_days: int) -> Iterable[str]:
    effective = max(at, terms.given_at)
    if terms.expires_at <= effective:
        yield (
            f"expiry {to_rfc3339(terms.expires_at)} is not after {to_rfc3339(effective)}, "
            "when the consent takes effect"
        )
    elif terms.expires_at > at + timedelta(days=max_days):
        yield (
            f"expiry {to_rfc3339(terms.expires_at)} is more than {max_days} days after "
            f"{to_rfc3339(at)}"
        )


@lru_cache(maxsize=4096)
def utc_text(at: datetime) -> str:
    """``broker.kit.clock.to_rfc3339`` (``2026-11-24T12:00:00.000000Z``), memoised: an event
    body holds three times and a group of events shares most of them (its time, the given
    time), and formatting one costs 3-6 µs on a busy machine."""
    if at.utcoffset():
        at = at.astimezone(UTC)
    return at.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def terms_to_json(terms: ConsentTerms) -> dict[str, Any]:
    return {
        "categories": list(terms.categories),
        "collection_method": terms.collection_method,
        "consent_id": terms.consent_id,
        "controller": terms.controller,
        "customer": terms.customer,
        "expires_at": utc_text(terms.expires_at),
        "explicit": terms.explicit,
        "given_at": utc_text(terms.given_at),
        "granularity": terms.granularity,
        "history_days": terms.history_days,
        "identified": terms.identified,
        "notice_hash": terms.notice_hash,
        "purposes": list(terms.purposes),
        "recipient": terms.recipient,
    }


def terms_from_json(data: Mapping[str, Any]) -> ConsentTerms:
    """Terms read back from a stored event (``KeyError``/``TypeError``/``ValueError`` when the
    object is not what ``terms_to_json`` writes)."""
    if set(data) != _TERM_KEYS:
        raise ValueError(f"terms have fields {sorted(data)}, expected {sorted(_TERM_KEYS)}")
    return ConsentTerms(
        consent_id=_str(data["consent_id"]),
        customer=_str(data["customer"]),
        controller=_str(data["controller"]),
        recipient=_str(data["recipient"]),
        purposes=tuple(map(_str, data["purposes"])),
        categories=tuple(map(_str, data["categories"])),
        granularity=_str(data["granularity"]),
        history_days=_int(data["history_days"]),
        identified=_bool(data["identified"]),
        explicit=_bool(data["explicit"]),
        expires_at=parse_rfc3339(_str(data["expires_at"])),
        notice_hash=_str(data["notice_hash"]),
        collection_method=_str(data["collection_method"]),
        given_at=parse_rfc3339(_str(data["given_at"])),
    )


_TERM_KEYS = frozenset(ConsentTerms.__dataclass_fields__)


def _scope(values: Iterable[str]) -> tuple[str, ...]:
    if isinstance(values, str):  # one purpose given bare would become its letters
        return (values,)
    if type(values) is tuple and len(values) == 1 and type(values[0]) is str:
        return values  # the usual scope, one name: already sorted and unique
    return tuple(sorted(set(values)))


def _utc(at: datetime, what: str) -> datetime:
    if at.tzinfo is None:
        raise InvalidConsent(f"{what} {at.isoformat()} has no time zone")
    return at.astimezone(UTC)


def _str(value: object) -> str:
    if type(value) is not str:
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _int(value: object) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _bool(value: object) -> bool:
    if type(value) is not bool:
        raise TypeError(f"expected a boolean, got {value!r}")
    return value
