"""The bridge's recorder without sockets: where audio lands in the WAV, whatever the gaps,
and that the file keeps the call's own length."""

from __future__ import annotations

import base64
import wave
from pathlib import Path

import numpy as np

from bridge.audio import pcm16_to_mulaw
from bridge.call_recording import CallRecorder

TONE = np.full(160, 8000, dtype=np.int16)  # 20 ms, loud
FRAME = base64.b64encode(pcm16_to_mulaw(TONE.tobytes())).decode()


def channels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with wave.open(str(path), "rb") as wav:
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).reshape(-1, 2)
    return frames[:, 0], frames[:, 1]


async def test_a_silence_longer_than_the_window_keeps_the_call_on_its_own_clock(
    tmp_path: Path,
) -> None:
    recorder = CallRecorder(tmp_path / "call.wav", started_at=100.0)
    for k in range(50):  # 1 s of caller audio, then 9 s with nothing, then 1 s more
        recorder.caller(FRAME, 100.02 + k * 0.02)
    for k in range(50):
        recorder.caller(FRAME, 110.02 + k * 0.02)
    recording = await recorder.finish()
    assert recording.status == "completed" and recording.duration_s == 11
    caller, assistant = channels(tmp_path / "call.wav")
    assert len(caller) == 11 * 8000
    loud = np.abs(caller.astype(np.int32)) > 4000
    assert loud[:8000].all() and not loud[8000 : 10 * 8000].any() and loud[10 * 8000 :].all()
    assert not assistant.any()


async def test_a_chunk_is_heard_where_its_mark_came_back_and_cut_at_the_clear(
    tmp_path: Path,
) -> None:
    recorder = CallRecorder(tmp_path / "call.wav", started_at=0.0)
    chunk = base64.b64encode(pcm16_to_mulaw(np.full(800, 8000, np.int16).tobytes())).decode()
    recorder.sent(chunk, "a:800", 1.0)  # 100 ms each, queued at once
    recorder.sent(chunk, "a:1600", 1.0)
    recorder.sent(chunk, "a:2400", 1.0)
    recorder.played("a:800", 1.1)  # played 1.0-1.1 s
    recorder.cleared(1.15)  # the second, half heard; the third never
    recorder.played("a:1600", 1.16)  # (Twilio's echoes of what the clear dropped)
    recorder.played("a:2400", 1.16)
    recorder.caller(FRAME, 2.0)  # (the call goes on a little)
    await recorder.finish()
    _, assistant = channels(tmp_path / "call.wav")
    heard = np.flatnonzero(np.abs(assistant.astype(np.int32)) > 4000)
    assert (heard[0], heard[-1] + 1) == (8000, 9200)  # 1.0 s to 1.15 s, nothing after
