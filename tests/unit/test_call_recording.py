"""The bridge's recorder without sockets: where audio lands in the WAV, whatever the gaps,
and that the file keeps the call's own length; FLAC and Opus hold the same call."""

from __future__ import annotations

import base64
import logging
import os
import wave
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import soundfile

from bridge import call_recording
from bridge.audio import pcm16_to_mulaw, synthetic_speech_mulaw
from bridge.call_recording import CallRecorder, media_type_of, recording_file
from bridge.records.model import Recording

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


SUFFIXES = [".wav", ".flac", ".ogg"]  # RECORDING_FORMAT wav, flac, opus


@pytest.mark.parametrize("suffix", SUFFIXES)
async def test_a_recording_is_readable_by_this_user_only(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"call{suffix}"
    recorder = CallRecorder(path, started_at=0.0)
    recorder.caller(FRAME, 0.02)
    assert (await recorder.finish()).status == "completed"
    assert path.stat().st_mode & 0o777 == 0o600


def b64(mulaw: bytes) -> str:
    return base64.b64encode(mulaw).decode()


async def record_a_call(path: Path) -> np.ndarray:
    """A 6 s call to `path` (its suffix says the format), written second by second as the
    bridge does: the caller speaking throughout; an answer in 100 ms chunks from 1 s, cut
    by a barge-in at 2.45 s. Its samples, decoded, a row (left, right) each."""
    recorder = CallRecorder(path, started_at=0.0)
    caller = synthetic_speech_mulaw(6000, seed=1)
    answer = synthetic_speech_mulaw(2000, seed=2)
    messages: list[tuple[float, Callable[[], None]]] = []
    for k in range(len(caller) // 160):
        at = (k + 1) * 0.02
        messages.append((at, partial(recorder.caller, b64(caller[k * 160 : (k + 1) * 160]), at)))
    for k in range(len(answer) // 800):
        sent_at, played_at = 0.95 + k * 0.025, 1.0 + (k + 1) * 0.1
        if sent_at < 2.45:  # (none is sent after the barge-in)
            chunk = b64(answer[k * 800 : (k + 1) * 800])
            messages.append((sent_at, partial(recorder.sent, chunk, f"a:{k}", sent_at)))
            echo_at = played_at if played_at <= 2.45 else 2.46  # (cleared: echoed at once)
            messages.append((echo_at, partial(recorder.played, f"a:{k}", echo_at)))
    messages.append((2.45, partial(recorder.cleared, 2.45)))
    flushed = 0
    for at, message in sorted(messages, key=lambda m: m[0]):
        if int(at) > flushed:  # once a second, as `run` does
            flushed = int(at)
            await recorder.flush(flushed)
        message()
    assert (await recorder.finish()).status == "completed"
    samples, rate = soundfile.read(path, dtype="int16")
    assert rate == 8000 and samples.shape[1] == 2
    return samples


async def test_flac_decodes_to_exactly_what_the_wav_holds(tmp_path: Path) -> None:
    wav = await record_a_call(tmp_path / "call.wav")
    flac = await record_a_call(tmp_path / "call.flac")
    assert np.array_equal(flac, wav)  # lossless: the same samples, both channels
    assert (tmp_path / "call.flac").stat().st_size < (tmp_path / "call.wav").stat().st_size
    heard = np.flatnonzero(np.abs(wav[:, 1].astype(np.int32)) > 1000)
    assert 8000 <= heard[0] < 8080 and 19500 < heard[-1] < 19600  # (1 s to the cut, 2.45 s)


def offset_samples(reference: np.ndarray, other: np.ndarray, most: int = 160) -> int:
    """How many samples later `other` holds `reference`'s audio: the lag, within `most`
    either way, at which they correlate best."""
    middle = reference[most:-most].astype(np.float64)
    scores = [
        float(np.dot(middle, other[most + lag : len(other) - most + lag].astype(np.float64)))
        for lag in range(-most, most + 1)
    ]
    return int(np.argmax(scores)) - most


async def test_opus_keeps_the_call_length_and_both_channels_on_its_clock(
    tmp_path: Path,
) -> None:
    """Opus is lossy, but what it holds plays where the WAV has it: libsndfile writes the
    encoder's lookahead as the pre-skip, cut at decoding, and pads the last 20 ms packet,
    cut by the end's granule position."""
    wav = await record_a_call(tmp_path / "call.wav")
    opus = await record_a_call(tmp_path / "call.ogg")
    assert len(opus) == len(wav) == 6 * 8000
    for channel in (0, 1):
        # Measured: 0 samples either channel; a sample (0.125 ms) of slack for the codec.
        assert abs(offset_samples(wav[:, channel], opus[:, channel])) <= 1, channel
        likeness = np.corrcoef(wav[:, channel], opus[:, channel])[0, 1]
        assert likeness > 0.95, (channel, likeness)  # the same audio, not only aligned
    assert (tmp_path / "call.ogg").stat().st_size < (tmp_path / "call.wav").stat().st_size / 4


@pytest.mark.parametrize("suffix", SUFFIXES)
async def test_a_full_disk_costs_the_recording_with_one_line_naming_why(
    tmp_path: Path,
    suffix: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / f"call{suffix}"
    os.symlink("/dev/full", path)  # every write: "No space left on device"
    recorder = CallRecorder(path, started_at=0.0)
    with caplog.at_level(logging.ERROR, logger="bridge.call_recording"):
        for k in range(100):
            recorder.caller(FRAME, (k + 1) * 0.02)
        await recorder.flush(2.0)
        recorder.caller(FRAME, 2.02)  # (after the failure: dropped, never raised)
        recording = await recorder.finish()
    assert recording.status == "failed" and recording.url == path.name
    assert "No space left on device" in recording.error, recording.error
    assert len(caplog.records) == 1, caplog.records
    assert "the call goes on" in caplog.records[0].getMessage()
    # Nothing raised inside libsndfile's callbacks (it would print a traceback there).
    assert capfd.readouterr().err == ""


def test_a_recording_is_found_by_the_name_its_record_keeps_whatever_its_format(
    tmp_path: Path,
) -> None:
    for name, media_type in (
        ("CA1.wav", "audio/wav"),  # (records from before FLAC and Opus too)
        ("CA1.flac", "audio/flac"),
        ("CA1.ogg", "audio/ogg"),
    ):
        path = recording_file(tmp_path, Recording("bridge", "completed", url=name))
        assert path == tmp_path / name and media_type_of(path) == media_type
    for name in ("CA1.mp3", "../CA1.wav", ".wav", "CA1"):
        assert recording_file(tmp_path, Recording("bridge", "completed", url=name)) is None


async def test_a_compressed_recording_without_cpu_to_encode_fails_and_wav_does_not_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every encoding slot taken (the CPUs given to encoding are busy): a FLAC or Opus
    recording waits for one, up to the deadline, then fails saying so; a WAV recording
    needs no slot and is written meanwhile."""
    monkeypatch.setattr(call_recording, "WRITE_DEADLINE_S", 0.3)
    slots = call_recording._ENCODING
    taken = 0
    while slots.acquire(blocking=False):
        taken += 1
    try:
        recordings = {}
        for suffix in (".wav", ".flac", ".ogg"):
            recorder = CallRecorder(tmp_path / f"call{suffix}", started_at=0.0)
            for k in range(100):
                recorder.caller(FRAME, (k + 1) * 0.02)
            await recorder.flush(2.0)
            recordings[suffix] = await recorder.finish()
    finally:
        for _ in range(taken):
            slots.release()
    assert recordings[".wav"].status == "completed"
    for suffix in (".flac", ".ogg"):
        assert recordings[suffix].status == "failed"
        assert recordings[suffix].error == (
            "could not be written: not done within 0.3 s (a slow disk, or too little CPU to encode)"
        )
