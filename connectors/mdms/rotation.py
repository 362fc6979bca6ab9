"""Meter key rotation by DLMS global key transfer, with a key history (C1.6).

Three steps, so that no answer lost on the way can strand a meter:

1. In one transaction the new keys are generated and stored (wrapped) as a *pending* version,
   and the ACTION-request carrying them, wrapped under the meter's master key (RFC 3394), is
   sealed under the current keys with the MDMS's next downlink counter.
2. The request goes to the meter over a ``MeterLink``; the meter answers under its old keys
   and switches.
3. On ``success`` the pending version becomes current and the old one stays usable for the
   grace window, so frames already on their way still verify; on a refusal the pending version
   is deleted. With no answer, the pending version stays: the first frame that verifies under it
   makes it current (``connectors.mdms.ingest``). Every outcome is an audit entry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

from sqlmodel import Session, col, select

from broker.audit.events import AuditEvent, AuditSink
from broker.errors import BrokerError, NotFound
from broker.kit.clock import Clock, to_us
from broker.kit.envelope import KeyProvider, WrappedKey
from broker.kit.ids import SubjectHasher
from broker.storage.db import Database
from connectors.dlms import frames, keytransfer
from connectors.dlms.keytransfer import KeyId
from connectors.mdms.models import Meter, MeterKey
from connectors.mdms.registry import ACTIVE, KeyState, MeterRegistry, key_context

MDMS_SYSTEM_TITLE = bytes.fromhex("584D440000000001")
"""The MDMS's own system title ("XMD" + 00000001) in the IV of its requests to meters."""


class KeyRotationError(BrokerError):
    """A meter's keys cannot be rotated (unknown meter, no master key, ...)."""


class MeterUnreachable(Exception):
    """The link to the meter gave no answer."""


class MeterLink(Protocol):
    """How a ciphered request reaches a meter and its answer comes back (head-end system)."""

    def exchange(self, meter_id: str, request: bytes) -> bytes: ...


@dataclass(frozen=True)
class Rotation:
    meter_id: str
    from_version: int
    to_version: int
    outcome: str
    """``rotated``, ``refused`` (the meter said no) or ``no_answer`` (pending kept)."""
    detail: str


@dataclass(frozen=True)
class _Prepared:
    request: bytes
    current: KeyState
    version: int
    invoke_id: int


class KeyRotator:
    def __init__(
        self,
        db: Database,
        registry: MeterRegistry,
        provider: KeyProvider,
        audit: AuditSink,
        clock: Clock,
        hasher: SubjectHasher,
        grace_s: int = 86_400,
    ) -> None:
        self._db, self._registry, self._provider = db, registry, provider
        self._audit, self._clock, self._hash = audit, clock, hasher
        self.grace_s = grace_s

    def rotate(
        self, meter_id: str, link: MeterLink, actor: str, abandon_pending: bool = False
    ) -> Rotation:
        """Send new keys to the meter. While an earlier transfer awaits confirmation (its answer
        was lost: the meter may hold those keys) a new one is refused, so no answer kept from
        the earlier one can make the MDMS take keys the meter never got; ``abandon_pending``
        discards the earlier keys first, for a transfer known never to have reached the meter."""
        prepared = self._prepare(meter_id, actor, abandon_pending)
        try:
            response = link.exchange(meter_id, prepared.request)
        except (MeterUnreachable, frames.FrameRejected, OSError) as exc:
            return self._finish(meter_id, prepared, "no_answer", f"no answer: {exc}", actor)
        try:
            result = self._read_response(meter_id, prepared, response)
        except frames.FrameRejected as exc:
            return self._finish(meter_id, prepared, "no_answer", f"bad answer: {exc}", actor)
        if result != 0:
            return self._finish(meter_id, prepared, "refused", f"meter answered {result}", actor)
        return self._finish(meter_id, prepared, "rotated", "new keys in force", actor)

    def _prepare(self, meter_id: str, actor: str, abandon_pending: bool) -> _Prepared:
        with self._db.transaction() as session:
            ctx = self._registry.load(session, [meter_id]).get(meter_id)
            meter = session.get(Meter, meter_id)
            if ctx is None or meter is None:
                raise NotFound(f"no meter {meter_id}")
            if meter.status != ACTIVE:
                raise KeyRotationError(f"meter {meter_id} is {meter.status}")
            current = next(k for k in ctx.keys if k.version == ctx.key_version)
            self._pending(session, meter, abandon_pending, actor)
            master = self._master_key(session, meter_id, current.version)
            version = 1 + max(
                session.exec(select(MeterKey.version).where(MeterKey.meter_id == meter_id))
            )
            ek, ak = os.urandom(16), os.urandom(16)
            self._store_pending(session, meter_id, version, ek, ak, master)
            meter.downlink_ic += 1
            session.add(meter)
            cur_ek, cur_ak = self._registry.keys_of(meter_id, current)
            payload = keytransfer.key_data(
                master, {KeyId.GLOBAL_UNICAST_ENCRYPTION: ek, KeyId.AUTHENTICATION: ak}
            )
            invoke_id = meter.downlink_ic % 16
            apdu = keytransfer.action_request(invoke_id, payload)
            request = frames.seal(MDMS_SYSTEM_TITLE, meter.downlink_ic, cur_ek, cur_ak, apdu)
            details = {"from_version": current.version, "to_version": version}
            event = AuditEvent("mdms.meter_key_transfer_sent", actor, self._hash(meter_id), details)
            self._audit.record(session, [event])
        return _Prepared(request, current, version, invoke_id)

    def _pending(self, session: Session, meter: Meter, abandon: bool, actor: str) -> None:
        query = select(MeterKey).where(
            MeterKey.meter_id == meter.meter_id,
            col(MeterKey.version) > meter.key_version,
            col(MeterKey.encryption_wrapped).is_not(None),
        )
        pending = list(session.exec(query))
        if not pending:
            return
        versions = ", ".join(str(p.version) for p in pending)
        if not abandon:
            raise KeyRotationError(
                f"meter {meter.meter_id} has a key transfer awaiting confirmation (version "
                f"{versions}): the meter's next frame under those keys confirms it; abandon it "
                "only if it never reached the meter (--abandon-pending)"
            )
        for row in pending:
            _destroy(row, to_us(self._clock.now()))
            session.add(row)
        session.flush()
        details = {"abandoned_versions": versions}
        event = AuditEvent(
            "mdms.meter_key_pending_abandoned", actor, self._hash(meter.meter_id), details
        )
        self._audit.record(session, [event])

    def _master_key(self, session: Session, meter_id: str, version: int) -> bytes:
        row = session.get(MeterKey, (meter_id, version))
        if row is None or row.master_wrapped is None or row.kek_id is None:
            raise KeyRotationError(
                f"meter {meter_id} has no master key on file; provision it with a master_key "
                "column to rotate its keys"
            )
        wrapped = WrappedKey(row.kek_id, row.master_wrapped)
        return self._provider.unwrap(wrapped, key_context(meter_id, version, "mk"))

    def _store_pending(
        self, session: Session, meter_id: str, version: int, ek: bytes, ak: bytes, mk: bytes
    ) -> None:
        wrap = {
            kind: self._provider.wrap(key, key_context(meter_id, version, kind))
            for kind, key in (("ek", ek), ("ak", ak), ("mk", mk))
        }
        session.add(
            MeterKey(
                meter_id=meter_id,
                version=version,
                kek_id=wrap["ek"].kek_id,
                encryption_wrapped=wrap["ek"].blob,
                authentication_wrapped=wrap["ak"].blob,
                master_wrapped=wrap["mk"].blob,
                last_ic=0,
                created_us=to_us(self._clock.now()),
            )
        )
        session.flush()

    def _read_response(self, meter_id: str, prepared: _Prepared, response: bytes) -> int:
        current = prepared.current
        envelope = frames.parse_ciphered(response)
        if envelope.system_title.hex().upper() != meter_id:
            raise frames.FrameRejected(frames.Reason.BODY_MISMATCH, "answer from another meter")
        if envelope.invocation_counter <= current.last_ic:
            raise frames.FrameRejected(frames.Reason.REPLAY, "answer with an old counter")
        ek, ak = self._registry.keys_of(meter_id, current)
        plain = frames.open_ciphered(envelope, ek, ak)
        invoke_id, result = keytransfer.parse_action_response(plain)
        if invoke_id != prepared.invoke_id:
            raise frames.FrameRejected(
                frames.Reason.REPLAY, f"answer to request {invoke_id}, not {prepared.invoke_id}"
            )
        return result

    def _finish(
        self, meter_id: str, prepared: _Prepared, outcome: str, detail: str, actor: str
    ) -> Rotation:
        with self._db.transaction() as session:
            self._registry.load(session, [meter_id])  # lock the meter
            if outcome == "rotated":
                self._activate(session, meter_id, prepared)
            elif outcome == "refused":
                pending = session.get(MeterKey, (meter_id, prepared.version))
                if pending is not None:  # kept, destroyed: version numbers are never reused
                    _destroy(pending, to_us(self._clock.now()))
                    session.add(pending)
            details = {
                "from_version": prepared.current.version,
                "to_version": prepared.version,
                "outcome": outcome,
                "detail": detail,
            }
            event = AuditEvent("mdms.meter_key_rotated", actor, self._hash(meter_id), details)
            self._audit.record(session, [event])
        self._registry.forget_keys(meter_id)
        return Rotation(meter_id, prepared.current.version, prepared.version, outcome, detail)

    def _activate(self, session: Session, meter_id: str, prepared: _Prepared) -> None:
        now = to_us(self._clock.now())
        meter = session.get(Meter, meter_id)
        pending = session.get(MeterKey, (meter_id, prepared.version))
        assert meter is not None and pending is not None
        if meter.key_version >= prepared.version:
            return  # ingest already saw a frame under the new keys and made them current
        previous = session.get(MeterKey, (meter_id, meter.key_version))
        assert previous is not None
        previous.last_ic = meter.last_ic  # the old version's counter moves to its own row
        meter.key_version, meter.last_ic = prepared.version, pending.last_ic
        session.add_all([meter, previous])
        session.flush()
        query = select(MeterKey).where(
            MeterKey.meter_id == meter_id, col(MeterKey.version) < prepared.version
        )
        for old in session.exec(query):
            if old.valid_until_us is None:
                old.valid_until_us = now + self.grace_s * 1_000_000
            elif old.valid_until_us <= now:  # past its grace: destroy the old key material
                _destroy(old, old.valid_until_us)
            session.add(old)
        session.flush()


def _destroy(row: MeterKey, until_us: int) -> None:
    """Drop a key version's material; the row stays so its number is never given again."""
    row.encryption_wrapped = row.authentication_wrapped = row.master_wrapped = None
    row.kek_id = None
    row.valid_until_us = until_us
