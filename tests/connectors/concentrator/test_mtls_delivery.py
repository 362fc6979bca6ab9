"""The concentrator against an MDMS over real mutual TLS on loopback (C1.2, R1.1): certificates
from the broker's private CA, the broker's TLS 1.3 contexts, uvicorn. Frames arrive byte for byte;
an outage is ridden out in a bounded spool and nothing is lost or stored twice; a concentrator
without a valid certificate delivers nothing."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.api.tls import RevocationCheck, client_context, server_context
from broker.ca.authority import CertificateAuthority, Issued
from broker.kit.clock import SystemClock
from broker.runtime.core import Runtime, init_keys, prepare_data_dir, upgrade_schema
from connectors.concentrator import Concentrator, ConcentratorConfig
from tests.broker.fakes import settings_for
from tests.connectors.concentrator.fakes import Meter, fast_config, frames_of, wait_until
from tests.connectors.concentrator.mdms_server import MdmsStore, create_mdms_app, serving

pytestmark = pytest.mark.timeout(60)
_names = itertools.count()


@dataclass
class Pki:
    """The broker's CA in a temporary data directory, and what a test needs of it."""

    rt: Runtime

    @property
    def ca(self) -> CertificateAuthority:
        return CertificateAuthority(self.rt.settings, self.rt.clock)

    def issue(self, role: str = "concentrator", ips: tuple[str, ...] = ()) -> Issued:
        name = f"{role}-{next(_names)}"
        with self.rt.db.transaction() as session:
            return self.ca.issue(session, self.rt.audit, role=role, name=name, actor="t", ips=ips)

    def revoke(self, issued: Issued) -> None:
        with self.rt.db.transaction() as session:
            self.ca.revoke(session, self.rt.audit, actor="test", serial=issued.serial)


@dataclass
class Mdms:
    store: MdmsStore
    pki: Pki
    port: int = 0

    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def concentrator(self, config: ConcentratorConfig, who: Issued | None) -> Concentrator:
        ca_pem = self.pki.ca.cert_path
        ctx = client_context(ca_pem, who.cert_path, who.key_path) if who else client_context(ca_pem)
        return Concentrator.over_https(self.url(), ctx, config)

    @contextmanager
    def serve(self) -> Iterator[int]:
        """Serve on the port of the last run (a restart at the same address), else a free one."""
        issued = self.pki.issue("mdms", ips=("127.0.0.1",))
        assert issued.key_path is not None
        ca = self.pki.ca
        ctx = server_context(ca.cert_path, ca.crl_path, issued.cert_path, issued.key_path)
        app = create_mdms_app(self.store, RevocationCheck(ca.crl_path, ctx))
        with serving(app, ctx, self.port) as self.port:
            yield self.port


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    settings = settings_for(tmp_path_factory.mktemp("broker") / "var")
    prepare_data_dir(settings)
    init_keys(settings)
    upgrade_schema(settings).dispose()
    CertificateAuthority.create(settings, SystemClock())
    runtime = Runtime.open(settings)
    yield Pki(runtime)
    runtime.close()


@pytest.fixture
def mdms(pki: Pki) -> Mdms:
    return Mdms(MdmsStore(), pki)


def _config(tmp_path: Path, **changes: object) -> ConcentratorConfig:
    return fast_config(tmp_path / "spool", **changes)


def test_C1_2_R1_1_frames_reach_the_mdms_over_mutual_tls_byte_for_byte(
    tmp_path: Path, mdms: Mdms, pki: Pki
) -> None:
    frames = [f for meter in range(1, 4) for f in frames_of(meter, 100)]
    identity = pki.issue()
    with mdms.serve(), mdms.concentrator(_config(tmp_path), identity) as concentrator:
        for frame in frames:
            concentrator.submit(frame)
        assert concentrator.drain(10)
        status = concentrator.status()
    assert mdms.store.frames == frames
    assert mdms.store.peers == {identity.name}
    assert status.answers == {"accepted": 300}
    assert (status.spooled_batches, status.retries, status.alarm) == (0, 0, None)


def test_outage_spools_bounded_then_everything_arrives_once(
    tmp_path: Path, mdms: Mdms, pki: Pki
) -> None:
    frames = {meter: frames_of(meter, 150) for meter in range(1, 5)}
    config = _config(tmp_path, max_frames=20, max_batch_bytes=8_192, max_spool_bytes=32_768)
    with mdms.serve():  # the MDMS is up: the first frames are delivered
        concentrator = mdms.concentrator(config, pki.issue()).start()
        for frame in frames[1][:40]:
            concentrator.submit(frame)
        assert concentrator.drain(10)
    try:  # the MDMS is down: the meters keep sending
        meters = [Meter(concentrator, fs[40:] if n == 1 else fs, 30) for n, fs in frames.items()]
        for meter in meters:
            meter.start()
        peak = _watch_until_full(concentrator)
        mdms.store.lose_answers = 2  # answers lost after storing: those batches come again
        with mdms.serve():  # the MDMS is back on the same address
            for meter in meters:
                meter.join(30)
            assert concentrator.drain(30)
            status = concentrator.status()
    finally:
        concentrator.stop()
    assert peak <= 32_768
    assert all(meter.delivered_all for meter in meters)
    assert sum(meter.refusals for meter in meters) > 0
    submitted = [f for fs in frames.values() for f in fs]
    assert sorted(mdms.store.frames) == sorted(submitted)  # nothing lost, nothing stored twice
    assert max(mdms.store.receipts.values()) >= 2  # yet some batches were sent more than once
    assert status.answers["duplicate"] > 0
    assert status.alarm is None
    assert not list((tmp_path / "spool").glob("*.dlmb"))


def _watch_until_full(concentrator: Concentrator) -> int:
    """Poll the status until the spool-full alarm is up; returns the largest spool seen."""
    peak, deadline = 0, time.monotonic() + 20
    while time.monotonic() < deadline:
        status = concentrator.status()
        peak = max(peak, status.spooled_bytes + status.dead_letter_bytes)
        if status.alarm and status.alarm.startswith("spool full"):
            assert "MDMS unreachable since" in status.alarm
            return peak
        time.sleep(0.005)
    raise AssertionError("the spool never filled up during the outage")


def test_C1_2_concentrator_without_a_certificate_cannot_deliver(tmp_path: Path, mdms: Mdms) -> None:
    _assert_cannot_deliver(tmp_path, mdms, None)


def test_C1_2_revoked_concentrator_certificate_cannot_deliver(
    tmp_path: Path, mdms: Mdms, pki: Pki
) -> None:
    revoked = pki.issue()
    pki.revoke(revoked)
    _assert_cannot_deliver(tmp_path, mdms, revoked)


def _assert_cannot_deliver(tmp_path: Path, mdms: Mdms, who: Issued | None) -> None:
    with mdms.serve(), mdms.concentrator(_config(tmp_path), who) as concentrator:
        concentrator.submit(frames_of(1, 1)[0])
        assert wait_until(lambda: concentrator.status().retries >= 2, timeout_s=10)
        status = concentrator.status()
    assert mdms.store.frames == []
    assert (status.batches_delivered, status.spooled_batches) == (0, 1)
    assert status.last_error is not None


def test_C1_2_certificate_revoked_while_delivering_raises_an_alarm_and_keeps_the_spool(
    tmp_path: Path, mdms: Mdms, pki: Pki
) -> None:
    identity = pki.issue()
    with mdms.serve(), mdms.concentrator(_config(tmp_path), identity) as concentrator:
        concentrator.submit(frames_of(1, 1)[0])
        assert concentrator.drain(10)
        pki.revoke(identity)
        concentrator.submit(frames_of(2, 1)[0])
        concentrator.flush()
        assert wait_until(lambda: concentrator.status().alarm is not None, timeout_s=10)
        status = concentrator.status()
    assert mdms.store.frames == frames_of(1, 1)
    assert status.spooled_batches == 1
    assert status.alarm is not None
    assert "refuses this concentrator" in status.alarm


def test_C1_8_busy_mdms_is_retried_after_its_retry_after(
    tmp_path: Path, mdms: Mdms, pki: Pki
) -> None:
    mdms.store.busy = 3
    with mdms.serve(), mdms.concentrator(_config(tmp_path), pki.issue()) as concentrator:
        concentrator.submit(frames_of(1, 1)[0])
        assert concentrator.drain(10)
        status = concentrator.status()
    assert mdms.store.frames == frames_of(1, 1)
    assert (status.retries, status.batches_sent) == (3, 4)
