"""Supervised worker threads: a body that raises is logged at CRITICAL, reported and started
again with a growing backoff; one that returns, or is stopped, ends."""

from __future__ import annotations

import logging
import threading

import pytest

from broker.kit.supervise import Death, Periodic, Supervised

pytestmark = pytest.mark.timeout(30)


def test_a_body_that_raises_is_reported_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []
    done = threading.Event()
    deaths: list[Death] = []

    def body() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise ValueError(f"bug {len(runs)}")
        done.set()

    worker = Supervised("w", body, on_death=deaths.append, base_s=0.001, cap_s=0.004).start()
    assert done.wait(20)
    worker.join(20)
    assert not worker.is_alive()  # the third run returned: the worker ended normally
    assert [(d.worker, d.deaths, d.error) for d in deaths] == [
        ("w", 1, "ValueError: bug 1"),
        ("w", 2, "ValueError: bug 2"),
    ]
    assert [d.restart_in_s for d in deaths] == [0.001, 0.002]
    assert worker.deaths == 2
    assert worker.last_error == "ValueError: bug 2"
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 2
    assert critical[0].exc_info is not None


def test_backoff_is_capped() -> None:
    deaths: list[Death] = []
    enough = threading.Event()

    def record(death: Death) -> None:
        deaths.append(death)
        if len(deaths) >= 6:
            enough.set()

    def body() -> None:
        raise RuntimeError("always")

    worker = Supervised("w", body, on_death=record, base_s=0.001, cap_s=0.004).start()
    assert enough.wait(20)
    worker.stop(20)
    assert not worker.is_alive()
    assert max(d.restart_in_s for d in deaths) == 0.004


def test_a_failing_death_hook_does_not_end_the_supervision() -> None:
    runs: list[int] = []
    done = threading.Event()

    def body() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("first")
        done.set()

    def hook(_: Death) -> None:
        raise OSError("alarm sink broken")

    worker = Supervised("w", body, on_death=hook, base_s=0.001, cap_s=0.001).start()
    assert done.wait(20)
    worker.join(20)


def test_stop_ends_a_worker_waiting_to_restart() -> None:
    died = threading.Event()

    def body() -> None:
        raise RuntimeError("x")

    worker = Supervised("w", body, on_death=lambda _: died.set(), base_s=600, cap_s=600).start()
    assert died.wait(20)
    worker.stop(20)
    assert not worker.is_alive()
    assert worker.deaths == 1


def test_bad_backoff_is_refused() -> None:
    with pytest.raises(ValueError, match="base_s"):
        Supervised("w", lambda: None, base_s=2, cap_s=1)


def test_periodic_logs_expected_failures_and_survives_unexpected_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rounds: list[int] = []
    enough = threading.Event()

    def work() -> None:
        rounds.append(1)
        if len(rounds) == 1:
            raise LookupError("the database went away")  # expected: next round as usual
        if len(rounds) == 2:
            raise RuntimeError("a bug")  # unexpected: a death, and a restart
        enough.set()

    periodic = Periodic("p", work, 0.001, expected=(LookupError,)).start()
    assert enough.wait(20)
    periodic.stop(20)
    assert periodic.deaths == 1
    levels = {r.getMessage().split(":")[0]: r.levelno for r in caplog.records}
    assert levels["p round failed"] == logging.WARNING
    assert any(r.levelno == logging.CRITICAL and "a bug" in r.getMessage() for r in caplog.records)
