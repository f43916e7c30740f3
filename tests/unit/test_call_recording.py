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


def chunk_of(ms: int) -> str:
    return base64.b64encode(pcm16_to_mulaw(np.full(ms * 8, 8000, np.int16).tobytes())).decode()


def channels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with wave.open(str(path), "rb") as wav:
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).reshape(-1, 2)
    return frames[:, 0], frames[:, 1]


async def test_a_silence_longer_than_the_window_keeps_the_call_on_its_own_clock(
    tmp_path: Path,
) -> None:
    recorder = CallRecorder(tmp_path / "call.wav", started_at=100.0)
    for k in range(50):  # 1 s of caller audio (the rest of their frames lost on the way)
        recorder.caller(FRAME, 100.02 + k * 0.02)
    recorder.sent(chunk_of(1000), "a:1", 110.0)  # an answer 10 s in
    recorder.played("a:1", 111.0)
    recording = await recorder.finish()
    assert recording.status == "completed" and recording.duration_s == 11
    caller, assistant = channels(tmp_path / "call.wav")
    assert len(caller) == 11 * 8000
    assert (np.abs(caller[:8000].astype(np.int32)) > 4000).all() and not caller[8000:].any()
    heard = np.flatnonzero(np.abs(assistant.astype(np.int32)) > 4000)
    assert (heard[0], len(heard)) == (80000, 8000)


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


async def test_queued_chunks_play_back_to_back_however_late_their_marks_come(
    tmp_path: Path,
) -> None:
    recorder = CallRecorder(tmp_path / "call.wav", started_at=0.0)
    for k in range(5):
        recorder.sent(chunk_of(100), f"a:{k}", 1.0)  # all queued at Twilio at once
    for k, late_ms in enumerate([0, 50, 0, 30, 0]):  # echoes 1.1, 1.2, ... some late
        recorder.played(f"a:{k}", 1.1 + k * 0.1 + late_ms / 1000)
    await recorder.finish()
    _, assistant = channels(tmp_path / "call.wav")
    heard = np.flatnonzero(np.abs(assistant.astype(np.int32)) > 4000)
    assert (heard[0], heard[-1] + 1, len(heard)) == (8000, 12000, 4000)  # no gap, no overlap


async def test_a_chunk_longer_than_the_window_is_kept_whole(tmp_path: Path) -> None:
    recorder = CallRecorder(tmp_path / "call.wav", started_at=0.0)
    recorder.sent(chunk_of(6000), "a:1", 0.5)  # 6 s in one delta
    for k in range(400):  # the caller, 8 s meanwhile
        recorder.caller(FRAME, k * 0.02)
    recorder.played("a:1", 6.5)
    recording = await recorder.finish()
    assert recording.status == "completed"
    _, assistant = channels(tmp_path / "call.wav")
    heard = np.flatnonzero(np.abs(assistant.astype(np.int32)) > 4000)
    assert (heard[0], len(heard)) == (4000, 48000)


async def test_a_caller_frame_that_arrives_late_keeps_its_place_in_the_stream(
    tmp_path: Path,
) -> None:
    recorder = CallRecorder(tmp_path / "call.wav", started_at=0.0)
    for k in range(100):  # 2 s of frames; the event loop stalled 0.5 s after the first
        recorder.caller(FRAME, 0.02 + k * 0.02 + (0.5 if k > 0 else 0.0))
    recording = await recorder.finish()
    assert recording.duration_s == 2
    caller, _ = channels(tmp_path / "call.wav")
    assert len(caller) == 16000 and (np.abs(caller.astype(np.int32)) > 4000).all()


async def test_a_recording_is_readable_by_this_user_only(tmp_path: Path) -> None:
    recorder = CallRecorder(tmp_path / "call.wav", started_at=0.0)
    recorder.caller(FRAME, 0.02)
    await recorder.finish()
    assert (tmp_path / "call.wav").stat().st_mode & 0o777 == 0o600
