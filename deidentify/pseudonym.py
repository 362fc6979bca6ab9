"""Keyed pseudonyms for the pseudonymised tier (X.1332 C3.3, C4.3, R3.5; ARCHITECTURE §3.4).

A recipient that needs to follow a meter over time but not to know whose it is gets, instead of
the meter's identifier, ``ps1:<version>:<32 hex digits>``: HMAC-SHA-256 of the identifier under
the recipient domain's key, truncated to 128 bits. The same key gives the same pseudonym in every
release to that recipient; another recipient, another key version or another column gives an
unrelated one, so two recipients cannot join their releases on it. Re-keying a domain is a new
key with the next ``version``: every pseudonym changes and the prefix says which key made it.

Where the keys live: the caller passes the key. The broker derives it from its key kit for
(recipient domain, version) when it releases and never stores it beside the data, in the
release, its manifest or a log; without the key the pseudonyms cannot be recomputed from a
guessed identifier. Pseudonymised data is still personal data: load profiles re-identify
households (the privacy report shows how well); this tier needs the customer's consent.

Per column the key is first narrowed to a sub-key, HMAC(key, ``ps1 \\0 domain \\0 version \\0
column``), so the same identifier in two columns, or under the same key bytes passed for two
domains, still gives unrelated pseudonyms. Each distinct identifier is hashed once, then mapped
to its rows; identifiers are turned to text with ``str`` first (42 and "42" are one identifier).

Speed: ``hmac.digest`` costs 3-5 µs a call on OpenSSL 3.0 (it sets up the MAC every time), too
slow for a million meters. HMAC is computed here as RFC 2104 defines it, from the SHA-256 states
after the key's inner and outer pads, copied for each identifier (about 1 µs); the first
identifier of every call is checked against ``hmac.digest`` and the tests compare the two on
random keys and messages.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from deidentify.errors import InvalidData, InvalidParameter
from deidentify.frames import METER, PERSONAL_FIELDS, require
from deidentify.manifest import ReleaseManifest

SCHEME = "ps1"
MIN_KEY_BYTES = 32
PSEUDONYM_BYTES = 16
"""Pseudonyms keep 128 of the 256 bits: no collision in any fleet, half the text."""
_BLOCK = 64


class _Hash(Protocol):
    def copy(self) -> _Hash: ...
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


def _sha256_constructor() -> Callable[[bytes], _Hash]:
    """CPython's own SHA-256 where it has one (far less overhead per call than OpenSSL 3)."""
    for name in ("_sha2", "_sha256"):  # 3.12+, 3.11
        try:
            module: Any = importlib.import_module(name)
        except ImportError:
            continue
        constructor: Callable[[bytes], _Hash] = module.sha256
        return constructor
    return hashlib.sha256


@dataclass(frozen=True, slots=True)
class PseudonymKey:
    """The pseudonym key of one recipient domain, at one version (re-keying = next version)."""

    domain: str
    key: bytes = field(repr=False)
    version: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.domain, str) or not self.domain or "\0" in self.domain:
            raise InvalidParameter("a pseudonym key needs a recipient domain (non-empty text)")
        if not isinstance(self.key, bytes) or len(self.key) < MIN_KEY_BYTES:
            raise InvalidParameter(
                f"a pseudonym key must be at least {MIN_KEY_BYTES} bytes (256 bits) of bytes"
            )
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise InvalidParameter("a pseudonym key version is a whole number >= 1")

    def rotated(self, key: bytes) -> PseudonymKey:
        """The domain re-keyed: ``key`` at the next version (every pseudonym changes)."""
        return PseudonymKey(self.domain, key, self.version + 1)

    def column_key(self, column: str) -> bytes:
        """The sub-key for one column (see the module's docstring)."""
        context = "\0".join((SCHEME, self.domain, str(self.version), column))
        return hmac.digest(self.key, context.encode(), "sha256")


class _Hmac:
    """HMAC-SHA-256 (RFC 2104) under one 32-byte key, from the pads' precomputed states."""

    def __init__(self, key: bytes) -> None:
        block = key.ljust(_BLOCK, b"\0")
        sha256 = _sha256_constructor()
        self.inner = sha256(bytes(b ^ 0x36 for b in block))
        self.outer = sha256(bytes(b ^ 0x5C for b in block))
        self.key = key

    def pseudonyms(self, identifiers: Iterable[str], prefix: str) -> list[str]:
        inner, outer, size = self.inner.copy, self.outer.copy, PSEUDONYM_BYTES
        out: list[str] = []
        append = out.append
        for text in identifiers:
            i = inner()
            i.update(text.encode())
            o = outer()
            o.update(i.digest())
            append(prefix + o.digest()[:size].hex())
        return out

    def check(self, text: str, pseudonym: str) -> None:
        expected = hmac.digest(self.key, text.encode(), "sha256")[:PSEUDONYM_BYTES].hex()
        if not pseudonym.endswith(expected):
            raise RuntimeError("the HMAC-SHA-256 fast path disagrees with hmac.digest")


def pseudonymise(
    frame: pd.DataFrame, columns: Sequence[str] = (METER,), *, key: PseudonymKey
) -> tuple[pd.DataFrame, ReleaseManifest]:
    """``frame`` with ``columns`` replaced by pseudonyms and the other personal fields dropped.

    Columns keep their names (``meter_id`` holds pseudonyms, so the readings' transforms still
    apply) and become categorical, one category per distinct identifier (a readings frame holds
    each pseudonym once, not once per interval; to compare two releases' columns with ``==``,
    ``astype(str)`` them first, as pandas compares categoricals only over equal categories). The
    index and the other columns are kept. Refused, releasing nothing: no columns named, a column
    missing or holding missing values, an index named after a personal field. An empty frame
    gives an empty frame.
    """
    names = _columns(columns)
    _check_frame(frame, names)
    dropped = [c for c in PERSONAL_FIELDS if c in frame.columns and c not in names]
    out = frame.drop(columns=dropped)
    out.attrs = {}
    for column in names:
        out[column] = _pseudonym_column(frame[column], key, column)
    return out, _manifest(frame, out, names, dropped, key)


def _columns(columns: Sequence[str]) -> list[str]:
    names = [columns] if isinstance(columns, str) else list(columns)
    if not names or len(set(names)) != len(names):
        raise InvalidParameter("name the identifier column(s) to pseudonymise, each once")
    return names


def _check_frame(frame: pd.DataFrame, names: list[str]) -> None:
    require(frame, names, "frame to pseudonymise")
    personal = [n for n in frame.index.names if n in PERSONAL_FIELDS]
    if personal:
        raise InvalidData(
            f"the frame's index is {', '.join(map(str, personal))}: reset_index() first, "
            "so the identifiers are pseudonymised and not released in the index"
        )
    for column in names:
        missing = int(frame[column].isna().sum())
        if missing:
            raise InvalidData(f"column {column} holds {missing} missing identifier(s)")


def _pseudonym_column(values: pd.Series[Any], key: PseudonymKey, column: str) -> pd.Series[Any]:
    codes, uniques = pd.factorize(values)
    texts: list[str] = uniques.tolist()
    if not pd.api.types.is_string_dtype(uniques.dtype) or uniques.dtype == object:
        texts = [u if isinstance(u, str) else str(u) for u in texts]
    mac = _Hmac(key.column_key(column))
    names = mac.pseudonyms(texts, f"{SCHEME}:{key.version}:")
    if names:
        mac.check(texts[0], names[0])
    categories = pd.Index(np.array(names, dtype=object), dtype=object)
    return pd.Series(pd.Categorical.from_codes(codes, categories=categories), index=values.index)


def _manifest(
    before: pd.DataFrame,
    after: pd.DataFrame,
    names: list[str],
    dropped: list[str],
    key: PseudonymKey,
) -> ReleaseManifest:
    transforms = [f"pseudonymise({c})" for c in names]
    if dropped:
        transforms.append(f"drop_fields({', '.join(dropped)})")
    return ReleaseManifest(
        tier="pseudonymised",
        transforms=transforms,
        rows_in=len(before),
        rows_out=len(after),
        notes=[
            f"pseudonyms {SCHEME}:{key.version}:<hex>: HMAC-SHA-256 truncated to "
            f"{PSEUDONYM_BYTES * 8} bits under the key of domain {key.domain!r}, version "
            f"{key.version}; still personal data"
        ],
    )
