"""Call admission: lines are held per CallSid from the webhook's answer until the stream
is admitted, a webhook sent again cannot take a second line, and a stream holds a line
only once admitted."""

from __future__ import annotations

from bridge.admission import MAX_REMEMBERED, REMEMBER_S, RESERVATION_TTL_S, CallRegistry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Runner:
    """Stands in for a CallRunner: the registry only holds it."""


def test_a_burst_of_answered_calls_fills_the_lines_before_any_stream_connects() -> None:
    registry = CallRegistry(max_calls=2, clock=Clock())
    assert registry.accepting
    registry.reserve("CA1", "<Response/>")
    registry.reserve("CA2", "<Response/>")
    assert not registry.accepting  # the third caller hears busy


def test_a_webhook_sent_again_gets_the_same_answer_and_no_second_line() -> None:
    registry = CallRegistry(max_calls=2, clock=Clock())
    registry.reserve("CA1", "<Response>first</Response>")
    for _ in range(5):
        assert registry.earlier_answer("CA1") == "<Response>first</Response>"
    assert registry.reserved == 1
    assert registry.accepting  # the other line is still free for a real caller


def test_an_admitted_stream_takes_its_own_reservation_and_an_unused_one_expires() -> None:
    clock = Clock()
    registry = CallRegistry(max_calls=2, clock=clock)
    registry.reserve("CA1", "")
    registry.reserve("CA2", "")
    assert registry.admit("CA2", Runner()) is None  # type: ignore[arg-type]
    assert (len(registry), registry.reserved) == (1, 1)  # CA2's line became the call
    assert registry.earlier_answer("CA2") is None  # its stream came: no answer again
    assert not registry.accepting
    clock.now += RESERVATION_TTL_S
    assert registry.reserved == 0  # CA1's stream never came: its line is free again
    assert registry.accepting


def test_a_stream_without_a_reservation_here_needs_a_free_line() -> None:
    registry = CallRegistry(max_calls=2, clock=Clock())
    registry.reserve("CA1", "")
    registry.reserve("CA2", "")
    # Its webhook went to another replica: no line is free here for it.
    assert registry.admit("CA3", Runner()) == "all 2 lines are taken"  # type: ignore[arg-type]
    assert registry.admit("CA1", Runner()) is None  # type: ignore[arg-type]
    assert len(registry) == 1


def test_a_call_has_at_most_one_live_stream() -> None:
    registry = CallRegistry(max_calls=5, clock=Clock())
    registry.reserve("CA1", "")
    first = Runner()
    assert registry.admit("CA1", first) is None  # type: ignore[arg-type]
    refusal = registry.admit("CA1", Runner())  # type: ignore[arg-type]
    assert refusal == "a stream for this call is already live"
    assert len(registry) == 1
    registry.discard(first)  # type: ignore[arg-type]
    assert len(registry) == 0


def test_a_call_whose_stream_came_is_known_until_long_after() -> None:
    clock = Clock()
    registry = CallRegistry(max_calls=5, clock=clock)
    registry.reserve("CA1", "")
    runner = Runner()
    registry.admit("CA1", runner)  # type: ignore[arg-type]
    assert registry.known("CA1")  # live
    registry.discard(runner)  # type: ignore[arg-type]
    assert registry.known("CA1")  # over: a webhook for it now is a replay
    assert not registry.known("CA2")
    clock.now += REMEMBER_S
    assert not registry.known("CA1")


def test_what_is_remembered_is_bounded() -> None:
    registry = CallRegistry(max_calls=10, clock=Clock())
    for i in range(MAX_REMEMBERED + 10):
        registry.reserve(f"CA{i}", "")
    assert registry.earlier_answer("CA0") is None  # the oldest went first
    assert registry.earlier_answer(f"CA{MAX_REMEMBERED + 9}") == ""
    assert registry.reserved == MAX_REMEMBERED


def test_draining_takes_no_calls() -> None:
    registry = CallRegistry(max_calls=10, clock=Clock())
    registry.draining = True
    assert not registry.accepting
