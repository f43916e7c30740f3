"""The recording formats (RECORDING_FORMAT): disk per minute of call, and CPU per call-second.

Drives the bridge's own CallRecorder through one simulated call, fed faster than real time
on the call's own clock and flushed once a call-second as `CallRecorder.run` does: the
caller's 20 ms frames throughout (speech, line noise between), the assistant's answers
sent in 100 ms chunks ahead of their playback and placed by their marks, every third one
cut by the caller talking over it. The same call in each format, several times over,
interleaved.

- MB per minute: the file's size per minute of call.
- writer CPU: the recorder thread's own CPU time (time.thread_time, taken in that thread,
  so other load on the machine does not count) per second of call: what the format costs.
- recorder CPU: the process's CPU time over the run (decoding and placing the audio too)
  per second of call, for scale against the whole bridge's per call-second.
- And two checks: FLAC decodes to the WAV's samples exactly; Opus puts each channel where
  the WAV has it (the offset by cross-correlation, and the decoded length).

Run: .venv/bin/python bench/recording_formats.py [--minutes 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from bridge.audio import MULAW_RATE, float_to_pcm16, pcm16_to_mulaw, synthetic_speech
from bridge.call_recording import RECORDING_FORMATS, CallRecorder

FRAME_S = 0.02  # the caller's frames, as Twilio streams them
CHUNK_S = 0.1  # an answer's audio as the bridge sends it, a mark after each chunk
SENT_AHEAD_X = 4  # answers reach Twilio this many times faster than they play
QUIET_LINE = 0.001  # the caller's line between their words: noise at -60 dBFS
NOISY_LINE = 0.01  # and a noisy one (-40 dBFS)
MAX_LAG_S = 0.05  # how far the Opus offset is searched, either way


@dataclass(frozen=True, slots=True)
class Message:
    at: float  # s since the stream started
    kind: str  # "caller", "sent", "played", "cleared"
    payload: str = ""
    mark: str = ""


def b64(mulaw: bytes) -> str:
    return base64.b64encode(mulaw).decode()


def conversation(seconds: float, seed: int = 0) -> list[Message]:
    """A call of `seconds`: turns of caller speech and answers, every third answer cut."""
    rng = np.random.default_rng(seed)
    caller = rng.normal(0.0, QUIET_LINE, int(seconds * MULAW_RATE))
    messages: list[Message] = []
    at, turn = 0.5, 0
    while at < seconds - 1:
        said = rng.uniform(1.5, 4.0)
        start = int(at * MULAW_RATE)
        speech = synthetic_speech(int(said * 1000), seed=2 * turn)[: len(caller) - start]
        caller[start : start + len(speech)] += speech
        answer_at = at + said + 0.7  # the model's answer begins to play
        if answer_at > seconds - 1:
            break
        answer_s = min(rng.uniform(2.0, 8.0), seconds - answer_at)
        cut_at = answer_at + answer_s / 2 if turn % 3 == 2 else None
        messages += answer(answer_at, answer_s, cut_at, seed=2 * turn + 1, turn=turn)
        at = cut_at if cut_at is not None else answer_at + answer_s + rng.uniform(0.5, 1.5)
        turn += 1
    return in_order(messages + caller_frames(caller))


def both_talking(seconds: float, seed: int = 0) -> list[Message]:
    """The size's worst case: both channels speech all along, on a noisy line (-40 dBFS)."""
    rng = np.random.default_rng(seed)
    caller = np.concatenate([synthetic_speech(4000, seed=k) for k in range(int(seconds / 4))])
    caller += rng.normal(0.0, NOISY_LINE, len(caller))
    messages = [
        m
        for turn in range(int(seconds / 4))
        for m in answer(turn * 4.0, 4.0, None, seed=1000 + turn, turn=turn)
    ]
    return in_order(messages + caller_frames(caller))


def in_order(messages: list[Message]) -> list[Message]:
    return sorted(messages, key=lambda m: m.at)


def caller_frames(caller: np.ndarray) -> list[Message]:
    """The caller's audio as Twilio streams it: a 20 ms frame as soon as it was said."""
    mulaw = pcm16_to_mulaw(float_to_pcm16(caller))
    size = int(FRAME_S * MULAW_RATE)
    return [
        Message((k + 1) * FRAME_S, "caller", b64(mulaw[k * size : (k + 1) * size]))
        for k in range(len(mulaw) // size)
    ]


def answer(at: float, seconds: float, cut_at: float | None, seed: int, turn: int) -> list[Message]:
    """An answer playing from `at`, chunk after chunk, cut at `cut_at` (the clear; Twilio
    echoes the marks of what it drops)."""
    mulaw = pcm16_to_mulaw(float_to_pcm16(synthetic_speech(int(seconds * 1000), seed=seed)))
    size = int(CHUNK_S * MULAW_RATE)
    messages = []
    for k in range(len(mulaw) // size):
        sent_at = at - 0.05 + k * CHUNK_S / SENT_AHEAD_X
        if cut_at is not None and sent_at >= cut_at:
            break  # the bridge stops sending at the barge-in
        mark = f"{turn}:{k}"
        messages.append(Message(sent_at, "sent", b64(mulaw[k * size : (k + 1) * size]), mark))
        played_at = at + (k + 1) * CHUNK_S
        if cut_at is not None and played_at > cut_at:
            played_at = cut_at + 0.01
        messages.append(Message(played_at, "played", mark=mark))
    if cut_at is not None:
        messages.append(Message(cut_at, "cleared"))
    return messages


@dataclass(frozen=True, slots=True)
class Run:
    size: int  # bytes
    seconds: float  # the recording's length
    writer_cpu_s: float
    process_cpu_s: float

    def mb_per_minute(self) -> float:
        return self.size / 1e6 / (self.seconds / 60)

    def writer_ms_per_s(self) -> float:
        return self.writer_cpu_s * 1000 / self.seconds

    def process_ms_per_s(self) -> float:
        return self.process_cpu_s * 1000 / self.seconds


async def record(messages: list[Message], path: Path) -> Run:
    """The call recorded to `path` (its suffix says the format)."""
    recorder = CallRecorder(path, started_at=0.0)
    began = time.process_time()
    flush_at = 1.0
    for message in messages:
        while message.at >= flush_at:
            await recorder.flush(flush_at)
            flush_at += 1.0
        if message.kind == "caller":
            recorder.caller(message.payload, message.at)
        elif message.kind == "sent":
            recorder.sent(message.payload, message.mark, message.at)
        elif message.kind == "played":
            recorder.played(message.mark, message.at)
        else:
            recorder.cleared(message.at)
    recording = await recorder.finish()
    process_cpu_s = time.process_time() - began
    assert recording.status == "completed", recording
    seconds = soundfile.info(str(path)).frames / MULAW_RATE
    return Run(path.stat().st_size, seconds, recorder.writer_cpu_s, process_cpu_s)


def decoded(path: Path) -> np.ndarray:
    samples, rate = soundfile.read(path, dtype="int16")
    assert rate == MULAW_RATE, rate
    return samples


def offset_samples(reference: np.ndarray, other: np.ndarray) -> int:
    """How many samples later `other` has `reference`'s audio (by cross-correlation)."""
    n = len(reference) + len(other)
    spectrum = np.fft.rfft(other.astype(np.float64), n) * np.conj(
        np.fft.rfft(reference.astype(np.float64), n)
    )
    correlation = np.fft.irfft(spectrum, n)
    most = int(MAX_LAG_S * MULAW_RATE)
    lags = np.arange(-most, most + 1)
    return int(lags[np.argmax(correlation[lags])])


def median(runs: list[Run], figure: Callable[[Run], float]) -> float:
    return statistics.median(figure(run) for run in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="the call's length")
    parser.add_argument("--repeats", type=int, default=3, help="runs per format (median)")
    args = parser.parse_args()
    talk = conversation(args.minutes * 60)
    busy = both_talking(args.minutes * 60)
    formats = list(RECORDING_FORMATS.values())
    runs: dict[str, list[Run]] = {f.name: [] for f in formats}
    with tempfile.TemporaryDirectory() as folder:
        paths = {f.name: Path(folder) / f"call{f.suffix}" for f in formats}
        busy_runs = {f.name: asyncio.run(record(busy, paths[f.name])) for f in formats}
        for _ in range(args.repeats):  # interleaved: a burst of load hits every format
            for f in formats:
                runs[f.name].append(asyncio.run(record(talk, paths[f.name])))
        wav, flac, opus = (decoded(paths[name]) for name in ("wav", "flac", "opus"))

    print(
        f"A {args.minutes:g} min call, {args.repeats} runs per format (the median); Python "
        f"{platform.python_version()}, libsndfile {soundfile.__libsndfile_version__}, "
        f"{os.cpu_count()} CPUs"
    )
    print()
    print(
        "| format | file | MB per minute: conversation | both talking throughout "
        "| writer CPU, ms per call-second | recorder CPU (all), ms per call-second |"
    )
    print("|---|---|---|---|---|---|")
    wav_size = median(runs["wav"], Run.mb_per_minute)
    wav_busy = busy_runs["wav"].mb_per_minute()
    for f in formats:
        size = median(runs[f.name], Run.mb_per_minute)
        busy_size = busy_runs[f.name].mb_per_minute()
        print(
            f"| {f.name} | CallSid{f.suffix} | {size:.3f} ({size / wav_size:.2f}x) "
            f"| {busy_size:.3f} ({busy_size / wav_busy:.2f}x) "
            f"| {median(runs[f.name], Run.writer_ms_per_s):.3f} "
            f"| {median(runs[f.name], Run.process_ms_per_s):.3f} |"
        )
    print()
    lossless = "yes" if np.array_equal(flac, wav) else "NO"
    print(f"FLAC decodes to the WAV's samples exactly: {lossless}")
    offsets = [offset_samples(wav[:, channel], opus[:, channel]) for channel in (0, 1)]
    print(
        f"Opus against the WAV: left {offsets[0]:+d}, right {offsets[1]:+d} samples "
        f"(1 sample: 0.125 ms); decoded length {len(opus)}, the WAV's {len(wav)}"
    )


if __name__ == "__main__":
    main()
