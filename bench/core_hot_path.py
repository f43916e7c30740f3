"""Cost of the call core per 20 ms audio frame, each way: mu-law passthrough, and
transcoding for an a-law or a PCM16 24 kHz backend.

Measures only the sans-I/O core (parse, decide, transcode, build the outgoing text): what
the bridge adds per frame before the sockets. Run: .venv/bin/python bench/core_hot_path.py
"""

from __future__ import annotations

import base64
import json
import time

import numpy as np

from bridge.audio import float_to_pcm16, synthetic_speech_mulaw
from bridge.call import Call, CallConfig
from bridge.transcode import AudioFormat, bytes_per_ms

FRAMES = {AudioFormat.PCMU: 200_000, AudioFormat.PCMA: 100_000, AudioFormat.PCM16: 40_000}
STREAM = "MZ" + "0" * 32


def setup(fmt: AudioFormat) -> Call:
    call = Call(CallConfig(audio_format=fmt))
    start = {
        "event": "start",
        "streamSid": STREAM,
        "start": {"streamSid": STREAM, "callSid": "CA" + "0" * 32, "accountSid": "AC"},
    }
    call.receive_twilio(json.dumps(start), 0.0)
    call.realtime_connected(0.0)
    call.receive_realtime(json.dumps({"type": "session.updated", "session": {}}), 0.0)
    call.receive_realtime(json.dumps({"type": "response.created", "response": {"id": "r"}}), 0.0)
    return call


def per_frame_us(run, frames: int, actions_per_frame: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        actions = run()
        best = min(best, time.perf_counter() - began)
        # Every frame must have gone through, or the figure is that of a dropping call.
        assert actions == frames * actions_per_frame, (actions, frames * actions_per_frame)
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
    )
    delta = json.dumps(
        {
            "type": "response.output_audio.delta",
            "response_id": "r",
            "item_id": "item_0",
            "output_index": 0,
            "content_index": 0,
            "delta": base64.b64encode(model_frame(fmt)).decode(),
        }
    )
    assert len(model_frame(fmt)) == 20 * bytes_per_ms(fmt)

    def caller_to_realtime() -> int:
        call = setup(fmt)
        forwarded = 0
        for n in range(frames):  # 20 ms apart, as on a real line (the flood limits apply)
            forwarded += len(call.receive_twilio(caller_frame, n * 0.020))
        return forwarded

    def realtime_to_caller() -> int:
        # Each delta is followed by its mark's echo, as in a call where playback keeps up.
        call = setup(fmt)
        forwarded = 0
        for n in range(1, frames + 1):
            forwarded += len(call.receive_realtime(delta, n * 0.020))
            call.receive_twilio(
                '{"event":"mark","streamSid":"'
                + STREAM
                + f'","mark":{{"name":"item_0:{n * 160}"}}}}',
                n * 0.020,
            )
        return forwarded

    return per_frame_us(caller_to_realtime, frames, 1), per_frame_us(realtime_to_caller, frames, 2)


def main() -> None:
    print("call core, per 20 ms frame (best of 3):")
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
