"""Call admission: the line count includes calls answered but not yet connected."""

from __future__ import annotations

from bridge.admission import RESERVATION_TTL_S, CallRegistry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_answered_calls_fills_the_lines_before_any_stream_connects() -> None:
    registry = CallRegistry(max_calls=2, clock=Clock())
    assert registry.accepting
    registry.reserve()
    registry.reserve()
    assert not registry.accepting  # the third caller hears busy


def test_a_connected_stream_takes_its_reservation_and_an_unused_one_expires() -> None:
    clock = Clock()
    registry = CallRegistry(max_calls=2, clock=clock)
    registry.reserve()
    registry.reserve()
    registry.add(object())  # type: ignore[arg-type]  # one stream came
    assert not registry.accepting  # one active, one still expected
    clock.now += RESERVATION_TTL_S
    assert registry.accepting  # the other never came: its line is free again


def test_draining_takes_no_calls() -> None:
    registry = CallRegistry(max_calls=10, clock=Clock())
    registry.draining = True
    assert not registry.accepting
