"""The HTTPS adapter's reading of the MDMS's answers: each status maps to one outcome."""

from __future__ import annotations

import httpx
import pytest

from connectors.concentrator import BadBatch, Busy, Delivered, Failed, Refused
from connectors.concentrator.https import MAX_RETRY_AFTER_S, classify, retry_after

REPORT = {
    "batch_id": "dc.1.1",
    "received": 2,
    "accepted": 1,
    "duplicate": 0,
    "rejected": 1,
    "reasons": {"replay": 1},
    "frames": [
        {"i": 0, "status": "accepted", "reason": None, "detail": None, "readings": 96},
        {"i": 1, "status": "rejected", "reason": "replay", "detail": "ic 3 <= 7", "readings": 0},
    ],
}


def test_200_with_a_report_is_delivered() -> None:
    outcome = classify(httpx.Response(200, json=REPORT))
    assert isinstance(outcome, Delivered)
    assert outcome.report.covers("dc.1.1", 2)
    assert not outcome.report.covers("dc.1.1", 3)
    assert not outcome.report.covers("dc.1.2", 2)


def test_200_with_an_unreadable_report_is_a_failure_to_retry() -> None:
    outcome = classify(httpx.Response(200, json={"batch_id": "x"}))
    assert isinstance(outcome, Failed)
    assert "unreadable report" in outcome.detail


@pytest.mark.parametrize(("status", "header", "wait"), [(503, "2", 2.0), (429, "0.5", 0.5)])
def test_busy_answers_carry_their_retry_after(status: int, header: str, wait: float) -> None:
    assert classify(httpx.Response(status, headers={"Retry-After": header})) == Busy(status, wait)


def test_busy_without_retry_after_leaves_the_delay_to_the_backoff() -> None:
    assert classify(httpx.Response(503)) == Busy(503, None)


@pytest.mark.parametrize("status", [400, 413])
def test_malformed_or_oversized_batch_is_a_bad_batch(status: int) -> None:
    answer = httpx.Response(status, json={"error": "BadBatch", "detail": "frame 3 is empty"})
    assert classify(answer) == BadBatch(status, "frame 3 is empty")


@pytest.mark.parametrize("status", [401, 403, 404, 415])
def test_refusals_and_unexpected_answers_are_refused(status: int) -> None:
    assert classify(httpx.Response(status, text="no")) == Refused(status, "no")


@pytest.mark.parametrize("status", [500, 502, 504])
def test_other_server_errors_are_failures_to_retry(status: int) -> None:
    outcome = classify(httpx.Response(status))
    assert isinstance(outcome, Failed)
    assert str(status) in outcome.detail


def test_retry_after_reads_seconds_and_http_dates_and_bounds_them() -> None:
    now = 1_700_000_000.0
    assert retry_after("Tue, 14 Nov 2023 22:13:30 GMT", now=now) == 10.0
    assert retry_after("-5") == 0.0
    assert retry_after("99999999") == MAX_RETRY_AFTER_S
    assert retry_after("soon") is None
    assert retry_after("nan") is None
    assert retry_after(None) is None
