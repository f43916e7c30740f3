"""Turn timing as the caller lives it: end of their speech -> first answer audio sent ->
that audio heard (its mark back); barge-ins marked on the turn."""

from __future__ import annotations

from tests.unit.test_call_core import Harness


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, float]] = []

    def turn_answered(self, latency_s: float) -> None:
        self.events.append(("answered", round(latency_s, 3)))

    def turn_heard(self, latency_s: float) -> None:
        self.events.append(("heard", round(latency_s, 3)))

    def barged_in(self, heard_ms: int) -> None:
        self.events.append(("barged_in", heard_ms))

    def reconnected(self) -> None:
        self.events.append(("reconnected", 0))

    def backend_error(self, code: str) -> None:
        self.events.append(("error:" + code, 0))


def observed() -> tuple[Harness, Recorder]:
    h = Harness()
    recorder = h.call.observer = Recorder()
    h.session_updated()
    return h, recorder


def stopped(h: Harness, now: float) -> None:
    h.server({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 1000}, now)


def test_a_turn_is_timed_to_the_first_audio_sent_and_to_its_mark_coming_back() -> None:
    h, recorder = observed()
    stopped(h, 1.0)
    h.response_created("r1", 1.3)
    h.delta("r1", "item1", 800, 1.5)
    h.delta("r1", "item1", 800, 1.55)  # later audio: the turn keeps its first times
    h.echo(h.sent_marks[0], 1.62)
    h.echo(h.sent_marks[1], 1.72)
    [turn] = h.call.turns
    assert (turn.first_audio_sent_at, turn.first_audio_heard_at) == (1.5, 1.62)
    assert recorder.events == [("answered", 0.5), ("heard", 0.62)]


def test_a_barge_in_marks_its_turn_and_a_cleared_mark_is_never_heard() -> None:
    h, recorder = observed()
    stopped(h, 1.0)
    h.response_created("r1", 1.1)
    h.delta("r1", "item1", 1600, 1.2)  # 200 ms, never echoed
    h.speech_started(1.25)  # 50 ms into it
    h.echo(h.sent_marks[0], 1.26)  # the clear's echo: proves nothing
    [turn] = h.call.turns
    assert turn.barged_in and turn.truncated_at_ms == 50
    assert turn.first_audio_heard_at is None
    assert recorder.events == [("answered", 0.2), ("barged_in", 50)]


def test_errors_and_reconnects_are_reported() -> None:
    h, recorder = observed()
    h.server({"type": "error", "error": {"code": "rate_limit_exceeded"}}, 1.0)
    h.call.realtime_closed("connection lost", 2.0)
    assert recorder.events == [("error:rate_limit_exceeded", 0), ("reconnected", 0)]
    assert (h.call.backend_errors, h.call.reconnects) == (1, 1)
