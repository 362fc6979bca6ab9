"""The MDMS's register of customers, meters and meter keys (C1.6, C1.7, R1.3).

Meter keys are stored only wrapped by the key-encryption key, one row per key version. The
ingest path asks for the meters of a batch in one query (``load``) and keeps unwrapped keys in
a bounded cache. Customers' personal data is sealed field by field under each customer's data
key, apart from the readings; erasing a customer (destroying that key) makes both unreadable.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import func
from sqlmodel import Session, col, select

from broker.audit.events import AuditEvent, AuditSink
from broker.customers.models import Customer
from broker.errors import BrokerError, NotFound
from broker.keys.service import DataKeys
from broker.kit.clock import Clock, to_us
from broker.kit.envelope import KeyProvider, KeyRing, WrappedKey
from broker.kit.ids import SubjectHasher
from broker.storage.raw import Raw
from connectors.mdms.keyfile import CustomerRow, MeterKeyRow
from connectors.mdms.models import Meter, MeterKey

ACTIVE = "active"
_KEY_CACHE = 200_000
ANALYZE_AFTER = 10_000
INGEST_LOCK = 0x4D444D53  # "MDMS": the advisory lock that serialises meter-state writers


class ProvisioningError(BrokerError):
    """Meters or customers cannot be provisioned as asked; nothing was stored."""


@dataclass
class KeyState:
    version: int
    last_ic: int
    valid_until_us: int | None
    kek_id: str
    encryption_wrapped: bytes
    authentication_wrapped: bytes
    changed: bool = False
    """Set when ingest moved ``last_ic`` or ``valid_until_us`` of a non-current version."""


@dataclass
class MeterContext:
    """What ingest needs of one meter, read at the start of a batch."""

    meter_id: str
    customer_ref: str
    status: str
    key_version: int
    interval_s: int
    last_end_s: int | None
    last_register_wh: int | None
    data_key_ref: str | None
    """The customer's live data key (None: the customer was erased, or has no key yet)."""
    keys: list[KeyState] = field(default_factory=list)

    def last_ic(self) -> int:
        """The counter of the current key version (0 when it has none loaded)."""
        return next((k.last_ic for k in self.keys if k.version == self.key_version), 0)

    def candidates(self, now_us: int) -> list[KeyState]:
        """Key versions a frame may be sealed under: the current one first, then a newer one
        sent but not yet confirmed, then older ones still inside their grace window."""
        current = [k for k in self.keys if k.version == self.key_version]
        newer = [k for k in self.keys if k.version > self.key_version]
        older = [
            k
            for k in self.keys
            if k.version < self.key_version and (k.valid_until_us or 0) > now_us
        ]
        return current + sorted(newer, key=lambda k: k.version) + older


def key_context(meter_id: str, version: int, kind: str) -> bytes:
    return f"meter_key|{meter_id}|{version}|{kind}".encode()


def pii_context(customer_ref: str, name: str) -> bytes:
    return f"customer|{customer_ref}|{name}".encode()


# PostgreSQL types of the columns in the order _meter_values and _key_values list them
_METER_TYPES = ("text",) * 5 + ("int4", "int8", "int8", "int4", "int8", "int8", "int8")
_KEY_TYPES = ("text", "int4", "text", "bytea", "bytea", "bytea", "int8", "int8", "int8")

_LOAD_COLUMNS = (
    "SELECT m.meter_id, m.customer_ref, m.status, m.key_version, m.interval_s, m.last_end_s, "
    "m.last_register_wh, (SELECT d.key_ref FROM data_key d WHERE d.subject_hash = "
    "c.subject_hash AND d.wrapped IS NOT NULL ORDER BY d.version DESC LIMIT 1), k.version, "
    "CASE WHEN k.version = m.key_version THEN m.last_ic ELSE k.last_ic END, "
    "k.valid_until_us, k.kek_id, "
    "k.encryption_wrapped, k.authentication_wrapped "
)
_LOAD = (
    _LOAD_COLUMNS + "FROM meter m JOIN customer c ON c.customer_ref = m.customer_ref "
    "JOIN meter_key k ON k.meter_id = m.meter_id "
    "WHERE m.meter_id IN {in} AND k.encryption_wrapped IS NOT NULL"
)
# On PostgreSQL the batch's ids drive index lookups (LATERAL): a hash join over whole tables,
# which the planner picks when its statistics lag a fast-growing table, costs a scan of a
# million meters per batch.
_LOAD_PG_FROM = (
    "FROM unnest(?::text[]) AS w(id) "
    "CROSS JOIN LATERAL (SELECT * FROM meter WHERE meter_id = w.id) m "
    "CROSS JOIN LATERAL (SELECT subject_hash FROM customer "
    "WHERE customer_ref = m.customer_ref) c "
    "CROSS JOIN LATERAL (SELECT * FROM meter_key WHERE meter_id = m.meter_id "
    "AND encryption_wrapped IS NOT NULL) k"
)
_LOAD_PG = _LOAD_COLUMNS + _LOAD_PG_FROM


class MeterRegistry:
    def __init__(
        self,
        provider: KeyProvider,
        data_keys: DataKeys,
        audit: AuditSink,
        clock: Clock,
        hasher: SubjectHasher,
    ) -> None:
        self._provider = provider
        self._data_keys = data_keys
        self._audit = audit
        self._clock = clock
        self._hash = hasher
        self._keys: OrderedDict[tuple[str, int], tuple[bytes, bytes]] = OrderedDict()
        self._lock = threading.Lock()  # the server's ingest and a rotation share the cache

    # ---- reading, for ingest ----------------------------------------------------------------

    def load(self, session: Session, meter_ids: Sequence[str]) -> dict[str, MeterContext]:
        """The meters among ``meter_ids`` with their usable key versions. Readers of meter
        state serialise: SQLite's writer lock does it, on PostgreSQL one transaction-scoped
        advisory lock does (cheaper than locking every meter row; each batch also ends by
        locking the audit log's head, so batches commit one after another in any case)."""
        raw = Raw(session)
        wanted = sorted(set(meter_ids))
        if raw.postgres:
            raw.execute("SELECT pg_advisory_xact_lock(?)", [INGEST_LOCK])
        out: dict[str, MeterContext] = {}
        rows = (
            raw.query(_LOAD_PG, [wanted], by_index=True)
            if raw.postgres
            else raw.query_in(_LOAD, wanted)
        )
        for row in rows:
            ctx = out.get(row[0])
            if ctx is None:
                ctx = out[row[0]] = MeterContext(*row[:8])
            ctx.keys.append(KeyState(*row[8:]))
        return out

    def keys_of(self, meter_id: str, key: KeyState) -> tuple[bytes, bytes]:
        """(encryption key, authentication key) of a version, unwrapped once and cached."""
        cache_key = (meter_id, key.version)
        with self._lock:
            found = self._keys.get(cache_key)
            if found is not None:
                self._keys.move_to_end(cache_key)
                return found
        ek = self._unwrap(meter_id, key.version, "ek", key.kek_id, key.encryption_wrapped)
        ak = self._unwrap(meter_id, key.version, "ak", key.kek_id, key.authentication_wrapped)
        with self._lock:
            self._keys[cache_key] = (ek, ak)
            if len(self._keys) > _KEY_CACHE:
                self._keys.popitem(last=False)
        return ek, ak

    def forget_keys(self, meter_id: str) -> None:
        with self._lock:
            for cache_key in [k for k in self._keys if k[0] == meter_id]:
                del self._keys[cache_key]

    def _unwrap(self, meter_id: str, version: int, kind: str, kek_id: str, blob: bytes) -> bytes:
        return self._provider.unwrap(WrappedKey(kek_id, blob), key_context(meter_id, version, kind))

    def _wrap(self, meter_id: str, version: int, kind: str, key: bytes) -> WrappedKey:
        return self._provider.wrap(key, key_context(meter_id, version, kind))

    # ---- key-encryption key rotation ---------------------------------------------------------

    def rewrap_all(self, session: Session, actor: str) -> int:
        """Re-wrap every stored meter key under the current KEK; returns the rows re-wrapped."""
        to_kek = self._provider.current_kek_id()
        query = select(MeterKey).where(col(MeterKey.kek_id).is_not(None), MeterKey.kek_id != to_kek)
        rows = 0
        for row in session.exec(query):
            self._rewrap_row(row)
            session.add(row)
            rows += 1
        session.flush()
        details = {"to_kek": to_kek, "meter_keys_rewrapped": rows}
        self._audit.record(session, [AuditEvent("mdms.meter_keys_rewrapped", actor, None, details)])
        return rows

    def _rewrap_row(self, row: MeterKey, master: bytes | None = None) -> None:
        """Every key of a version wrapped under the current KEK (one KEK per row), with
        ``master`` as its master key if given."""
        kinds = (
            ("ek", "encryption_wrapped"),
            ("ak", "authentication_wrapped"),
            ("mk", "master_wrapped"),
        )
        plain: dict[str, bytes] = {}
        for kind, attr in kinds:
            blob: bytes | None = getattr(row, attr)
            if blob is not None and row.kek_id is not None:
                plain[attr] = self._unwrap(row.meter_id, row.version, kind, row.kek_id, blob)
        if master is not None:
            plain["master_wrapped"] = master
        for kind, attr in kinds:
            if attr in plain:
                setattr(row, attr, self._wrap(row.meter_id, row.version, kind, plain[attr]).blob)
        row.kek_id = self._provider.current_kek_id()

    def usage_by_kek(self, session: Session) -> dict[str, int]:
        query = select(MeterKey.kek_id, func.count()).group_by(col(MeterKey.kek_id))
        return {kek: n for kek, n in session.exec(query) if kek is not None}

    # ---- provisioning -----------------------------------------------------------------------

    def provision(
        self, session: Session, rows: Sequence[MeterKeyRow], actor: str, source: str
    ) -> dict[str, int]:
        """Store new meters with their keys (wrapped) and their customers; a meter already
        provisioned with the same keys and customer is left as it is (its master key added if
        it had none), one with other keys is refused (rotate its keys instead)."""
        existing = self.load(session, [r.meter_id for r in rows])
        known = [r for r in rows if r.meter_id in existing]
        found = [self._conflict(session, r, existing[r.meter_id]) for r in known]
        errors = [e for e in found if e is not None]
        if errors:
            raise ProvisioningError("; ".join(errors[:20]) + "; nothing was stored")
        masters_added = self._add_masters(session, known, existing)
        new = [r for r in rows if r.meter_id not in existing]
        customers = self._ensure_customers(session, sorted({r.customer_ref for r in new}), actor)
        now = to_us(self._clock.now())
        meters, keys = [], []
        for r in new:
            meters.append(_meter_values(r, now))
            keys.append(self._key_values(r.meter_id, 1, r, now))
        raw = Raw(session)
        if new:
            raw.copy_in(
                "meter", tuple(meters[0]), _METER_TYPES, [tuple(m.values()) for m in meters]
            )
            raw.copy_in("meter_key", tuple(keys[0]), _KEY_TYPES, [tuple(k.values()) for k in keys])
        if len(new) >= ANALYZE_AFTER and raw.postgres:
            # fresh statistics after a bulk load, as PostgreSQL's documentation advises
            raw.execute("ANALYZE meter, meter_key, customer, data_key")
        report = {"provisioned": len(new), "unchanged": len(rows) - len(new)}
        report["customers_created"] = customers
        report["master_keys_added"] = masters_added
        details = {**report, "source": source}
        self._audit.record(session, [AuditEvent("mdms.meters_provisioned", actor, None, details)])
        return report

    def _key_values(
        self, meter_id: str, version: int, keys: MeterKeyRow, now: int
    ) -> dict[str, object]:
        ek = self._wrap(meter_id, version, "ek", keys.encryption_key)
        ak = self._wrap(meter_id, version, "ak", keys.authentication_key)
        mk = self._wrap(meter_id, version, "mk", keys.master_key) if keys.master_key else None
        return {
            "meter_id": meter_id,
            "version": version,
            "kek_id": ek.kek_id,
            "encryption_wrapped": ek.blob,
            "authentication_wrapped": ak.blob,
            "master_wrapped": mk.blob if mk else None,
            "last_ic": 0,
            "created_us": now,
            "valid_until_us": None,
        }

    def _stored_master(self, session: Session, meter_id: str, version: int) -> bytes | None:
        row = session.get(MeterKey, (meter_id, version))
        if row is None or row.master_wrapped is None or row.kek_id is None:
            return None
        return self._unwrap(meter_id, version, "mk", row.kek_id, row.master_wrapped)

    def _add_masters(
        self, session: Session, rows: Sequence[MeterKeyRow], existing: dict[str, MeterContext]
    ) -> int:
        """A known meter's master key, given now and not before, is stored (wrapped)."""
        added = 0
        for r in rows:
            version = existing[r.meter_id].key_version
            if r.master_key is None or self._stored_master(session, r.meter_id, version):
                continue
            key = session.get(MeterKey, (r.meter_id, version))
            assert key is not None
            self._rewrap_row(key, master=r.master_key)
            session.add(key)
            added += 1
        session.flush()
        return added

    def _conflict(self, session: Session, row: MeterKeyRow, ctx: MeterContext) -> str | None:
        if ctx.customer_ref != row.customer_ref:
            return f"line {row.line}: meter {row.meter_id} belongs to another customer"
        current = [k for k in ctx.keys if k.version == ctx.key_version]
        if not current or self.keys_of(ctx.meter_id, current[0]) != (
            row.encryption_key,
            row.authentication_key,
        ):
            return (
                f"line {row.line}: meter {row.meter_id} is provisioned with other keys; "
                "use `broker meters rotate-keys`"
            )
        stored_master = self._stored_master(session, ctx.meter_id, ctx.key_version)
        if row.master_key is not None and stored_master not in (None, row.master_key):
            return f"line {row.line}: meter {row.meter_id} is provisioned with another master key"
        return None

    def _ensure_customers(self, session: Session, refs: list[str], actor: str) -> int:
        """Create customer rows (without personal data yet) and their data keys."""
        known: set[str] = set()
        for start in range(0, len(refs), 500):
            query = select(Customer.customer_ref).where(
                col(Customer.customer_ref).in_(refs[start : start + 500])
            )
            known.update(session.exec(query))
        missing = [r for r in refs if r not in known]
        if missing:
            now = to_us(self._clock.now())
            rows = [(r, self._hash(r), now) for r in missing]
            Raw(session).copy_in(
                "customer",
                ("customer_ref", "subject_hash", "created_us"),
                ("text",) * 2 + ("int8",),
                rows,
            )
            self._data_keys.current_refs(session, missing, actor)
        return len(missing)

    # ---- customers --------------------------------------------------------------------------

    def import_customers(
        self, session: Session, rows: Sequence[CustomerRow], actor: str, source: str
    ) -> dict[str, int]:
        """Store customers' personal data, each field sealed under the customer's data key."""
        refs = sorted({r.customer_ref for r in rows})
        created = self._ensure_customers(session, refs, actor)
        key_refs = self._data_keys.current_refs(session, refs, actor)
        erased = [r for r, k in key_refs.items() if k is None]
        if erased:
            raise ProvisioningError(
                f"customer {erased[0]} was erased; its data cannot be stored again"
            )
        ring = self._data_keys.keyring(session)
        for r in rows:
            key_ref = key_refs[r.customer_ref]
            assert key_ref is not None
            sealed = {
                f"{name}_sealed": ring.seal(
                    key_ref, value.encode(), pii_context(r.customer_ref, name)
                )
                for name, value in (
                    ("name", r.name),
                    ("address", r.address),
                    ("account", r.account_number),
                )
            }
            customer = session.get(Customer, r.customer_ref)
            assert customer is not None
            for attr, value in sealed.items():
                setattr(customer, attr, value)
            session.add(customer)
        session.flush()
        report = {"customers": len(rows), "created": created}
        details = {**report, "source": source}
        self._audit.record(session, [AuditEvent("mdms.customers_imported", actor, None, details)])
        return report

    def customer_record(self, session: Session, customer_ref: str) -> dict[str, str | None]:
        """A customer's personal data, opened (for the operator's and the customer's eyes)."""
        customer = session.get(Customer, customer_ref)
        if customer is None:
            raise NotFound(f"no customer {customer_ref}")
        ring: KeyRing = self._data_keys.keyring(session)
        out: dict[str, str | None] = {"customer_ref": customer_ref}
        for name in ("name", "address", "account"):
            sealed: bytes | None = getattr(customer, f"{name}_sealed")
            out[name] = (
                None
                if sealed is None
                else ring.open(sealed, pii_context(customer_ref, name)).decode()
            )
        return out

    def meters(self, session: Session) -> list[Meter]:
        return list(session.exec(select(Meter).order_by(col(Meter.meter_id))))


def _meter_values(r: MeterKeyRow, now: int) -> dict[str, object]:
    return {
        "meter_id": r.meter_id,
        "customer_ref": r.customer_ref,
        "feeder": r.feeder,
        "postcode": r.postcode,
        "status": ACTIVE,
        "key_version": 1,
        "last_ic": 0,
        "downlink_ic": 0,
        "interval_s": r.interval_s,
        "last_end_s": None,
        "last_register_wh": None,
        "created_us": now,
    }
