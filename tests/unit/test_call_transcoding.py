"""The call core with a backend that does not speak mu-law: PCM16 24 kHz or a-law."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from bridge.audio import float_to_pcm16, synthetic_speech_mulaw
from bridge.realtime.dialects import Dialect
from bridge.transcode import AudioFormat, BackendToCaller
from tests.legacy.call_api import Call, CallConfig, EndCall
from tests.unit.test_call_core import (
    DELTA_NAME,
    Harness,
    start_message,
    to_realtime,
    to_twilio,
    truncations,
    twilio,
)

FORMATS = {
    Dialect.GA: {
        AudioFormat.PCM16: {"type": "audio/pcm", "rate": 24000},
        AudioFormat.PCMA: {"type": "audio/pcma"},
        AudioFormat.PCMU: {"type": "audio/pcmu"},
    },
    Dialect.BETA: {
        AudioFormat.PCM16: "pcm16",
        AudioFormat.PCMA: "g711_alaw",
        AudioFormat.PCMU: "g711_ulaw",
    },
}


def pcm16_tone(ms: int, hz: float = 440.0) -> bytes:
    t = np.arange(24 * ms) / 24000
    return float_to_pcm16(0.5 * np.sin(2 * np.pi * hz * t))


@pytest.mark.parametrize("dialect", list(Dialect))
@pytest.mark.parametrize("fmt", list(AudioFormat))
def test_the_session_is_asked_for_the_backends_format_both_ways(
    dialect: Dialect, fmt: AudioFormat
) -> None:
    call = Call(CallConfig(dialect=dialect, audio_format=fmt))
    call.receive_twilio(start_message(), 0.0)
    [update] = to_realtime(call.realtime_connected(0.0))
    session = update["session"]
    if dialect is Dialect.BETA:
        stated = [session["input_audio_format"], session["output_audio_format"]]
    else:
        stated = [session["audio"]["input"]["format"], session["audio"]["output"]["format"]]
    assert stated == [FORMATS[dialect][fmt]] * 2


@pytest.mark.parametrize("dialect", list(Dialect))
def test_a_session_that_confirms_another_format_ends_the_call(dialect: Dialect) -> None:
    h = Harness(dialect, audio_format=AudioFormat.PCM16)
    said = FORMATS[dialect][AudioFormat.PCMU]
    if dialect is Dialect.BETA:
        session = {"input_audio_format": said, "output_audio_format": said}
    else:
        session = {"audio": {"input": {"format": said}, "output": {"format": said}}}
    actions = h.server({"type": "session.updated", "session": session}, 0.0)
    assert [a for a in actions if isinstance(a, EndCall)], "PCM16 would have played as noise"


def test_pcm_at_another_rate_is_refused_too() -> None:
    h = Harness(Dialect.GA, audio_format=AudioFormat.PCM16)
    pcm8k = {"type": "audio/pcm", "rate": 8000}
    session = {"audio": {"input": {"format": pcm8k}, "output": {"format": pcm8k}}}
    actions = h.server({"type": "session.updated", "session": session}, 0.0)
    assert [a for a in actions if isinstance(a, EndCall)]


def configured(dialect: Dialect, fmt: AudioFormat) -> Harness:
    h = Harness(dialect, audio_format=fmt)
    h.session_updated()
    h.response_created("r1", 0.0)
    return h


def delta(h: Harness, audio: bytes, now: float, item: str = "item1") -> list:
    event = {
        "type": DELTA_NAME[h.dialect],
        "response_id": "r1",
        "item_id": item,
        "content_index": 0,
        "delta": base64.b64encode(audio).decode(),
    }
    actions = h.server(event, now)
    h.sent_marks += [m["mark"]["name"] for m in to_twilio(actions) if m["event"] == "mark"]
    return actions


@pytest.mark.parametrize("dialect", list(Dialect))
def test_caller_audio_reaches_a_pcm16_session_as_24_khz(dialect: Dialect) -> None:
    h = configured(dialect, AudioFormat.PCM16)
    frame = synthetic_speech_mulaw(20)
    payload = base64.b64encode(frame).decode()
    [append] = to_realtime(h.call.receive_twilio(_media(payload), 0.02))
    audio = base64.b64decode(append["audio"])
    assert len(audio) == 6 * len(frame)  # 480 samples of 16 bits for 160 at 8 kHz


def test_caller_audio_reaches_an_alaw_session_sample_for_sample() -> None:
    h = configured(Dialect.GA, AudioFormat.PCMA)
    frame = synthetic_speech_mulaw(20)
    [append] = to_realtime(h.call.receive_twilio(_media(base64.b64encode(frame).decode()), 0.02))
    assert len(base64.b64decode(append["audio"])) == len(frame)


def test_model_pcm16_plays_to_twilio_as_mulaw_with_marks_in_mulaw_bytes() -> None:
    h = configured(Dialect.GA, AudioFormat.PCM16)
    [media, mark] = to_twilio(delta(h, pcm16_tone(100), 0.0))
    assert len(base64.b64decode(media["media"]["payload"])) == 800  # 100 ms at 8 kHz
    assert mark["mark"]["name"] == "item1:800"
    # An odd-sized delta: the half sample waits for the next one, nothing is lost.
    tone = pcm16_tone(30)
    first = to_twilio(delta(h, tone[:1001], 0.1))
    second = to_twilio(delta(h, tone[1001:], 0.1))
    media = [m for m in first + second if m["event"] == "media"]
    played = sum(len(base64.b64decode(m["media"]["payload"])) for m in media)
    assert played == 240


def test_invalid_model_base64_is_dropped_in_transcoding_mode() -> None:
    h = configured(Dialect.GA, AudioFormat.PCM16)
    event = {"type": "response.output_audio.delta", "response_id": "r1", "item_id": "i"}
    assert h.server({**event, "delta": "not base64!"}, 0.0) == []
    assert to_twilio(delta(h, pcm16_tone(20), 0.0))  # the call goes on


@pytest.mark.parametrize("fmt", [AudioFormat.PCM16, AudioFormat.PCMA])
def test_a_barge_in_truncates_at_the_ms_heard_in_the_models_own_audio(fmt: AudioFormat) -> None:
    h = configured(Dialect.GA, fmt)
    chunk = pcm16_tone(100) if fmt is AudioFormat.PCM16 else b"\xd5" * 800  # 100 ms each
    for i in range(5):
        delta(h, chunk, 0.0 + i * 0.01)
    h.echo(h.sent_marks[0], 0.100)  # the first 100 ms played
    h.echo(h.sent_marks[1], 0.200)
    actions = h.speech_started(0.2375)  # 37.5 ms into the third chunk
    # PCM16 reaches the caller 1.9 ms after its mu-law bytes say (the resampling filter).
    expected = 235 if fmt is AudioFormat.PCM16 else 237
    assert truncations(actions) == [("item1", expected)]
    assert any(m["event"] == "clear" for m in to_twilio(actions))


def test_usage_of_every_response_is_totalled_for_the_call() -> None:
    h = configured(Dialect.GA, AudioFormat.PCMU)
    h.server({"type": "session.created", "session": {"model": "gpt-realtime-2025-08-28"}}, 0.0)
    usage = {
        "total_tokens": 300,
        "input_tokens": 100,
        "output_tokens": 200,
        "input_token_details": {"text_tokens": 40, "audio_tokens": 60, "cached_tokens": 0},
        "output_token_details": {"text_tokens": 20, "audio_tokens": 180},
    }
    for response_id in ("r1", "r2"):
        response = {"id": response_id, "status": "completed", "usage": usage}
        h.server({"type": "response.done", "response": response}, 0.0)
    assert h.call.session_model == "gpt-realtime-2025-08-28"
    assert h.call.usage.responses == 2
    assert h.call.usage.model.audio_out == 360 and h.call.usage.model.text_in == 80


def _media(payload: str) -> str:
    return twilio("media", media={"track": "inbound", "payload": payload})


def test_passthrough_never_decodes_audio(monkeypatch: pytest.MonkeyPatch) -> None:
    h = configured(Dialect.GA, AudioFormat.PCMU)

    def no_decoding(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("mu-law passthrough decoded base64")

    monkeypatch.setattr(base64, "b64decode", no_decoding)
    monkeypatch.setattr(base64, "b64encode", no_decoding)
    payload = "f39/f39/" * 20  # 120 bytes of mu-law as base64
    [append] = to_realtime(h.call.receive_twilio(_media(payload), 0.02))
    assert append == {"type": "input_audio_buffer.append", "audio": payload}
    event = {"type": "response.output_audio.delta", "response_id": "r1", "item_id": "i1"}
    [media, _] = to_twilio(h.server({**event, "delta": payload}, 0.02))
    assert media["media"]["payload"] == payload


def test_the_answer_after_a_barge_in_starts_clean() -> None:
    # The interrupted answer leaves filter history and a decimation phase behind (its
    # chunks are not whole multiples of 3 samples); the next answer must not carry them.
    h = configured(Dialect.GA, AudioFormat.PCM16)
    tone = pcm16_tone(200, hz=700)
    for i, cut in enumerate((1000, 2002, 3504)):
        delta(h, tone[i * 1000 : cut], 0.01 * i)
    h.speech_started(0.05)
    h.server({"type": "response.done", "response": {"id": "r1", "status": "cancelled"}}, 0.06)
    h.response_created("r2", 0.5)
    answer = pcm16_tone(40, hz=300)
    event = {"type": "response.output_audio.delta", "response_id": "r2", "item_id": "item2"}
    [media, _] = to_twilio(h.server({**event, "delta": base64.b64encode(answer).decode()}, 0.5))
    fresh = BackendToCaller(AudioFormat.PCM16).convert(answer)
    assert base64.b64decode(media["media"]["payload"]) == fresh
