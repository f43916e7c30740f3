"""Audio formats the Realtime API speaks, and conversion between them.

Canonical names used inside the agent: ``pcmu`` (G.711 mu-law 8 kHz), ``pcma`` (G.711 a-law
8 kHz) and ``pcm16`` (16-bit little-endian mono at 24 kHz, the only PCM rate the API takes).
"""

from __future__ import annotations

import warnings

from bridge.audio import (
    alaw_to_pcm16,
    mulaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_mulaw,
    rms_dbfs,
)

with warnings.catch_warnings():
    # Same reason as bridge.audio: stdlib audioop is deprecated on 3.11/3.12 (audioop-lts on 3.13+).
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

PCMU = "pcmu"
PCMA = "pcma"
PCM16 = "pcm16"
FORMATS = (PCMU, PCMA, PCM16)

PCM16_RATE = 24000
G711_RATE = 8000

# GA: {"type": "audio/pcmu"}; beta: "g711_ulaw". Both map to one canonical name.
GA_FORMAT_TYPES = {"audio/pcm": PCM16, "audio/pcmu": PCMU, "audio/pcma": PCMA}
BETA_FORMAT_NAMES = {"pcm16": PCM16, "g711_ulaw": PCMU, "g711_alaw": PCMA}


def bytes_per_ms(fmt: str) -> int:
    """8 for G.711 (one byte per sample at 8 kHz), 48 for pcm16 (two bytes at 24 kHz)."""
    return 48 if fmt == PCM16 else 8


def sample_width(fmt: str) -> int:
    return 2 if fmt == PCM16 else 1


def rate(fmt: str) -> int:
    return PCM16_RATE if fmt == PCM16 else G711_RATE


def to_ga(fmt: str) -> dict[str, object]:
    if fmt == PCM16:
        return {"type": "audio/pcm", "rate": PCM16_RATE}
    return {"type": "audio/pcmu" if fmt == PCMU else "audio/pcma"}


def to_beta(fmt: str) -> str:
    return {PCM16: "pcm16", PCMU: "g711_ulaw", PCMA: "g711_alaw"}[fmt]


def decode_to_pcm16(data: bytes, fmt: str) -> bytes:
    """Linear 16-bit samples at the format's own rate."""
    if fmt == PCMU:
        return mulaw_to_pcm16(data)
    if fmt == PCMA:
        return alaw_to_pcm16(data)
    return data[: len(data) - len(data) % 2]


def level_dbfs(frame: bytes, fmt: str) -> float:
    return rms_dbfs(decode_to_pcm16(frame, fmt))


def convert(data: bytes, src: str, dst: str) -> bytes:
    """Re-encode audio from one Realtime format into another, via 16-bit PCM.

    Same format in and out returns the bytes untouched, so an echo in the caller's own
    format is bit-exact.
    """
    if src == dst or not data:
        return bytes(data)
    pcm = decode_to_pcm16(data, src)
    if rate(src) != rate(dst):
        pcm, _ = audioop.ratecv(pcm, 2, 1, rate(src), rate(dst), None)
    if dst == PCMU:
        return pcm16_to_mulaw(pcm)
    if dst == PCMA:
        return pcm16_to_alaw(pcm)
    return pcm
