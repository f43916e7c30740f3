"""Calls with a backend that does not speak mu-law (PCM16 at 24 kHz, or a-law): the caller's
audio is converted on its way in, the model's on its way out, and the ledger still counts
what the caller heard in the model's own milliseconds."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from bridge.audio import float_to_pcm16, synthetic_speech_mulaw
from bridge.core.actions import (
    Action,
    AppendAudio,
    ClearAudio,
    ConfigureSession,
    EndReason,
    EndStream,
    PlayAudio,
)
from bridge.core.events import AudioDelta, ResponseDone, SessionCreated, SessionUpdated
from bridge.transcode import AudioFormat, BackendToCaller
from tests.helpers.core_harness import CallHarness, configured_call, of, truncations


def pcm16_tone(ms: int, hz: float = 440.0) -> bytes:
    t = np.arange(24 * ms) / 24000
    return float_to_pcm16(0.5 * np.sin(2 * np.pi * hz * t))


def answering(fmt: AudioFormat) -> CallHarness:
    """A configured call in `fmt` whose first answer (r1) has begun."""
    h = configured_call(audio_format=fmt)
    h.response_created("r1", 0.0)
    return h


def delta(h: CallHarness, audio: bytes, now: float, item: str = "item1") -> list[Action]:
    return h.handle(AudioDelta("r1", item, 0, base64.b64encode(audio).decode()), now)


def played(actions: list[Action]) -> bytes:
    """The mu-law bytes sent to Twilio to play."""
    return b"".join(base64.b64decode(play.payload) for play in of(PlayAudio, actions))


@pytest.mark.parametrize("fmt", list(AudioFormat))
def test_the_session_is_asked_for_the_backends_format_both_ways(fmt: AudioFormat) -> None:
    [configure] = CallHarness(audio_format=fmt).opened
    assert isinstance(configure, ConfigureSession)
    assert configure.audio_format is fmt


def test_a_session_that_confirms_another_format_ends_the_call() -> None:
    h = CallHarness(audio_format=AudioFormat.PCM16)
    said = SessionUpdated(input_format=AudioFormat.PCMU, output_format=AudioFormat.PCMU)
    # PCM16 would have played as noise.
    assert h.handle(said, 0.0) == [EndStream(EndReason.BACKEND_WRONG_FORMAT, "pcm16")]


def test_pcm_at_another_rate_is_refused_too() -> None:
    h = CallHarness(audio_format=AudioFormat.PCM16)
    pcm8k = "audio/pcm at 8000 Hz"  # a format the bridge does not know, as the codec says it
    said = SessionUpdated(input_format=pcm8k, output_format=pcm8k)
    assert h.handle(said, 0.0) == [EndStream(EndReason.BACKEND_WRONG_FORMAT, "pcm16")]


def test_caller_audio_reaches_a_pcm16_session_as_24_khz() -> None:
    h = answering(AudioFormat.PCM16)
    frame = synthetic_speech_mulaw(20)
    [append] = h.media(base64.b64encode(frame).decode(), 0.02)
    assert isinstance(append, AppendAudio)
    assert len(base64.b64decode(append.payload)) == 6 * len(frame)  # 480 16-bit for 160


def test_caller_audio_reaches_an_alaw_session_sample_for_sample() -> None:
    h = answering(AudioFormat.PCMA)
    frame = synthetic_speech_mulaw(20)
    [append] = h.media(base64.b64encode(frame).decode(), 0.02)
    assert isinstance(append, AppendAudio)
    assert len(base64.b64decode(append.payload)) == len(frame)


def test_model_pcm16_plays_to_twilio_as_mulaw_with_marks_in_mulaw_bytes() -> None:
    h = answering(AudioFormat.PCM16)
    [play] = delta(h, pcm16_tone(100), 0.0)
    assert isinstance(play, PlayAudio)
    assert len(base64.b64decode(play.payload)) == 800  # 100 ms at 8 kHz
    assert play.mark == "item1:800"
    # An odd-sized delta: the half sample waits for the next one, nothing is lost.
    tone = pcm16_tone(30)
    first = delta(h, tone[:1001], 0.1)
    second = delta(h, tone[1001:], 0.1)
    assert len(played(first + second)) == 240


def test_invalid_model_base64_is_dropped_in_transcoding_mode() -> None:
    h = answering(AudioFormat.PCM16)
    assert h.handle(AudioDelta("r1", "i", 0, "not base64!"), 0.0) == []
    assert of(PlayAudio, delta(h, pcm16_tone(20), 0.0))  # the call goes on


@pytest.mark.parametrize("fmt", [AudioFormat.PCM16, AudioFormat.PCMA])
def test_a_barge_in_truncates_at_the_ms_heard_in_the_models_own_audio(fmt: AudioFormat) -> None:
    h = answering(fmt)
    chunk = pcm16_tone(100) if fmt is AudioFormat.PCM16 else b"\xd5" * 800  # 100 ms each
    for i in range(5):
        delta(h, chunk, 0.0 + i * 0.01)
    h.echo(h.played_marks[0], 0.100)  # the first 100 ms played
    h.echo(h.played_marks[1], 0.200)
    actions = h.speech_started(0.2375)  # 37.5 ms into the third chunk
    # PCM16 reaches the caller 1.9 ms after its mu-law bytes say (the resampling filter).
    expected = 235 if fmt is AudioFormat.PCM16 else 237
    assert truncations(actions) == [("item1", expected)]
    assert of(ClearAudio, actions)


def test_usage_of_every_response_is_totalled_for_the_call() -> None:
    h = answering(AudioFormat.PCMU)
    h.handle(SessionCreated(model="gpt-realtime-2025-08-28"), 0.0)
    usage = {
        "total_tokens": 300,
        "input_tokens": 100,
        "output_tokens": 200,
        "input_token_details": {"text_tokens": 40, "audio_tokens": 60, "cached_tokens": 0},
        "output_token_details": {"text_tokens": 20, "audio_tokens": 180},
    }
    for response_id in ("r1", "r2"):
        h.handle(ResponseDone(response_id, "completed", usage=usage), 0.0)
    summary = h.summary()
    assert summary.model == "gpt-realtime-2025-08-28"
    assert summary.usage.responses == 2
    assert summary.usage.model.audio_out == 360 and summary.usage.model.text_in == 80


def test_passthrough_never_decodes_audio(monkeypatch: pytest.MonkeyPatch) -> None:
    h = answering(AudioFormat.PCMU)

    def no_decoding(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("mu-law passthrough decoded base64")

    monkeypatch.setattr(base64, "b64decode", no_decoding)
    monkeypatch.setattr(base64, "b64encode", no_decoding)
    payload = "f39/f39/" * 20  # 120 bytes of mu-law as base64
    assert h.media(payload, 0.02) == [AppendAudio(payload)]
    assert h.handle(AudioDelta("r1", "i1", 0, payload), 0.02) == [PlayAudio(payload, "i1:120")]


def test_the_answer_after_a_barge_in_starts_clean() -> None:
    # The interrupted answer leaves filter history and a decimation phase behind (its
    # chunks are not whole multiples of 3 samples); the next answer must not carry them.
    h = answering(AudioFormat.PCM16)
    tone = pcm16_tone(200, hz=700)
    for i, cut in enumerate((1000, 2002, 3504)):
        delta(h, tone[i * 1000 : cut], 0.01 * i)
    h.speech_started(0.05)
    h.response_done("r1", 0.06, status="cancelled")
    h.response_created("r2", 0.5)
    answer = pcm16_tone(40, hz=300)
    [play] = h.handle(AudioDelta("r2", "item2", 0, base64.b64encode(answer).decode()), 0.5)
    assert isinstance(play, PlayAudio)
    fresh = BackendToCaller(AudioFormat.PCM16).convert(answer)
    assert base64.b64decode(play.payload) == fresh
