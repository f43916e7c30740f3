"""One call through the core, from `start` to its end: what reaches the Realtime session
and Twilio, and what ends the call. Typed events in, typed actions out, explicit times."""

from __future__ import annotations

import base64
import logging

import pytest

from bridge.core.actions import (
    AppendAudio,
    ConfigureSession,
    CreateResponse,
    EndReason,
    EndStream,
    OpenBackend,
    PlayAudio,
)
from bridge.core.call import GREETING_LEAD, decoded_length
from bridge.core.call_config import CallConfig, SessionSettings
from bridge.core.events import (
    BackendError,
    BackendOpened,
    CallerAudio,
    KeyPressed,
    SessionUpdated,
    StreamStopped,
    TwilioClosed,
    TwilioMessageInvalid,
)
from bridge.core.phases import Phase
from bridge.transcode import AudioFormat
from tests.helpers.core_harness import (
    CALL,
    STREAM,
    CallHarness,
    Stream,
    audio,
    configured_call,
    start,
)


def test_start_opens_one_realtime_session_with_the_call_parameters() -> None:
    stream = Stream()
    parameters = {"CallSid": CALL, "From": "+1555"}
    assert stream.handle(start(parameters), 0.0) == [OpenBackend()]
    # The adapter opens the session for this call, with its parameters (the profile).
    summary = stream.call.summary()
    assert (summary.call_sid, summary.stream_sid) == (CALL, STREAM)
    assert summary.parameters == parameters
    assert stream.handle(start(), 0.1) == []  # a second start opens nothing


def test_the_session_is_asked_for_mulaw_both_ways_the_voice_the_instructions_and_vad() -> None:
    config = CallConfig(session=SessionSettings(instructions="Be brief."))
    h = CallHarness(config)
    assert h.opened == [
        ConfigureSession(SessionSettings(instructions="Be brief."), AudioFormat.PCMU)
    ]
    [configure] = h.opened
    assert isinstance(configure, ConfigureSession)
    assert configure.audio_format is AudioFormat.PCMU
    assert configure.settings.voice == "marin"
    assert configure.settings.instructions == "Be brief."
    # Server VAD, and it interrupts the answer by itself when the caller talks.
    assert configure.settings.interrupt_response is True
    assert configure.settings.vad_silence_ms == 500


def test_caller_audio_passes_through_untouched_in_order() -> None:
    stream = Stream()
    stream.handle(start(), 0.0)
    payloads = [base64.b64encode(bytes([i]) * 160).decode() for i in range(5)]
    # Audio that arrives while the Realtime socket opens is kept and sent after the config.
    for payload in payloads[:3]:
        assert stream.handle(CallerAudio(STREAM, payload), 0.0) == []
    sent = stream.handle(BackendOpened(), 0.0)
    for payload in payloads[3:]:
        sent += stream.handle(CallerAudio(STREAM, payload), 0.1)
    assert isinstance(sent[0], ConfigureSession)
    assert sent[1:] == [AppendAudio(payload) for payload in payloads]


def test_audio_before_start_or_for_another_stream_is_dropped() -> None:
    stream = Stream()
    assert stream.handle(CallerAudio(STREAM, "/w=="), 0.0) == []
    stream.handle(start(), 0.0)
    stream.handle(BackendOpened(), 0.0)
    assert stream.handle(CallerAudio("MZother", "/w=="), 0.0) == []
    assert stream.handle(CallerAudio(STREAM, "/w=="), 0.0) == [AppendAudio("/w==")]


def test_malformed_twilio_messages_are_dropped_without_ending_the_call() -> None:
    h = CallHarness()
    for problem in [
        "not JSON: unexpected end of data",
        "message is not a JSON object",
        "'media' event without a 'media' object",
        "unknown event 'bogus'",
        "'mark' event without a 'mark' object",
    ]:
        assert h.handle(TwilioMessageInvalid(problem), 0.0) == []
    assert h.media("/w==", 0.0) == [AppendAudio("/w==")]
    assert h.call.phase is Phase.BRIDGING


def test_model_audio_goes_to_twilio_with_a_uniquely_named_mark_after_each_chunk() -> None:
    h = configured_call()
    h.response_created("r1", 0.0)
    out = h.delta("r1", "a", 800, 0.0) + h.delta("r1", "a", 480, 0.0)
    assert out == [PlayAudio(audio(800), "a:800"), PlayAudio(audio(480), "a:1280")]
    assert base64.b64decode(audio(800)) == b"\xff" * 800
    assert h.played_marks == ["a:800", "a:1280"]
    h.response_created("r2", 1.0)
    h.delta("r2", "b", 800, 1.0)
    assert len(set(h.played_marks)) == len(h.played_marks) == 3


def test_the_greeting_is_asked_for_only_once_the_session_is_configured() -> None:
    h = CallHarness(greeting="Hello, you reached the demo line.")
    assert [type(a) for a in h.opened] == [ConfigureSession]  # no greeting yet
    assert h.backend_opened(0.0) == []  # (a second "opened" for the same session: nothing)
    [request] = h.session_updated()
    greeting = GREETING_LEAD + "Hello, you reached the demo line."
    assert request == CreateResponse(instructions=greeting)
    assert h.session_updated() == []  # later session.updated events do not greet again


def test_a_stop_or_a_closed_socket_ends_the_call_once() -> None:
    h = CallHarness()
    assert h.handle(StreamStopped(STREAM), 1.0) == [EndStream(EndReason.CALLER_HUNG_UP)]
    assert EndStream(EndReason.CALLER_HUNG_UP).description == "the caller hung up"
    assert h.handle(TwilioClosed(), 0.0) == []
    assert h.backend_closed("gone", 1.0) == []
    h2 = CallHarness()
    [end] = h2.backend_closed("connection lost", 1.0)
    assert end == EndStream(EndReason.BACKEND_ENDED, "connection lost")
    assert isinstance(end, EndStream) and "connection lost" in end.description


def test_a_refused_session_configuration_ends_the_call_so_the_caller_hears_the_apology() -> None:
    h = CallHarness()
    [end] = h.handle(BackendError("invalid_value"), 0.1)
    assert end == EndStream(EndReason.BACKEND_REFUSED_CONFIG)
    assert isinstance(end, EndStream) and "refused" in end.description

    configured = configured_call()
    assert configured.handle(BackendError("invalid_value"), 0.1) == []  # logged, not fatal


@pytest.mark.parametrize(
    ("stated_in", "stated_out"),
    [(None, AudioFormat.PCM16), (AudioFormat.PCM16, AudioFormat.PCM16)],
    ids=["output-only", "both-ways"],
)
def test_a_session_that_did_not_take_mulaw_ends_the_call(
    stated_in: AudioFormat | None, stated_out: AudioFormat
) -> None:
    h = CallHarness()
    updated = SessionUpdated(input_format=stated_in, output_format=stated_out)
    assert h.handle(updated, 0.1) == [EndStream(EndReason.BACKEND_WRONG_FORMAT, "pcmu")]


def test_no_model_audio_plays_before_the_session_is_configured() -> None:
    h = CallHarness()
    h.response_created("r1", 0.0)
    assert h.delta("r1", "a", 800, 0.0) == []


def test_keypad_digits_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    h = CallHarness()
    for digit in "4111":
        h.handle(KeyPressed(STREAM, digit), 0.0)
    assert "4" not in " ".join(r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("size", "b64"),
    [(n, base64.b64encode(b"x" * n).decode()) for n in [0, 1, 2, 3, 4, 159, 160, 161]],
)
def test_decoded_length_matches_base64_without_decoding(size: int, b64: str) -> None:
    assert decoded_length(b64) == size
    assert decoded_length(b64.rstrip("=")) == size
