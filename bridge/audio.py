"""Audio helpers used off the hot path: by the local agent, the simulator and tests.

The bridge itself never decodes audio in mu-law passthrough; these functions exist for the
pieces that must look inside the sound (voice activity detection, WAV files, synthetic speech).
"""

from __future__ import annotations

import math
import warnings
import wave
from pathlib import Path

import numpy as np

with warnings.catch_warnings():
    # stdlib audioop is deprecated on 3.11/3.12 and replaced by audioop-lts on 3.13+.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

MULAW_RATE = 8000
MULAW_BYTES_PER_MS = MULAW_RATE // 1000  # 8: one byte per sample at 8 kHz
MULAW_SILENCE = b"\xff"  # mu-law code for 0 (0x7f is the other zero)
TWILIO_FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law, Twilio's frame size


def mulaw_to_pcm16(data: bytes) -> bytes:
    return audioop.ulaw2lin(data, 2)


def pcm16_to_mulaw(data: bytes) -> bytes:
    return audioop.lin2ulaw(data, 2)


def alaw_to_pcm16(data: bytes) -> bytes:
    return audioop.alaw2lin(data, 2)


def pcm16_to_alaw(data: bytes) -> bytes:
    return audioop.lin2alaw(data, 2)


def rms_dbfs(pcm16: bytes) -> float:
    """Level of 16-bit PCM in dB relative to full scale (-inf for digital silence)."""
    if not pcm16:
        return -math.inf
    rms = audioop.rms(pcm16, 2)
    return 20 * math.log10(rms / 32768) if rms else -math.inf


def mulaw_silence(ms: int) -> bytes:
    return MULAW_SILENCE * (ms * MULAW_BYTES_PER_MS)


def synthetic_speech(ms: int, seed: int = 0, rate: int = MULAW_RATE) -> np.ndarray:
    """A speech-like test signal as float samples in [-1, 1].

    Voiced harmonics over a gliding pitch, shaped into syllables of ~200 ms: loud enough for
    any energy VAD, band-limited to the telephone band, and deterministic for a given seed.
    """
    rng = np.random.default_rng(seed)
    n = int(rate * ms / 1000)
    t = np.arange(n) / rate
    f0 = 110 + 60 * rng.random() + 25 * np.sin(2 * np.pi * (0.7 + rng.random()) * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 12) if k * 230 < rate / 2)
    syllable_hz = 4 + rng.random()
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * syllable_hz * t - np.pi / 2) ** 2
    # 10 ms fades keep the ends click-free.
    fade = min(n // 2, rate // 100)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        envelope[:fade] *= ramp
        envelope[n - fade :] *= ramp[::-1]
    signal = voice * envelope
    peak = float(np.max(np.abs(signal))) or 1.0
    return 0.5 * signal / peak


def float_to_pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def synthetic_speech_mulaw(ms: int, seed: int = 0) -> bytes:
    return pcm16_to_mulaw(float_to_pcm16(synthetic_speech(ms, seed)))


def read_wav_as_mulaw(path: str | Path) -> bytes:
    """Read a PCM WAV (any rate, mono or stereo, 8/16-bit) as 8 kHz mu-law."""
    with wave.open(str(path), "rb") as wav:
        channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
        frames = wav.readframes(wav.getnframes())
    if width not in (1, 2):
        raise ValueError(f"{path}: {width * 8}-bit WAV is not supported; use 8- or 16-bit PCM")
    if width == 1:
        frames = audioop.bias(frames, 1, -128)  # WAV 8-bit is unsigned
        frames = audioop.lin2lin(frames, 1, 2)
    if channels == 2:
        frames = audioop.tomono(frames, 2, 0.5, 0.5)
    elif channels != 1:
        raise ValueError(f"{path}: {channels}-channel WAV is not supported")
    if rate != MULAW_RATE:
        frames, _ = audioop.ratecv(frames, 2, 1, rate, MULAW_RATE, None)
    return pcm16_to_mulaw(frames)


def write_mulaw_wav(path: str | Path, mulaw: bytes) -> None:
    """Write 8 kHz mu-law audio as a 16-bit PCM WAV that any player opens."""
    # The file is opened first: a path that cannot be written then fails here, with an
    # OSError, not inside wave's writer (whose cleanup on a failed open prints a traceback).
    with open(path, "wb") as file, wave.open(file, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(MULAW_RATE)
        wav.writeframes(mulaw_to_pcm16(mulaw))
