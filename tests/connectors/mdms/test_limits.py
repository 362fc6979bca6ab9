"""The MDMS's denial-of-service limits (C1.8, T4) on an injected clock, no sleeping: token
buckets refill at their rate up to their burst and say exactly how long to wait; the ingest
queue is bounded overall and per concentrator, and a place comes back when a batch leaves."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.mdms.limits import SLACK_S, Limits, LimitSettings, TokenBucket


class FakeClock:
    """Seconds that move only when the test says so."""

    def __init__(self, at: float = 1_000.0) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += seconds


def _bucket(rate: float = 10.0, burst: float = 20.0) -> tuple[TokenBucket, FakeClock]:
    clock = FakeClock()
    return TokenBucket(rate, burst, clock), clock


def _limits(**settings: float) -> tuple[Limits, FakeClock]:
    clock = FakeClock()
    return Limits(LimitSettings(**settings), clock), clock  # type: ignore[arg-type]


# ---- token bucket ----------------------------------------------------------------------------


def test_C1_8_bucket_starts_full_and_grants_its_burst_at_once() -> None:
    bucket, _ = _bucket(rate=10, burst=20)
    assert bucket.take(20) == 0
    assert bucket.take(1) == pytest.approx(0.1)


def test_C1_8_bucket_refills_at_its_rate() -> None:
    bucket, clock = _bucket(rate=10, burst=20)
    bucket.take(20)
    clock.advance(0.5)
    assert bucket.take(5) == 0  # 0.5 s x 10/s
    assert bucket.take(1) == pytest.approx(0.1)


def test_C1_8_refill_stops_at_the_burst() -> None:
    bucket, clock = _bucket(rate=10, burst=20)
    bucket.take(20)
    clock.advance(3_600)  # an hour idle earns 20 tokens, not 36,000
    assert bucket.take(20) == 0
    assert bucket.take(1) == pytest.approx(0.1)


def test_C1_8_wait_is_the_time_the_missing_tokens_take() -> None:
    bucket, clock = _bucket(rate=4, burst=20)
    bucket.take(18)  # 2 left
    assert bucket.take(10) == pytest.approx(2.0)  # 8 missing at 4/s
    clock.advance(1.0)  # 6 now
    assert bucket.take(10) == pytest.approx(1.0)


def test_C1_8_refused_take_spends_nothing() -> None:
    bucket, clock = _bucket(rate=10, burst=20)
    bucket.take(15)  # 5 left
    for _ in range(5):
        assert bucket.take(8) > 0
    clock.advance(0.3)  # 8 now, had the refusals spent anything there would be fewer
    assert bucket.take(8) == 0


def test_C1_8_take_larger_than_the_burst_is_never_granted_free() -> None:
    """A batch above the burst can never fit; it must not slip through unpaid (it did: a full
    bucket answered 0 for it without spending a token, so big batches bypassed the rate)."""
    bucket, clock = _bucket(rate=10, burst=20)
    with pytest.raises(ValueError, match="never fit"):
        bucket.take(21)
    clock.advance(60)
    with pytest.raises(ValueError, match="never fit"):
        bucket.take(1_000)
    assert bucket.take(20) == 0  # nothing was spent by the refusals


def test_negative_take_is_refused_rather_than_minting_tokens() -> None:
    bucket, _ = _bucket(rate=10, burst=20)
    with pytest.raises(ValueError, match="never fit"):
        bucket.take(-100)
    assert bucket.take(20) == 0
    assert bucket.take(1) > 0


def test_given_back_tokens_return_up_to_the_burst() -> None:
    bucket, _ = _bucket(rate=10, burst=20)
    bucket.take(12)
    bucket.give_back(12)
    assert bucket.take(20) == 0
    bucket.give_back(50)  # never above the burst
    assert bucket.take(20) == 0
    assert bucket.take(1) > 0


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (1, 0), (-1, 5)])
def test_bucket_needs_a_positive_rate_and_burst(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(rate, burst, FakeClock())


@given(
    rate=st.floats(0.01, 1e6),
    burst=st.floats(1, 1e6),
    left=st.floats(0, 1),
    wanted=st.floats(0.001, 1),
)
def test_C1_8_waiting_the_returned_time_is_always_enough(
    rate: float, burst: float, left: float, wanted: float
) -> None:
    bucket, clock = _bucket(rate, burst)
    assert bucket.take(burst) == 0
    clock.advance(burst * left / rate)  # a part of the burst back
    n = burst * wanted
    wait = bucket.take(n)
    if wait == 0:  # enough already: it was spent
        assert n <= burst * left + rate * SLACK_S * 1.001  # short of it by under 1 µs
        return
    assert wait == pytest.approx((n - burst * left) / rate, rel=1e-6, abs=1e-9)
    clock.advance(wait)
    assert bucket.take(n) == 0


# ---- limits: per-concentrator buckets --------------------------------------------------------


def test_C1_8_each_concentrator_has_its_own_bucket() -> None:
    limits, _ = _limits(rate_frames_per_s=10, burst_frames=20)
    assert limits.retry_after_rate("dc-flood", 20) == 0
    assert limits.retry_after_rate("dc-flood", 20) == 2
    assert limits.retry_after_rate("dc-quiet", 20) == 0  # untouched by the other's flood


def test_C1_8_retry_after_is_whole_seconds_rounded_up_never_zero() -> None:
    limits, clock = _limits(rate_frames_per_s=10, burst_frames=20)
    limits.retry_after_rate("dc", 20)
    assert limits.retry_after_rate("dc", 1) == 1  # 0.1 s is said as 1 s, never 0
    assert limits.retry_after_rate("dc", 15) == 2  # 1.5 s up to 2
    clock.advance(2)
    assert limits.retry_after_rate("dc", 15) == 0


def test_C1_8_batch_over_the_burst_is_known_before_any_token_is_spent() -> None:
    limits, _ = _limits(rate_frames_per_s=10, burst_frames=20)
    assert limits.fits_burst(20)
    assert not limits.fits_burst(21)
    with pytest.raises(ValueError, match="never fit"):
        limits.retry_after_rate("dc", 21)
    assert limits.retry_after_rate("dc", 20) == 0


def test_C1_8_refund_gives_a_refused_batch_its_tokens_back() -> None:
    limits, _ = _limits(rate_frames_per_s=10, burst_frames=20)
    assert limits.retry_after_rate("dc", 15) == 0
    limits.refund("dc", 15)
    assert limits.retry_after_rate("dc", 20) == 0


# ---- limits: the fair, bounded queue ---------------------------------------------------------


def test_T4_queue_holds_at_most_its_capacity() -> None:
    limits, _ = _limits(queue_batches=4, share=0.5)
    admitted = [limits.enter(client) for client in ("a", "b", "a", "b", "c", "c")]
    assert admitted == [True, True, True, True, False, False]
    assert limits.queued() == {"a": 2, "b": 2}


def test_T4_one_concentrator_holds_at_most_its_share_of_the_queue() -> None:
    limits, _ = _limits(queue_batches=6, share=0.5)
    assert [limits.enter("flood") for _ in range(5)] == [True, True, True, False, False]
    assert limits.enter("quiet")  # the rest of the queue stays open to the others
    assert limits.queued() == {"flood": 3, "quiet": 1}


def test_T4_share_is_at_least_one_batch() -> None:
    limits, _ = _limits(queue_batches=1, share=0.1)
    assert limits.enter("only")
    assert not limits.enter("only")


def test_T4_leaving_gives_the_place_back() -> None:
    limits, _ = _limits(queue_batches=2, share=0.5)
    assert limits.enter("a") and limits.enter("b")
    assert not limits.enter("c")
    limits.leave("a")
    assert limits.queued() == {"b": 1}
    assert limits.enter("c")
    limits.leave("b")
    limits.leave("c")
    assert limits.queued() == {}
    assert limits.enter("a") and not limits.enter("a")  # its share again, not more


def test_worker_slots_follow_the_settings() -> None:
    limits, _ = _limits(workers=2)
    assert limits.workers.acquire(blocking=False)
    assert limits.workers.acquire(blocking=False)
    assert not limits.workers.acquire(blocking=False)


def test_retry_after_of_a_large_wait_rounds_up() -> None:
    limits, _ = _limits(rate_frames_per_s=0.5, burst_frames=3)
    limits.retry_after_rate("dc", 3)
    assert limits.retry_after_rate("dc", 3) == math.ceil(3 / 0.5)


def test_T7_many_distinct_clients_do_not_grow_the_buckets_without_bound() -> None:
    """Past MAX_BUCKETS clients, refilled buckets are forgotten; a client still throttled
    keeps its bucket (forgetting it would hand it a fresh burst)."""
    clock = FakeClock()
    limits = Limits(LimitSettings(rate_frames_per_s=1.0, burst_frames=2.0), clock)
    limits.MAX_BUCKETS = 50
    assert limits.retry_after_rate("flooder", 2) == 0
    for i in range(49):
        limits.retry_after_rate(f"visitor-{i}", 1)
    clock.advance(1.5)  # visitors refill (1 token back); the flooder is still short
    limits.retry_after_rate("newcomer", 1)
    assert len(limits._buckets) == 2  # flooder and newcomer
    assert limits.retry_after_rate("flooder", 2) == 1  # not handed a fresh burst
