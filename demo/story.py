"""``broker demo``: the whole story end to end on a fresh embedded data directory.

Steps: initialise keys, CA and database; issue certificates; the reference path of simulated
meters, concentrators and the MDMS with its attacks (``demo.path``); rotate the KEK and
erase one customer by crypto-shredding; write a burst of audit events in group commits; serve
``/healthz`` over mutual TLS and show who gets in; export the audit log and verify it offline,
then show that a tampered copy is caught. It writes ``summary.json`` and
``audit-export.jsonl`` into the output directory.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from broker.api.server import build, running
from broker.api.tls import client_context
from broker.audit.events import AuditEvent
from broker.audit.export import ExportFilters, export_bundle
from broker.audit.verify import VerificationFailed, verify_bundle
from broker.ca.authority import Issued
from broker.errors import ConfigurationError
from broker.keys.service import KeyDestroyed
from broker.runtime.core import Runtime, audit_public_key_path, rotate_kek
from broker.runtime.wiring import open_ca
from broker.settings import Mode, Settings
from connectors.mdms.readings import read_days
from demo.path import ATTACKER_LINK

SUMMARY = "summary.json"
EXPORT = "audit-export.jsonl"
ACTOR = "demo"


@dataclass
class DemoReport:
    out: Path
    steps: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str) -> Iterator[dict[str, Any]]:
        record: dict[str, Any] = {"step": name}
        start = time.perf_counter()
        yield record
        record["seconds"] = round(time.perf_counter() - start, 3)
        self.steps.append(record)

    def write(self) -> Path:
        path = self.out / SUMMARY
        body = {"demo": "broker", "out": str(self.out), "steps": self.steps, **self.facts}
        path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
        return path


def fresh_out_dir(out: Path) -> None:
    """Use ``out`` if it is new, empty or an earlier demo's; refuse anything else."""
    if out.exists() and any(out.iterdir()):
        if not (out / SUMMARY).exists() and not (out / "var").exists():
            raise ConfigurationError(
                f"{out} exists and is not an earlier demo's output; choose another --out"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def demo_settings(out: Path) -> Settings:
    """Production settings, but for the demo's loopback webhook (the recipient runs on this
    machine): ``webhook_allow_private``, its port added once the receiver listens."""
    return Settings(mode=Mode.production, data_dir=out / "var", database_url=None,
                    webhook_allow_private=True)  # fmt: skip


def rotate_and_shred(rt: Runtime, customer: str, meter_id: str) -> dict[str, Any]:
    """Rotate the KEK (every data key and meter key re-wrapped, no block re-encrypted), then
    erase one customer by destroying their data keys: their readings and personal data stay in
    the database, unreadable, and the audit log still verifies."""
    done = rotate_kek(rt, ACTOR)
    with rt.db.transaction() as session:
        before = len(read_days(session, rt.data_keys, meter_id, 0, 1 << 30))
    with rt.db.transaction() as session:
        destroyed = rt.data_keys.destroy(session, customer, ACTOR, "demo erasure request")
    try:
        with rt.db.transaction() as session:
            read_days(session, rt.data_keys, meter_id, 0, 1 << 30)
        after = "STILL READABLE"
    except KeyDestroyed as exc:
        after = f"unreadable ({exc.message})"
    erased = {"customer": customer, "data_keys_destroyed": destroyed}
    erased |= {"days_readable_before": before, "days_after": after}
    return {**done, "erased": erased}


def audit_burst(rt: Runtime, events: int, batch: int, tick: Callable[[int], None]) -> int:
    """Write ``events`` audit events in group commits of ``batch``."""
    written = 0
    while written < events:
        n = min(batch, events - written)
        burst = [
            AuditEvent(
                "demo.frames_received",
                "concentrator:demo-dc-01",
                None,
                {"frames": 96, "n": written + i},
            )
            for i in range(n)
        ]
        with rt.db.transaction() as session:
            rt.audit.record(session, burst)
        written += n
        tick(n)
    return written


def issue_certificates(rt: Runtime) -> dict[str, Issued]:
    ca = open_ca(rt)
    wanted = [
        ("acme-energy", "third-party"),
        ("grid-ems", "ems"),
        ("energy-regulator", "regulator"),
        ("retired-partner", "third-party"),
    ]
    with rt.db.transaction() as session:
        issued = {n: ca.issue(session, rt.audit, role=r, name=n, actor=ACTOR) for n, r in wanted}
        ca.revoke(session, rt.audit, actor=ACTOR, name="retired-partner", reason="contract ended")
    return issued


def _healthz(ca_pem: Path, port: int, who: Issued | None) -> str:
    ctx = client_context(ca_pem, who.cert_path, who.key_path) if who else client_context(ca_pem)
    try:
        with httpx.Client(verify=ctx, timeout=5) as client:
            response = client.get(f"https://127.0.0.1:{port}/healthz")
    except httpx.HTTPError as exc:
        return f"refused at the TLS handshake ({type(exc).__name__})"
    body = response.json()
    if response.status_code == 200:
        return f"HTTP 200, admitted as {body['peer']} (role {body['role']})"
    return f"HTTP {response.status_code}: {body.get('detail')}"


def mtls_checks(rt: Runtime, issued: dict[str, Issued]) -> dict[str, str]:
    """Who reaches /healthz over mutual TLS 1.3: the answer for each kind of caller."""
    ca_pem = rt.settings.ca_dir / "ca.pem"
    with running(build(rt, ACTOR)) as port:
        return {
            "third party with a valid certificate": _healthz(ca_pem, port, issued["acme-energy"]),
            "EMS with a valid certificate": _healthz(ca_pem, port, issued["grid-ems"]),
            "client without a certificate": _healthz(ca_pem, port, None),
            "client with a revoked certificate": _healthz(ca_pem, port, issued["retired-partner"]),
        }


def _hide_the_attack(export: str) -> str:
    """The export as someone covering up the attack would edit it: the batch summary of the
    attacker's concentrator made to say its two frames were not rejected."""
    lines = export.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if '"type":"mdms.ingest_batch"' in line and f'"source":"{ATTACKER_LINK}"' in line:
            lines[i] = line.replace('"rejected":2,', '"rejected":0,')
            if lines[i] != line:
                return "".join(lines)
    raise RuntimeError("the export holds no batch summary of the attacker's concentrator")


def export_and_verify(rt: Runtime, out: Path) -> dict[str, Any]:
    path = out / EXPORT
    with rt.db.transaction() as session:
        summary = export_bundle(session, rt.audit, path, ExportFilters())
    vkey = audit_public_key_path(rt.settings).read_text().strip()
    report = verify_bundle(path, vkey)
    tampered = out / "audit-export.tampered.jsonl"
    tampered.write_text(_hide_the_attack(path.read_text()))
    try:
        verify_bundle(tampered, vkey)
        caught = "NOT CAUGHT"
    except VerificationFailed as exc:
        caught = exc.message
    return {
        "export": str(path),
        "entries": summary.entries,
        "tree_size": summary.tree_size,
        "verify": report.summary(),
        "tampered_copy": str(tampered),
        "tampered_verdict": caught,
    }
