"""Cost of a call's own work per 20 ms audio frame, each way: mu-law passthrough, and
transcoding for an a-law or a PCM16 24 kHz backend.

Measures what the bridge adds per frame before the sockets: the codec decoding the
message, the call core deciding, the codec writing what it decided (the same calls the
call runner makes). Run: .venv/bin/python bench/core_hot_path.py
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import numpy as np

from bridge.audio import float_to_pcm16, synthetic_speech_mulaw
from bridge.core import events as ev
from bridge.core.actions import AppendAudio, PlayAudio
from bridge.core.call import Call
from bridge.core.call_config import CallConfig
from bridge.transcode import AudioFormat, bytes_per_ms
from bridge.wire import twilio
from bridge.wire.realtime import RealtimeCodec

FRAMES = {AudioFormat.PCMU: 200_000, AudioFormat.PCMA: 100_000, AudioFormat.PCM16: 40_000}
STREAM = "MZ" + "0" * 32


def setup(fmt: AudioFormat) -> tuple[Call, RealtimeCodec, twilio.StreamWriter]:
    call = Call(CallConfig(audio_format=fmt))
    codec = RealtimeCodec()
    start = ev.StreamStarted(STREAM, "CA" + "0" * 32, "AC")
    call.handle(start, 0.0)
    call.handle(ev.BackendOpened(), 0.0)
    call.handle(codec.decode(json.dumps({"type": "session.updated", "session": {}})), 0.0)  # type: ignore[arg-type]
    created = {"type": "response.created", "response": {"id": "r"}}
    call.handle(codec.decode(json.dumps(created)), 0.0)  # type: ignore[arg-type]
    return call, codec, twilio.StreamWriter(STREAM)


def per_frame_us(run: Callable[[], int], frames: int, messages_per_frame: int) -> float:
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        messages = run()
        best = min(best, time.perf_counter() - began)
        # Every frame must have gone through, or the figure is that of a dropping call.
        assert messages == frames * messages_per_frame, (messages, frames * messages_per_frame)
    return best / frames * 1e6


def model_frame(fmt: AudioFormat) -> bytes:
    """20 ms of the model's audio in `fmt` (a tone: the content does not change the cost)."""
    if fmt is AudioFormat.PCM16:
        t = np.arange(480) / 24000
        return float_to_pcm16(0.3 * np.sin(2 * np.pi * 440 * t))
    return bytes(range(160)) if fmt is AudioFormat.PCMA else bytes(160)


def measure(fmt: AudioFormat) -> tuple[float, float]:
    frames = FRAMES[fmt]
    payload = base64.b64encode(synthetic_speech_mulaw(20)).decode()
    caller_frame = json.dumps(
        {
            "event": "media",
            "sequenceNumber": "4",
            "streamSid": STREAM,
            "media": {"track": "inbound", "chunk": "2", "timestamp": "40", "payload": payload},
        }
    ).encode()
    delta = json.dumps(
        {
            "type": "response.output_audio.delta",
            "response_id": "r",
            "item_id": "item_0",
            "output_index": 0,
            "content_index": 0,
            "delta": base64.b64encode(model_frame(fmt)).decode(),
        }
    ).encode()
    assert len(model_frame(fmt)) == 20 * bytes_per_ms(fmt)
    decode_twilio = twilio.decode

    def caller_to_realtime() -> int:
        call, codec, _ = setup(fmt)
        handle, append_audio = call.handle, codec.append_audio
        written = 0
        for n in range(frames):  # 20 ms apart, as on a real line (the flood limits apply)
            for action in handle(decode_twilio(caller_frame), n * 0.020):
                if type(action) is AppendAudio:
                    written += len(append_audio(action.payload)) > 0
        return written

    def realtime_to_caller() -> int:
        # Each delta is followed by its mark's echo, as in a call where playback keeps up.
        call, codec, writer = setup(fmt)
        handle, decode = call.handle, codec.decode
        written = 0
        for n in range(1, frames + 1):
            now = n * 0.020
            for action in handle(decode(delta), now):  # type: ignore[arg-type]
                if type(action) is PlayAudio:
                    written += len(writer.media(action.payload)) > 0
                    written += len(writer.mark(action.mark)) > 0
            mark = f'","mark":{{"name":"item_0:{n * 160}"}}}}'
            echo = '{"event":"mark","streamSid":"' + STREAM + mark
            handle(decode_twilio(echo.encode()), now)
        return written

    return per_frame_us(caller_to_realtime, frames, 1), per_frame_us(realtime_to_caller, frames, 2)


def main() -> None:
    print("call core with its codecs, per 20 ms frame (best of 3):")
    print(f"  {'backend format':34} {'caller->RT':>10} {'RT->caller':>10} {'per call-s':>10}")
    names = {
        AudioFormat.PCMU: "mu-law passthrough",
        AudioFormat.PCMA: "a-law (transcoded)",
        AudioFormat.PCM16: "PCM16 24 kHz (transcoded)",
    }
    for fmt in AudioFormat:
        up, down = measure(fmt)
        # 50 frames a second each way.
        print(f"  {names[fmt]:34} {up:8.2f}us {down:8.2f}us {(up + down) * 50:8.0f}us")
    print("  (RT->caller includes handling the mark's echo; per call-s is CPU per second of call)")


if __name__ == "__main__":
    main()
