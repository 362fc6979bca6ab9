"""The push worker of ``broker serve`` never dies silently: a round that raises anything (not
only a ``BrokerError``) is logged at CRITICAL and the worker goes on with the next round (C3.2)."""

from __future__ import annotations

import logging
import threading
from typing import cast

import pytest

from broker.delivery.outbox import Poster
from broker.delivery.service import PushLoop, PushService, RoundReport

pytestmark = pytest.mark.timeout(30)


class _FlakyService:
    def __init__(self) -> None:
        self.rounds = 0
        self.recovered = threading.Event()

    def round(self, post: Poster) -> RoundReport:
        self.rounds += 1
        if self.rounds == 1:
            raise RuntimeError("injected bug in a round")
        self.recovered.set()
        return RoundReport()


def test_C3_2_a_round_that_raises_is_an_alarm_and_the_worker_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = _FlakyService()
    loop = PushLoop(cast(PushService, service), cast(Poster, None), poll_s=0.01).start()
    try:
        assert service.recovered.wait(20)
    finally:
        loop.stop()
    assert loop.deaths == 1
    logged = [r for r in caplog.records if "injected bug" in r.getMessage()]
    assert logged
    assert logged[0].levelno == logging.CRITICAL
