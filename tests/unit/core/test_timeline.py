"""The call's timeline: what happened when, on the call's clock (seconds since the stream
started), in order, bounded whatever the call's length, never holding a key's digit or a
tool's arguments."""

from __future__ import annotations

import json

import pytest

from bridge.core import timeline as timeline_module
from bridge.core.actions import EndReason, EndStream, ReconnectBackend
from bridge.core.call_config import CallConfig
from bridge.core.events import ShutdownRequested, StreamStopped, ToolFinished
from bridge.core.timeline import Moment, TimelineEntry
from tests.helpers.core_harness import STREAM, CallHarness

WEATHER = {
    "type": "function",
    "name": "weather",
    "description": "The weather.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def moments(h: CallHarness) -> list[tuple[float, Moment, str]]:
    return [(e.at, e.moment, e.detail) for e in h.summary().timeline]


def test_a_call_with_a_barge_in_and_a_tool_reads_in_order_on_the_call_clock() -> None:
    h = CallHarness(answered_at=-0.4, tools=(WEATHER,))  # VAD silence: 500 ms
    h.session_updated(now=0.1)
    h.speech_stopped(2.0, audio_end_ms=1900)  # the VAD put the end of speech at 1.4 s
    h.response_created("r1", 2.05)
    h.delta("r1", "a1", 8000, 2.1)  # 1 s of answer
    h.delta("r1", "a1", 8000, 2.2)  # more of it: not a moment
    h.echo(h.played_marks[0], 2.3)
    h.speech_started(2.6)  # the caller talks over it
    h.response_created("r2", 3.0)
    h.function_call("call_1", "weather", '{"city": "Oslo"}', "r2", 3.1)
    h.handle(ToolFinished("call_1", '{"temp": 3}'), 3.5)
    h.handle(StreamStopped(STREAM), 4.0)

    assert moments(h) == [
        (-0.4, Moment.WEBHOOK_ANSWERED, ""),
        (0.0, Moment.STREAM_STARTED, ""),
        (0.0, Moment.SESSION_OPENED, ""),
        (0.1, Moment.SESSION_CONFIGURED, ""),
        (2.0, Moment.SPEECH_STOPPED, "speech ended at 1.400 s"),
        (2.05, Moment.RESPONSE_CREATED, "r1"),
        (2.1, Moment.AUDIO_SENT, "a1"),
        # Where it began to play (as it was sent), not when its mark came back at 2.3.
        (2.1, Moment.AUDIO_HEARD, "700 ms after"),
        (2.6, Moment.SPEECH_STARTED, "speech began at 2.600 s"),  # (no audio_start_ms)
        (2.6, Moment.CLEAR, ""),
        (2.6, Moment.TRUNCATE, "a1 at 1300 ms"),
        (3.0, Moment.RESPONSE_CREATED, "r2"),
        (3.1, Moment.TOOL_STARTED, "weather"),
        (3.5, Moment.TOOL_FINISHED, "weather"),
        (4.0, Moment.ENDED, "the caller hung up"),
    ]
    # Where the record says the answer was cut, the timeline says so too.
    [barge_in] = h.summary().barge_ins
    assert barge_in.truncations[0].audio_end_ms == 1300


def test_keys_are_counted_never_written_down() -> None:
    h = CallHarness()
    h.session_updated(now=0.1)
    for k, digit in enumerate("4921#"):
        h.key(digit, 1.0 + k / 10)
    [keys] = [e for e in h.summary().timeline if e.moment is Moment.KEYS]
    assert keys == TimelineEntry(1.4, Moment.KEYS, "5 keys")  # (# is a key too)
    as_text = json.dumps([e.detail for e in h.summary().timeline])
    assert "4921" not in as_text and "492" not in as_text


def test_a_lost_session_its_reconnect_and_the_goodbye_are_on_the_timeline() -> None:
    h = CallHarness(config=CallConfig(reconnect_budget_s=10))
    h.session_updated(now=0.1)
    [reconnect] = h.backend_closed("connection lost", 5.0)
    assert isinstance(reconnect, ReconnectBackend)
    h.backend_opened(5.2)
    h.session_updated(now=5.3)
    h.handle(ShutdownRequested("We are closing. Goodbye."), 8.0)
    assert [(e.at, e.moment, e.detail) for e in h.summary().timeline[3:]] == [
        (5.0, Moment.SESSION_LOST, "connection lost"),
        (5.0, Moment.RECONNECTING, "in 0 s"),
        (5.2, Moment.SESSION_OPENED, "restored 0 turns"),
        (5.3, Moment.SESSION_CONFIGURED, ""),
        (8.0, Moment.GOODBYE, "the server is shutting down"),
    ]


def test_a_rollover_is_noted_as_one_not_as_a_reconnect() -> None:
    h = CallHarness(config=CallConfig(rollover_after_s=100))
    h.session_updated(now=0.0)
    h.tick(100.0)
    noted = [e.moment for e in h.summary().timeline]
    assert Moment.ROLLOVER in noted and Moment.RECONNECTING not in noted


def test_the_timeline_is_bounded_and_always_keeps_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeline_module, "MAX_ENTRIES", 10)
    h = CallHarness()
    h.session_updated(now=0.0)
    for k in range(50):
        h.speech_started(1.0 + k)
        h.speech_stopped(1.5 + k, audio_end_ms=1000 + k * 1000)
    h.handle(StreamStopped(STREAM), 60.0)
    summary = h.summary()
    assert len(summary.timeline) == 11  # the first ten, and the end
    assert summary.timeline[-1] == TimelineEntry(60.0, Moment.ENDED, "the caller hung up")
    assert summary.timeline_dropped == 100 + 3 - 10


def test_a_call_the_runner_ends_itself_still_ends_its_timeline_once() -> None:
    h = CallHarness()
    h.session_updated(now=0.1)
    h.call.ended_outside(EndStream(EndReason.INTERNAL_ERROR), 2.0)  # a failed task
    assert h.summary().timeline[-1] == TimelineEntry(2.0, Moment.ENDED, "internal error")
    ended = CallHarness()
    ended.handle(StreamStopped(STREAM), 1.0)
    ended.call.ended_outside(EndStream(EndReason.INTERNAL_ERROR), 1.5)  # after the core did
    assert [e.moment for e in ended.summary().timeline].count(Moment.ENDED) == 1


def test_the_live_console_gets_a_summary_without_copying_the_timeline() -> None:
    h = CallHarness()
    assert h.call.summary(timeline=False).timeline == ()
    assert h.call.summary().timeline
