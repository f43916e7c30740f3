"""The post-call webhook's retry schedule: backing off, then every hour, and never past
the retry window."""

from __future__ import annotations

from bridge.post_call_webhook import RETRY_DELAYS_S, next_attempt_at


def test_failed_deliveries_back_off_then_retry_hourly_until_the_window_closes() -> None:
    created, window = 1000.0, 86400.0
    now, delays = created, []
    for attempts in range(1, 100):
        at = next_attempt_at(created, attempts, now, window)
        if at is None:
            break
        delays.append(at - now)
        now = at
    assert tuple(delays[: len(RETRY_DELAYS_S)]) == RETRY_DELAYS_S
    assert set(delays[len(RETRY_DELAYS_S) :]) == {3600.0}
    assert now <= created + window < now + 3600.0  # the last try fits; the next would not


def test_a_short_window_gives_up_after_the_attempts_that_fit() -> None:
    assert next_attempt_at(0.0, 1, 0.0, 60.0) == 5.0
    assert next_attempt_at(0.0, 2, 5.0, 60.0) == 35.0
    assert next_attempt_at(0.0, 3, 35.0, 60.0) is None  # 2 more minutes would pass it
