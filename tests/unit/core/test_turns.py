"""Turn timing as the caller lives it: the end of their speech (where the session's VAD put
it, on the call's clock) -> first answer audio sent -> that audio beginning to play (its mark
back, less its length); barge-ins marked on the turn."""

from __future__ import annotations

import base64

import pytest

from bridge.core.call_config import CallConfig, SessionSettings
from bridge.core.events import (
    BackendError,
    BackendOpened,
    CallerAudio,
    SessionUpdated,
    SpeechStopped,
)
from tests.helpers.core_harness import (
    STREAM,
    CallHarness,
    Recorder,
    Stream,
    configured_call,
    start,
)

FRAME = base64.b64encode(b"\xff" * 160).decode()  # 20 ms of caller audio


def observed() -> tuple[CallHarness, Recorder]:
    recorder = Recorder()
    return configured_call(observer=recorder), recorder


def test_a_turn_is_timed_from_the_end_of_speech_to_the_first_audio_sent_and_played() -> None:
    h, recorder = observed()  # the session's audio starts with the stream, at 0.0
    # The VAD heard silence from 1.2 s, and was sure after its 500 ms; the news came at 1.8.
    h.speech_stopped(1.8, audio_end_ms=1700)
    h.response_created("r1", 1.85)
    h.delta("r1", "item1", 800, 1.9)  # 100 ms of audio
    h.delta("r1", "item1", 800, 1.95)  # later audio: the turn keeps its first times
    h.echo(h.played_marks[0], 2.01)  # played from 1.91 to 2.01
    h.echo(h.played_marks[1], 2.11)
    [turn] = h.summary().turns
    assert turn.caller_stopped_at == 1.2
    assert turn.first_audio_sent_at == 1.9
    assert turn.first_audio_heard_at == pytest.approx(1.91)
    assert recorder.events == [("answered", 0.7), ("heard", 0.71)]


def test_a_barge_in_marks_its_turn_and_a_cleared_mark_is_never_heard() -> None:
    h, recorder = observed()
    h.speech_stopped(1.0, audio_end_ms=1000)  # speech ended at 0.5 s
    h.response_created("r1", 1.1)
    h.delta("r1", "item1", 1600, 1.2)  # 200 ms, never echoed
    h.speech_started(1.25)  # 50 ms into it
    h.echo(h.played_marks[0], 1.26)  # the clear's echo: proves nothing
    [turn] = h.summary().turns
    assert turn.barged_in and turn.truncated_at_ms == 50
    assert turn.first_audio_heard_at is None
    assert recorder.events == [("answered", 0.7), ("barged_in", 50)]


def test_audio_kept_while_the_session_connected_places_its_buffer_on_the_call_clock() -> None:
    stream = Stream(CallConfig(session=SessionSettings(vad_silence_ms=400)))
    stream.handle(start(), 10.0)
    for k in range(1, 16):  # 300 ms of audio, each frame arriving once captured
        stream.handle(CallerAudio(STREAM, FRAME), 10.0 + k * 0.02)
    stream.handle(BackendOpened(), 10.31)  # the buffer's 300 ms ended at 10.30
    stream.handle(SessionUpdated(interrupts_by_itself=False), 10.35)
    stream.handle(SpeechStopped(audio_end_ms=1500), 11.6)
    [turn] = stream.call.summary().turns
    assert round(turn.caller_stopped_at, 3) == 11.1  # 10.0 + 1.5 s - 400 ms of silence


def test_a_replacement_session_starts_its_own_audio_where_the_call_is() -> None:
    h = configured_call(reconnect_budget_s=10)
    for k in range(1, 51):  # a second of audio to the first session
        h.media(FRAME, k * 0.02)
    h.backend_closed("connection lost", 1.0)
    for k in range(1, 11):  # 200 ms kept for the next session while it connects
        h.media(FRAME, 1.0 + k * 0.02)
    h.backend_opened(1.21)
    h.session_updated(now=1.25)
    h.speech_stopped(2.0, audio_end_ms=900)  # its buffer began at 1.0: speech ended at 1.4
    assert round(h.summary().turns[-1].caller_stopped_at, 3) == 1.4


def test_without_audio_end_ms_a_turn_is_timed_from_the_news_of_it() -> None:
    h, _ = observed()
    h.speech_stopped(3.0)
    h.speech_stopped(4.0, audio_end_ms=99_000)  # past the call's clock: capped at the news
    assert [t.caller_stopped_at for t in h.summary().turns] == [3.0, 4.0]


def test_a_keypad_turn_is_timed_from_the_last_key() -> None:
    h, _ = observed()
    for digit, at in (("1", 2.0), ("2", 2.3)):
        h.key(digit, at)
    h.tick(4.5)  # the keypad pause: the keys go to the model
    [turn] = h.summary().turns
    assert turn.caller_stopped_at == 2.3


def test_errors_and_reconnects_are_reported() -> None:
    h, recorder = observed()
    h.handle(BackendError("rate_limit_exceeded"), 1.0)
    h.backend_closed("connection lost", 2.0)
    assert recorder.events == [("error:rate_limit_exceeded", 0), ("reconnected", 0)]
    summary = h.summary()
    assert (summary.backend_errors, summary.reconnects) == (1, 1)
