"""Consent events and their hash chain: the ledger is the list of these, appended, never edited.

Each event's hash is SHA-256 over the previous event's hash followed by the event's body in
RFC 8785 canonical JSON; the first event links to 32 zero bytes. Changing, dropping or
reordering any stored event therefore breaks the link at that event, and ``verify_chain``
names the first one that does not hold. The body is what is stored (one text column), so a
stored event is checked byte for byte, not just re-parsed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from broker.kit.clock import parse_rfc3339
from consent_ledger.errors import ChainError, InvalidConsent
from consent_ledger.terms import ConsentTerms, terms_from_json, utc_text

_s: Callable[[str], str] = json.encoder.encode_basestring  # RFC 8785's string escapes
GENESIS = bytes(32)
"""The ``prev_hash`` of the first event."""
BODY_VERSION = 1
_BODY_KEYS = frozenset({"actor", "at", "consent_id", "kind", "seq", "terms", "v"})


class Kind(StrEnum):
    given = "given"
    modified = "modified"
    withdrawn = "withdrawn"
    expired = "expired"


CARRIES_TERMS = frozenset({Kind.given, Kind.modified})
"""Kinds whose event holds the full terms (withdrawn and expired hold none)."""


@dataclass(frozen=True)
class ConsentEvent:
    seq: int
    """1-based position in the ledger."""
    consent_id: str
    kind: Kind
    at: datetime
    actor: str
    terms: ConsentTerms | None
    prev_hash: bytes
    hash: bytes
    body: bytes = field(repr=False, compare=False)
    """The canonical JSON that was hashed (as built, or as read back from storage)."""


def event_hash(prev_hash: bytes, body: bytes) -> bytes:
    return hashlib.sha256(prev_hash + body).digest()


def canonical_body(
    seq: int, consent_id: str, kind: Kind, at: datetime, actor: str, terms: ConsentTerms | None
) -> bytes:
    """The event's RFC 8785 JSON, written out directly: its keys are fixed and already in RFC
    8785 order, so only the values are encoded (a third of ``canonical_json``'s time on a dict;
    ``test_body_is_rfc8785_for_any_terms`` checks the two agree)."""
    text = (
        f'{{"actor":{_s(actor)},"at":"{utc_text(at)}","consent_id":{_s(consent_id)},'
        f'"kind":"{kind.value}","seq":{seq:d},'
        f'"terms":{"null" if terms is None else _terms_text(terms)},"v":{BODY_VERSION}}}'
    )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidConsent(f"consent event {seq} holds a lone surrogate: {exc}") from exc


def _terms_text(t: ConsentTerms) -> str:
    return (
        f'{{"categories":{_list(t.categories)},"collection_method":{_s(t.collection_method)},'
        f'"consent_id":{_s(t.consent_id)},"controller":{_s(t.controller)},'
        f'"customer":{_s(t.customer)},"expires_at":"{utc_text(t.expires_at)}",'
        f'"explicit":{_bool(t.explicit)},"given_at":"{utc_text(t.given_at)}",'
        f'"granularity":{_s(t.granularity)},"history_days":{t.history_days:d},'
        f'"identified":{_bool(t.identified)},"notice_hash":{_s(t.notice_hash)},'
        f'"purposes":{_list(t.purposes)},"recipient":{_s(t.recipient)}}}'
    )


def _list(values: tuple[str, ...]) -> str:
    return "[" + ",".join(map(_s, values)) + "]"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def link(
    prev_hash: bytes,
    seq: int,
    consent_id: str,
    kind: Kind,
    at: datetime,
    actor: str,
    terms: ConsentTerms | None,
) -> ConsentEvent:
    """A new event chained to ``prev_hash``."""
    body = canonical_body(seq, consent_id, kind, at, actor, terms)
    hashed = event_hash(prev_hash, body)
    return ConsentEvent(seq, consent_id, kind, at, actor, terms, prev_hash, hashed, body)


def from_body(body: bytes, prev_hash: bytes, hashed: bytes) -> ConsentEvent:
    """An event read back from storage; ``ChainError`` when the body is not one we write."""
    try:
        data = json.loads(body)
        event = _parse(data, prev_hash, hashed, body)
    except (KeyError, TypeError, ValueError) as exc:
        raise ChainError(f"stored consent event cannot be read: {exc}") from exc
    return event


def _parse(data: Any, prev_hash: bytes, hashed: bytes, body: bytes) -> ConsentEvent:
    if type(data) is not dict or set(data) != _BODY_KEYS or data["v"] != BODY_VERSION:
        raise ValueError("not a version 1 consent event body")
    kind = Kind(data["kind"])
    terms = None if data["terms"] is None else terms_from_json(data["terms"])
    if (terms is not None) != (kind in CARRIES_TERMS):
        raise ValueError(f"a {kind} event {'needs' if terms is None else 'has no'} terms")
    if terms is not None and terms.consent_id != data["consent_id"]:
        raise ValueError("the terms name another consent than the event")
    if type(data["seq"]) is not int or not all(
        type(data[name]) is str for name in ("consent_id", "actor")
    ):
        raise TypeError("seq must be an integer, consent_id and actor strings")
    at = parse_rfc3339(data["at"])
    return ConsentEvent(
        data["seq"], data["consent_id"], kind, at, data["actor"], terms, prev_hash, hashed, body
    )


def link_problem(event: ConsentEvent, seq: int, prev_hash: bytes) -> str | None:
    """Why ``event`` cannot stand at ``seq`` after an event hashed ``prev_hash`` (None: it can)."""
    if event.seq != seq:
        return f"sequence number {event.seq} where {seq} belongs"
    if event.prev_hash != prev_hash:
        return "previous hash does not match the event before it"
    recomputed = canonical_body(
        event.seq, event.consent_id, event.kind, event.at, event.actor, event.terms
    )
    if recomputed != event.body:
        return "body is not the canonical form of the event"
    if event_hash(prev_hash, event.body) != event.hash:
        return "hash does not match the body"
    return None


def verify_chain(events: Iterable[ConsentEvent]) -> int | None:
    """The index of the first event whose link or hash does not hold; None if all hold."""
    prev = GENESIS
    for index, event in enumerate(events):
        if link_problem(event, index + 1, prev) is not None:
            return index
        prev = event.hash
    return None
