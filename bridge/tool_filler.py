"""The sound a caller hears while a slow tool runs (TOOL_FILLER_MS): soft, not speech.

Either the operator's own file (TOOL_FILLER_FILE: a WAV, or raw 8 kHz mu-law `.ulaw`) or
a generated one: a quiet, irregular tapping, like someone typing a few desks away. It is
made once, at start, as 8 kHz mu-law the call core queues to Twilio in a loop; the core
never decodes it.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from bridge.audio import MULAW_RATE, float_to_pcm16, pcm16_to_mulaw, read_wav_as_mulaw

LOOP_S = 2.0  # the generated loop: long enough not to sound like a metronome
LEVEL = 0.03  # peak amplitude of a tap (about -30 dBFS): heard, never in the way
MAX_FILE_S = 60.0  # a longer file is cut: a filler loops, and it is held in memory per call
MIN_FILE_MS = 200


class FillerError(ValueError):
    """A TOOL_FILLER_FILE that cannot be used; the message is one line."""


def generated_filler(seed: int = 7) -> bytes:
    """Soft taps at irregular times over LOOP_S, as 8 kHz mu-law."""
    rng = np.random.default_rng(seed)
    samples = np.zeros(int(LOOP_S * MULAW_RATE))
    tap_len = int(0.012 * MULAW_RATE)  # 12 ms
    envelope = np.exp(-np.linspace(0.0, 6.0, tap_len))
    # Each tap: a short burst of noise, smoothed so it is a tap, not a hiss.
    kernel = np.ones(4) / 4
    at = 0.05
    while at < LOOP_S - 0.05:
        start = int(at * MULAW_RATE)
        burst = np.convolve(rng.standard_normal(tap_len), kernel, mode="same") * envelope
        burst *= LEVEL * rng.uniform(0.6, 1.0) / max(np.max(np.abs(burst)), 1e-9)
        samples[start : start + tap_len] += burst
        at += rng.uniform(0.11, 0.32)
    return pcm16_to_mulaw(float_to_pcm16(samples))


def load_filler(path: str | None) -> bytes:
    """The operator's filler, or the generated one when `path` is None."""
    if path is None:
        return generated_filler()
    file = Path(path)
    try:
        if file.suffix.lower() in (".ulaw", ".mulaw", ".raw"):
            audio = file.read_bytes()[: int(MAX_FILE_S * MULAW_RATE)]
        else:
            audio = read_wav_as_mulaw(file)[: int(MAX_FILE_S * MULAW_RATE)]
    except (OSError, EOFError, ValueError, wave.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise FillerError(f"cannot read {path}: {reason}") from None
    if len(audio) < MIN_FILE_MS * MULAW_RATE // 1000:
        raise FillerError(f"{path} holds less than {MIN_FILE_MS} ms of audio")
    return audio
