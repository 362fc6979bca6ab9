"""``POST /mdms/v1/frames`` and ``GET /mdms/v1/metrics`` over real mutual TLS on loopback
(C1.1, C1.2, C1.5, C1.7, C1.8, T2, T4): certificates from the broker's CA, a Runtime on SQLite
in tmp_path whose clock is pinned to now, meters provisioned through the registry, frames sealed
by the MDMS test factory. Every frame of a batch is answered; refusals carry the one error
shape; one concentrator flooding does not starve another."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import text

from broker.api.mdms import SUMMARY_EVERY_S, ThrottleLog
from broker.api.server import build, running
from broker.api.tls import client_context
from broker.ca.authority import CertificateAuthority, Issued
from broker.kit.clock import FixedClock, SystemClock
from broker.runtime.core import Runtime, init_keys, prepare_data_dir, upgrade_schema
from connectors.dlms.batch import MEDIA_TYPE, encode_batch
from connectors.mdms.keyfile import MeterKeyRow
from connectors.mdms.limits import Limits, LimitSettings
from connectors.mdms.readings import read_days
from tests.broker.fakes import settings_for
from tests.connectors.mdms.factory import TestMeter

pytestmark = pytest.mark.timeout(60)

# With TLS 1.3 the server checks the client certificate after the client's side of the handshake
# is done, so a refusal shows up as a failed connect or as a connection closed without an answer.
REFUSED = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)
DAY_S = 86_400
UNPROTECTED = b"\x0f\x00"  # not general-glo-ciphering: answered rejected/unprotected, cheaply
_serials = itertools.count(1)


class FakeMonotonic:
    """A monotonic clock for the limits: it moves only when the test says so."""

    def __init__(self) -> None:
        self.at = 1_000.0

    def __call__(self) -> float:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += seconds


@dataclass
class Mdms:
    """The broker's runtime (SQLite in tmp_path, clock pinned to now) and what tests need."""

    rt: Runtime
    first_day: int
    """Three days before the clock's day (days since the epoch): frames of this day and the next
    two are inside the MDMS's clock window."""
    url: str = ""
    limits: Limits = field(default_factory=lambda: Limits(LimitSettings()))

    def issue(self, name: str, role: str = "concentrator") -> Issued:
        ca = CertificateAuthority(self.rt.settings, self.rt.clock)
        with self.rt.db.transaction() as session:
            return ca.issue(session, self.rt.audit, role=role, name=name, actor="test")

    def meter(self) -> TestMeter:
        """A new meter, provisioned."""
        meter = TestMeter(next(_serials))
        row = MeterKeyRow(
            2, meter.meter_id, meter.ek, meter.ak, meter.mk, meter.customer, "F-1", "AB12"
        )
        with self.rt.db.transaction() as session:
            self.rt.meters.provision(session, [row], "test", "test")
        return meter

    def ends(self, day: int, first: int = 0, count: int = 96) -> np.ndarray:
        start = (self.first_day + day) * DAY_S
        return start + 900 * np.arange(first + 1, first + count + 1, dtype=np.int64)

    def push(self, meter: TestMeter, day: int, first: int = 0, count: int = 96) -> bytes:
        ends = self.ends(day, first, count)
        return meter.frame(ends, *meter.readings(ends))

    def client(self, who: Issued | None) -> httpx.Client:
        ca_pem = self.rt.settings.ca_dir / "ca.pem"
        ctx = client_context(ca_pem, who.cert_path, who.key_path) if who else client_context(ca_pem)
        return httpx.Client(base_url=self.url, verify=ctx, timeout=10)

    def audit(self, event_type: str) -> list[dict[str, Any]]:
        with self.rt.db.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT body FROM audit_entry WHERE event_type = :t ORDER BY seq"),
                {"t": event_type},
            )
            return [json.loads(r[0]) for r in rows]

    @contextmanager
    def serve(self, limits: Limits | None = None) -> Iterator[Mdms]:
        self.limits = limits or Limits(LimitSettings())
        with running(build(self.rt, "test", limits=self.limits)) as port:
            self.url = f"https://127.0.0.1:{port}"
            yield self


@pytest.fixture
def mdms(tmp_path: Path) -> Iterator[Mdms]:
    settings = settings_for(tmp_path / "var")
    prepare_data_dir(settings)
    init_keys(settings)
    upgrade_schema(settings).dispose()
    CertificateAuthority.create(settings, SystemClock())
    now = datetime.now(UTC)
    rt = Runtime.open(settings, FixedClock(now))
    yield Mdms(rt, int(now.timestamp()) // DAY_S - 3)
    rt.close()


def post(
    client: httpx.Client,
    frames: Sequence[bytes] | None = None,
    *,
    body: bytes | Iterator[bytes] | None = None,
    batch_id: str | None = None,
    content_type: str = MEDIA_TYPE,
) -> httpx.Response:
    headers = {"content-type": content_type}
    if batch_id is not None:
        headers["x-batch-id"] = batch_id
    content = encode_batch(frames) if frames is not None else body
    return client.post("/mdms/v1/frames", content=content, headers=headers)


def error_of(response: httpx.Response, status: int, error: str) -> str:
    """The detail of an answer in the one error shape, after checking status and class."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == error
    detail: str = body["detail"]
    return detail


def statuses(answer: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(f["status"], f["reason"]) for f in answer["frames"]]


def wait_until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Poll ``condition``; ``timeout_s`` bounds a hang, not speed (a loaded machine is slow)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


# ---- a concentrator's batch, frame by frame --------------------------------------------------


def test_C1_5_T2_batch_is_answered_frame_by_frame_and_a_resend_is_duplicate(mdms: Mdms) -> None:
    meter, stranger = mdms.meter(), TestMeter(next(_serials))  # the stranger is not provisioned
    dc = mdms.issue("dc-1")
    ends = mdms.ends(0)
    registers, values = meter.readings(ends)
    good = meter.frame(ends, registers, values)
    forged = meter.frame(*_one(mdms, meter, 1), keys=(bytes(16), bytes(16)))
    future = mdms.push(meter, 4)  # the day after the clock's
    batch = [good, mdms.push(stranger, 0), forged, UNPROTECTED, future, mdms.push(meter, 1)]
    expected = [
        ("accepted", None),
        ("rejected", "unknown_meter"),
        ("rejected", "bad_tag"),
        ("rejected", "unprotected"),
        ("rejected", "clock_future"),
        ("accepted", None),
    ]
    with mdms.serve(), mdms.client(dc) as client:
        first = post(client, batch, batch_id="dc-1.b1")
        again = post(client, batch, batch_id="dc-1.b1")
    assert first.status_code == 200, first.text
    answer = first.json()
    assert statuses(answer) == expected
    assert [f["i"] for f in answer["frames"]] == list(range(6))
    assert (answer["batch_id"], answer["received"], answer["accepted"]) == ("dc-1.b1", 6, 2)
    assert answer["reasons"] == {
        "unknown_meter": 1,
        "bad_tag": 1,
        "unprotected": 1,
        "clock_future": 1,
    }
    assert answer["readings_stored"] == 192
    resent = again.json()
    assert statuses(resent) == [("duplicate", None), *expected[1:5], ("duplicate", None)]
    assert resent["readings_stored"] == 0
    with mdms.rt.db.transaction() as session:
        days = read_days(session, mdms.rt.data_keys, meter.meter_id, mdms.first_day, mdms.first_day)
    assert len(days) == 1
    assert (days[0].readings.end_s == ends).all()
    assert (days[0].readings.value == values).all()
    assert (days[0].readings.register == registers).all()


def _one(mdms: Mdms, meter: TestMeter, day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ends = mdms.ends(day)
    return ends, *meter.readings(ends)


def test_batch_without_x_batch_id_is_named_by_its_digest(mdms: Mdms) -> None:
    dc = mdms.issue("dc-1")
    with mdms.serve(), mdms.client(dc) as client:
        one = post(client, [UNPROTECTED]).json()
        two = post(client, [UNPROTECTED]).json()
        other = post(client, [UNPROTECTED, UNPROTECTED]).json()
    assert len(one["batch_id"]) == 32 and one["batch_id"] == two["batch_id"]
    assert other["batch_id"] != one["batch_id"]


# ---- refusals, in the one error shape --------------------------------------------------------


@pytest.mark.parametrize("role", ["third-party", "ems", "regulator", "mdms"])
def test_C1_1_only_a_concentrator_may_post_frames(mdms: Mdms, role: str) -> None:
    meter = mdms.meter()
    who = mdms.issue(f"not-a-dc-{role}", role)
    with mdms.serve(), mdms.client(who) as client:
        response = post(client, [mdms.push(meter, 0)])
    assert "is not a data concentrator" in error_of(response, 403, "Forbidden")
    with mdms.rt.db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM reading_day")).scalar_one() == 0


def test_C1_2_client_without_a_certificate_is_refused_at_tls(mdms: Mdms) -> None:
    with mdms.serve(), mdms.client(None) as client, pytest.raises(REFUSED):
        post(client, [UNPROTECTED])


def test_C1_2_certificate_of_another_ca_is_refused_at_tls(mdms: Mdms, tmp_path: Path) -> None:
    other = CertificateAuthority.create(settings_for(tmp_path / "other"), SystemClock())
    with mdms.rt.db.transaction() as session:
        stranger = other.issue(session, mdms.rt.audit, role="concentrator", name="dc-x", actor="t")
    with mdms.serve(), mdms.client(stranger) as client, pytest.raises(REFUSED):
        post(client, [UNPROTECTED])


@pytest.mark.parametrize("content_type", ["application/octet-stream", "application/json", ""])
def test_wrong_content_type_is_415(mdms: Mdms, content_type: str) -> None:
    dc = mdms.issue("dc-1")
    with mdms.serve(), mdms.client(dc) as client:
        response = post(client, [UNPROTECTED], content_type=content_type)
    assert MEDIA_TYPE in error_of(response, 415, "UnsupportedMediaType")


def test_content_type_parameters_are_accepted(mdms: Mdms) -> None:
    dc = mdms.issue("dc-1")
    with mdms.serve(), mdms.client(dc) as client:
        response = post(client, [UNPROTECTED], content_type=f"{MEDIA_TYPE}; charset=binary")
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "shorter than the batch header"),
        (b"JSON\x01\x00\x00\x00\x01", "does not start with b'DLMB'"),
        (b"DLMB\x02\x00\x00\x00\x01", "version 2 is not supported"),
        (b"DLMB\x01\x00\x00\x00\x00", "announces 0 frames"),
        (b"DLMB\x01\x00\x00\x00\x02\x00\x00\x00\x02\x0f\x00", "ends before the length of frame 1"),
        (b"DLMB\x01\x00\x00\x00\x01\x00\x00\x00\x09\x0f\x00", "frame 0 announces 9 bytes"),
        (b"DLMB\x01\x00\x00\x00\x01\x00\x00\x00\x02\x0f\x00xx", "2 bytes after the last"),
    ],
)
def test_malformed_batch_is_400_saying_where_it_breaks(mdms: Mdms, body: bytes, says: str) -> None:
    dc = mdms.issue("dc-1")
    with mdms.serve(), mdms.client(dc) as client:
        response = post(client, body=body)
    assert says in error_of(response, 400, "MalformedBatch")


@pytest.mark.parametrize("batch_id", ["has space", "x" * 65, "semi;colon", "dc/1", ""])
def test_bad_x_batch_id_is_400(mdms: Mdms, batch_id: str) -> None:
    dc = mdms.issue("dc-1")
    with mdms.serve(), mdms.client(dc) as client:
        response = post(client, [UNPROTECTED], batch_id=batch_id)
    assert "X-Batch-Id" in error_of(response, 400, "MalformedBatch")


LIMIT = 64 * 1024


def test_T4_body_over_the_limit_is_413_from_its_content_length(mdms: Mdms) -> None:
    dc = mdms.issue("dc-1")
    frames = [bytes(60_000), bytes(10_000)]  # encodes to over 64 KiB
    with mdms.serve(Limits(LimitSettings(max_body_bytes=LIMIT))), mdms.client(dc) as client:
        response = post(client, frames)
        assert post(client, [UNPROTECTED]).status_code == 200  # the next request is served
    detail = error_of(response, 413, "PayloadTooLarge")
    assert detail == f"body of 70017 bytes exceeds the limit of {LIMIT} bytes"


def test_T4_chunked_body_over_the_limit_is_413_without_a_content_length(mdms: Mdms) -> None:
    dc = mdms.issue("dc-1")
    seen: list[httpx.Request] = []

    def chunks() -> Iterator[bytes]:
        yield encode_batch([bytes(1_000)] * 100)[:50_000]
        yield bytes(50_000)

    with mdms.serve(Limits(LimitSettings(max_body_bytes=LIMIT))), mdms.client(dc) as client:
        client.event_hooks["request"] = [seen.append]
        response = post(client, body=chunks())
    assert "content-length" not in seen[0].headers
    assert seen[0].headers["transfer-encoding"] == "chunked"
    assert f"exceeds the limit of {LIMIT} bytes" in error_of(response, 413, "PayloadTooLarge")


def test_body_at_the_limit_is_taken(mdms: Mdms) -> None:
    dc = mdms.issue("dc-1")
    body = encode_batch([bytes(LIMIT - 13)])
    assert len(body) == LIMIT
    with mdms.serve(Limits(LimitSettings(max_body_bytes=LIMIT))), mdms.client(dc) as client:
        response = post(client, body=body)
    assert response.status_code == 200 and statuses(response.json()) == [("rejected", "malformed")]


# ---- T4 / C1.8: rate, queue, fairness --------------------------------------------------------


def _rate_limits(clock: FakeMonotonic, **extra: float) -> Limits:
    settings = LimitSettings(rate_frames_per_s=2, burst_frames=10, **extra)  # type: ignore[arg-type]
    return Limits(settings, clock)


def test_T4_C1_8_over_the_token_bucket_is_429_with_retry_after(mdms: Mdms) -> None:
    clock = FakeMonotonic()
    dc, other = mdms.issue("dc-1"), mdms.issue("dc-2")
    with mdms.serve(_rate_limits(clock)), mdms.client(dc) as client, mdms.client(other) as c2:
        assert post(client, [UNPROTECTED] * 10).status_code == 200  # the whole burst
        refused = post(client, [UNPROTECTED] * 4)
        assert post(c2, [UNPROTECTED] * 10).status_code == 200  # the other's bucket is its own
        clock.advance(1.9)
        early = post(client, [UNPROTECTED] * 4)
        clock.advance(0.1)
        assert post(client, [UNPROTECTED] * 4).status_code == 200
    assert "dc-1 is over its rate" in error_of(refused, 429, "Throttled")
    assert refused.headers["retry-after"] == "2"  # 4 frames at 2 a second
    assert early.status_code == 429 and early.headers["retry-after"] == "1"


def test_C1_8_batch_with_more_frames_than_the_burst_is_413_not_a_free_pass(mdms: Mdms) -> None:
    """Such a batch could never fit the bucket: it was let through without spending a token
    (so large batches bypassed the rate); now it is refused as too large, never as 'wait'."""
    clock = FakeMonotonic()
    dc = mdms.issue("dc-1")
    with mdms.serve(_rate_limits(clock)), mdms.client(dc) as client:
        big = post(client, [UNPROTECTED] * 11)
        clock.advance(3_600)
        bigger = post(client, [UNPROTECTED] * 500)
        assert post(client, [UNPROTECTED] * 10).status_code == 200  # the bucket is still full
    assert "batch of 11 frames is more than the 10" in error_of(big, 413, "PayloadTooLarge")
    assert bigger.status_code == 413
    with mdms.rt.db.engine.connect() as conn:
        assert conn.execute(text("SELECT sum(frames) FROM ingest_tally")).scalar_one() == 10


@contextmanager
def _workers_held(limits: Limits) -> Iterator[None]:
    """Admitted batches wait for the ingest worker while the test holds it."""
    assert limits.workers.acquire(timeout=5)
    try:
        yield
    finally:
        limits.workers.release()


class Background:
    """Requests sent from threads, each with its own client; answers collected."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.answers: list[int] = []
        self._lock = threading.Lock()

    def post(self, mdms: Mdms, who: Issued, frames: list[bytes]) -> None:
        def run() -> None:
            with mdms.client(who) as client:
                status = post(client, frames).status_code
            with self._lock:
                self.answers.append(status)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> list[int]:
        for thread in self.threads:
            thread.join(timeout=15)
            assert not thread.is_alive(), "a request did not finish"
        return self.answers


def test_T4_C1_8_full_queue_is_503_with_retry_after(mdms: Mdms) -> None:
    limits = Limits(LimitSettings(queue_batches=2, share=1.0), FakeMonotonic())
    dc_a, dc_b = mdms.issue("dc-a"), mdms.issue("dc-b")
    background = Background()
    with mdms.serve(limits), mdms.client(dc_b) as client:
        with _workers_held(limits):
            background.post(mdms, dc_a, [UNPROTECTED])
            background.post(mdms, dc_a, [UNPROTECTED])
            wait_until(lambda: limits.queued() == {"dc-a": 2})
            refused = post(client, [UNPROTECTED])
        assert background.join() == [200, 200]
        assert post(client, [UNPROTECTED]).status_code == 200  # places came back
    assert "queue is full" in error_of(refused, 503, "Throttled")
    assert refused.headers["retry-after"] == "1"
    assert limits.queued() == {}


def test_T4_C1_8_one_concentrator_holds_only_its_share_of_the_queue(mdms: Mdms) -> None:
    """The flooder's batches wait for the worker; the quiet one still finds a place, and a
    flooder's batch refused 503 is not charged against its rate."""
    settings = LimitSettings(rate_frames_per_s=1, burst_frames=15, queue_batches=4, share=0.5)
    limits = Limits(settings, FakeMonotonic())  # no refill during the test
    flood, quiet = mdms.issue("dc-flood"), mdms.issue("dc-quiet")
    background = Background()
    with mdms.serve(limits), mdms.client(flood) as flooder:
        with _workers_held(limits):
            for _ in range(2):
                background.post(mdms, flood, [UNPROTECTED] * 5)
            wait_until(lambda: limits.queued() == {"dc-flood": 2})
            third = post(flooder, [UNPROTECTED] * 5)
            background.post(mdms, quiet, [UNPROTECTED] * 5)
            wait_until(lambda: limits.queued() == {"dc-flood": 2, "dc-quiet": 1})
        assert background.join() == [200, 200, 200]
        assert post(flooder, [UNPROTECTED] * 5).status_code == 200  # the refused 5 were refunded
    assert "queue is full" in error_of(third, 503, "Throttled")


@dataclass
class Flood:
    answers: Counter[int] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, mdms: Mdms, who: Issued, frames: list[bytes]) -> None:
        with mdms.client(who) as client:
            while not self.stop.is_set():
                response = post(client, frames)
                if response.status_code == 200:
                    assert response.json()["received"] == len(frames)
                with self.lock:
                    self.answers[response.status_code] += 1


def test_T4_C1_8_a_flooding_concentrator_does_not_starve_a_modest_one(mdms: Mdms) -> None:
    rate, burst, batch = 40.0, 40.0, 5
    settings = LimitSettings(
        rate_frames_per_s=rate, burst_frames=burst, queue_batches=4, share=0.5, workers=1
    )
    modest_meter, flood_meter = mdms.meter(), mdms.meter()
    modest, flooder = mdms.issue("dc-modest"), mdms.issue("dc-flood")
    forged = [
        flood_meter.frame(*_one(mdms, flood_meter, 0), keys=(bytes(16), bytes(16)))
        for _ in range(batch)
    ]
    hourly = [mdms.push(modest_meter, 1, first=4 * h, count=4) for h in range(12)]
    flood = Flood()
    modest_answers: list[httpx.Response] = []
    with mdms.serve(Limits(settings)):
        threads = [
            threading.Thread(target=flood.run, args=(mdms, flooder, forged), daemon=True)
            for _ in range(8)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        try:
            with mdms.client(modest) as client:
                for push in hourly:  # 12 frames over ~2.4 s: far under its 40 a second
                    time.sleep(0.2)
                    modest_answers.append(post(client, [push]))
        finally:
            flood.stop.set()
            for thread in threads:
                thread.join(timeout=15)
        elapsed = time.monotonic() - started
        assert not any(t.is_alive() for t in threads)
        with mdms.client(mdms.issue("regulator", "regulator")) as client:
            metrics = client.get("/mdms/v1/metrics").json()
    assert [r.status_code for r in modest_answers] == [200] * 12
    assert [statuses(r.json()) for r in modest_answers] == [[("accepted", None)]] * 12
    refused = flood.answers[429] + flood.answers[503]
    assert flood.answers[429] > 0 and refused > 2 * flood.answers[200]
    assert set(flood.answers) <= {200, 429, 503}
    # the bucket bounds what the flooder got in: its burst plus its rate over the test
    assert flood.answers[200] * batch <= burst + rate * elapsed + batch
    assert metrics["throttled_frames"] == {"dc-flood": refused * batch}
    assert metrics["frames_by_outcome"]["bad_tag"] == flood.answers[200] * batch
    assert metrics["frames_by_outcome"]["accepted"] == 12
    summaries = mdms.audit("mdms.ingest_throttled")
    assert len(summaries) == 1  # under a minute of flooding: one summary, not one per refusal
    assert summaries[0]["actor"] == "cert:dc-flood"
    assert summaries[0]["details"]["concentrator"] == "dc-flood"


# ---- the throttling summary in the audit log -------------------------------------------------


def test_T4_throttling_is_summarised_at_most_once_a_minute_per_concentrator(mdms: Mdms) -> None:
    clock = FakeMonotonic()
    log = ThrottleLog(mdms.rt, clock)
    log.count("dc-1", 5, "rate")
    clock.advance(10)
    log.count("dc-1", 5, "rate")
    log.count("dc-1", 2, "queue")
    log.count("dc-2", 7, "rate")  # another concentrator has its own minute
    clock.advance(SUMMARY_EVERY_S - 10.5)
    log.count("dc-1", 1, "rate")
    assert [e["details"] for e in mdms.audit("mdms.ingest_throttled")] == [
        {"concentrator": "dc-1", "frames_refused": {"rate": 5}},
        {"concentrator": "dc-2", "frames_refused": {"rate": 7}},
    ]
    clock.advance(0.5)  # a minute after dc-1's first summary
    log.count("dc-1", 3, "rate")
    summaries = mdms.audit("mdms.ingest_throttled")
    assert len(summaries) == 3
    assert summaries[2]["details"] == {
        "concentrator": "dc-1",
        "frames_refused": {"rate": 9, "queue": 2},  # everything since the last summary
    }
    assert log.totals() == {"dc-1": 16, "dc-2": 7}
    log.close()  # its timers run on real time; this test's clock is a fake one


def test_T4_refusals_held_after_a_summary_are_written_when_the_minute_is_up(mdms: Mdms) -> None:
    """A flood that stops still reaches the audit log in full: a timer writes what was held."""
    log = ThrottleLog(mdms.rt, every_s=0.3)
    log.count("dc-1", 5, "rate")
    log.count("dc-1", 2, "queue")  # held: inside the window of the first summary
    assert len(mdms.audit("mdms.ingest_throttled")) == 1
    wait_until(lambda: len(mdms.audit("mdms.ingest_throttled")) >= 2)
    summaries = mdms.audit("mdms.ingest_throttled")
    assert [e["details"]["frames_refused"] for e in summaries] == [{"rate": 5}, {"queue": 2}]


# ---- metrics ---------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["regulator", "mdms", "broker"])
def test_metrics_count_frames_by_outcome_and_throttling(mdms: Mdms, role: str) -> None:
    clock = FakeMonotonic()
    meter = mdms.meter()
    dc, reader = mdms.issue("dc-1"), mdms.issue(f"reader-{role}", role)
    batch = [mdms.push(meter, 0), mdms.push(TestMeter(next(_serials)), 0), UNPROTECTED]
    with mdms.serve(_rate_limits(clock)), mdms.client(dc) as client:
        assert post(client, batch, batch_id="m1").status_code == 200
        assert post(client, batch, batch_id="m1").status_code == 200
        assert post(client, [UNPROTECTED] * 5).status_code == 429  # 6 of 10 spent
        with mdms.client(reader) as reading:
            response = reading.get("/mdms/v1/metrics")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "frames_by_outcome": {"accepted": 1, "duplicate": 1, "unknown_meter": 2, "unprotected": 2},
        "throttled_frames": {"dc-1": 5},
        "queued_batches": {},
    }


@pytest.mark.parametrize("role", ["concentrator", "third-party", "ems"])
def test_C1_1_metrics_are_refused_to_other_roles(mdms: Mdms, role: str) -> None:
    who = mdms.issue(f"who-{role}", role)
    with mdms.serve(), mdms.client(who) as client:
        response = client.get("/mdms/v1/metrics")
    assert "may not read MDMS metrics" in error_of(response, 403, "Forbidden")


# ---- OpenAPI ---------------------------------------------------------------------------------


def test_openapi_lists_the_mdms_routes_and_their_error_statuses(mdms: Mdms) -> None:
    with mdms.serve(), mdms.client(mdms.issue("dc-1")) as client:
        spec = client.get("/openapi.json").json()
    error_ref = "#/components/schemas/ErrorBody"
    frames = spec["paths"]["/mdms/v1/frames"]["post"]
    assert frames["description"] == "Ingest a batch of ciphered DLMS frames (concentrators only)."
    for status in ("400", "401", "403", "413", "415", "429", "503"):
        schema = frames["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": error_ref}, status
    for status in ("429", "503"):
        assert "Retry-After" in frames["responses"][status]["headers"]
    assert frames["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/BatchAnswer"
    }
    metrics = spec["paths"]["/mdms/v1/metrics"]["get"]
    for status in ("401", "403"):
        schema = metrics["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": error_ref}
    assert set(spec["components"]["schemas"]["ErrorBody"]["properties"]) == {"error", "detail"}
