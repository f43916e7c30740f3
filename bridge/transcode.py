"""Audio transcoding for the bridge's transcoding mode.

Twilio always speaks G.711 mu-law at 8 kHz. A Realtime backend that wants something else gets
either G.711 a-law 8 kHz (a byte-for-byte code translation) or PCM16: 16-bit little-endian mono
at 24 kHz, the only PCM rate the API takes, which needs a 3:1 resampler each way.

The default mode (mu-law passthrough) never calls into this module.

Resampler design
----------------
Both directions are stateful FIR filters in numpy, one stream per call and direction:

* Up, 8 kHz -> 24 kHz: zero-stuffing by 3 followed by a 72-tap Kaiser-windowed-sinc low-pass
  (6 dB cutoff 3.9 kHz, beta 6.5, gain 3), run as 3 sub-filters of 24 taps over the 8 kHz
  samples, so no multiplications by stuffed zeros are done. Passband within 0.25 dB up to
  3.4 kHz; the images of phone-band speech (at 8 kHz - f, so 4.6 kHz and up) are at least 66 dB
  down. Group delay 35.5 samples at 24 kHz = 1.48 ms.
* Down, 24 kHz -> 8 kHz: a 96-tap Kaiser-windowed-sinc anti-alias low-pass (6 dB cutoff
  3.8 kHz, beta 7.25), of which every 3rd output is kept, the phase carried across chunks (one
  full-rate np.correlate call measured cheaper than 3 strided polyphase calls on 20 ms frames,
  despite the 3x arithmetic: per-call overhead dominates). Passband within 0.25 dB up to
  3.4 kHz, -15 dB at 4 kHz, at least 74 dB down from 4.4 kHz to 12 kHz: the model's 24 kHz voice
  has energy up to 12 kHz that would otherwise fold into the phone band. Group delay 47.5
  samples at 24 kHz = 1.98 ms.
* Round trip (up then down): 83 samples at 24 kHz, i.e. exactly 27 samples at 8 kHz = 3.375 ms.

The lengths are a cost/quality balance: mu-law itself limits SNR to about 38 dB, so stopbands
much past 60-70 dB buy nothing audible, while every tap costs time on each 20 ms frame. Longer
filters would mainly sharpen the 3.4-4.4 kHz transition, which the phone line cuts anyway.

Exactness. The filters run in float64 on integer values only: the samples are 16-bit integers
and the coefficients are rounded to integers in units of 2**-24 (an error near -150 dB). Every
product and every partial sum is then an integer below 2**53, exactly representable, so the
result does not depend on summation order (BLAS dot kernels, SIMD, FMA) or on how the stream was
cut into chunks: feeding audio in any chunking gives byte-identical output. Scaling back by
2**-24 is exact too, and rounding is half-to-even on an exact value.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from bridge.audio import alaw_to_pcm16, mulaw_to_pcm16, pcm16_to_alaw, pcm16_to_mulaw


class AudioFormat(StrEnum):
    PCMU = "pcmu"  # G.711 mu-law 8 kHz (Twilio's format: passthrough)
    PCMA = "pcma"  # G.711 a-law 8 kHz
    PCM16 = "pcm16"  # 16-bit LE mono 24 kHz


_BYTES_PER_MS = {AudioFormat.PCMU: 8, AudioFormat.PCMA: 8, AudioFormat.PCM16: 48}


def bytes_per_ms(fmt: AudioFormat) -> int:
    """Bytes of one millisecond of audio in `fmt` (8, 8, 48)."""
    return _BYTES_PER_MS[fmt]


_RATE = 24_000
_RATIO = 3
_FRAC_BITS = 24
_SCALE = 2.0**-_FRAC_BITS


def _kaiser_lowpass(taps: int, cutoff_hz: float, beta: float, gain: float) -> np.ndarray:
    """Windowed-sinc low-pass at 24 kHz, as integer-valued float64 in units of 2**-24."""
    n = np.arange(taps) - (taps - 1) / 2
    h = np.sinc(2 * cutoff_hz / _RATE * n) * np.kaiser(taps, beta)
    return np.round(h * (gain / h.sum()) * 2**_FRAC_BITS)


# Up: 72 taps = 24 per phase; sub-filter p holds taps p, p+3, p+6, ... reversed, because
# np.correlate slides them over the oldest-first input window. Gain 3 because only every 3rd
# zero-stuffed sample is non-zero: each phase then sums to ~1 and the level is kept.
UP_TAPS = 72
UP_TAPS_PER_PHASE = UP_TAPS // _RATIO
_UP = _kaiser_lowpass(UP_TAPS, 3900.0, 6.5, gain=_RATIO)
_UP_PHASES = tuple(np.ascontiguousarray(_UP[p::_RATIO][::-1]) for p in range(_RATIO))

# Down: 96 taps (symmetric, so correlating equals convolving).
DOWN_TAPS = 96
_DOWN = _kaiser_lowpass(DOWN_TAPS, 3800.0, 7.25, gain=1.0)

# Exactness needs every partial sum of (16-bit sample x integer coefficient) below 2**53.
for _taps in (*_UP_PHASES, _DOWN):
    if 32768 * float(np.abs(_taps).sum()) >= 2.0**53:  # pragma: no cover - a design error
        raise RuntimeError("filter coefficients too large for exact float64 accumulation")

# Round trip delay in 8 kHz samples: (up (72-1)/2 + down (96-1)/2 group delays at 24 kHz,
# less the 2 samples by which a down output's window runs ahead of its 8 kHz slot) / 3.
ROUND_TRIP_DELAY_SAMPLES = ((UP_TAPS - 1) + (DOWN_TAPS - 1) - 2 * 2) // (2 * _RATIO)  # 27

# Down delay: output j's 96-sample window ends at input sample 3j + 2, so it is centred
# (96 - 1) / 2 - 2 = 45.5 samples at 24 kHz behind its own 8 kHz slot. The caller hears the
# model's audio this much later than the mu-law byte count says.
DOWN_DELAY_MS = ((DOWN_TAPS - 1) / 2 - 2) / (_RATE / 1000)  # 1.896 ms

_PCM16 = np.dtype("<i2")
_MAX = np.float64(32767)
_MIN = np.float64(-32768)


def _to_pcm16(acc: np.ndarray) -> bytes:
    """Fixed-point accumulators (in place) to saturated, rounded 16-bit LE PCM."""
    acc *= _SCALE
    np.rint(acc, out=acc)
    # np.clip's Python-level wrapper costs more than the two ufuncs on frame-sized arrays.
    np.minimum(acc, _MAX, out=acc)
    np.maximum(acc, _MIN, out=acc)
    return acc.astype(_PCM16).tobytes()


# G.711 mu-law <-> a-law is a fixed byte-to-byte map: build it once through linear PCM with
# the same helpers, then translate whole frames with bytes.translate (no per-sample work).
_MULAW_TO_ALAW = pcm16_to_alaw(mulaw_to_pcm16(bytes(range(256))))
_ALAW_TO_MULAW = pcm16_to_mulaw(alaw_to_pcm16(bytes(range(256))))


class CallerToBackend:
    """Caller audio (Twilio mu-law 8 kHz) into the backend's format.

    One stateful stream per call.
    """

    __slots__ = ("_fmt", "_history")

    def __init__(self, fmt: AudioFormat) -> None:
        self._fmt = AudioFormat(fmt)
        # The last 23 input samples (zeros before the call starts): what a 24-tap phase
        # filter needs from before the chunk so chunk boundaries add no discontinuity.
        self._history: np.ndarray = np.zeros(UP_TAPS_PER_PHASE - 1)

    def convert(self, mulaw: bytes) -> bytes:
        """Convert a chunk: PCMU unchanged, PCMA 1 byte per byte, PCM16 exactly 6 bytes per byte."""
        if self._fmt is AudioFormat.PCMU or not mulaw:
            return mulaw if mulaw else b""
        if self._fmt is AudioFormat.PCMA:
            return mulaw.translate(_MULAW_TO_ALAW)
        pcm = np.frombuffer(mulaw_to_pcm16(mulaw), _PCM16)
        window = np.concatenate((self._history, pcm))
        self._history = window[len(pcm) :]
        # Output sample 3j+p is phase filter p over the 24 input samples ending at j: one
        # column per phase, read row by row, interleaves the 24 kHz stream.
        acc = np.empty((len(pcm), _RATIO))
        for phase, taps in enumerate(_UP_PHASES):
            acc[:, phase] = np.correlate(window, taps, "valid")
        return _to_pcm16(acc.ravel())


class BackendToCaller:
    """Backend audio into Twilio mu-law 8 kHz.

    One stateful stream per call.
    """

    __slots__ = ("_carry", "_fmt", "_pending", "delay_ms")

    def __init__(self, fmt: AudioFormat) -> None:
        self._fmt = AudioFormat(fmt)
        # How far the mu-law out lags the backend's audio: what a truncation must subtract.
        self.delay_ms = DOWN_DELAY_MS if self._fmt is AudioFormat.PCM16 else 0.0
        self.reset()

    def reset(self) -> None:
        """Forget history, decimation phase and any carried byte (after a barge-in `clear`)."""
        # 93 zeros stand for the samples before the stream: the first output's 96-sample
        # window then ends at input sample 2, so n input samples always give n // 3 outputs.
        self._pending: np.ndarray = np.zeros(DOWN_TAPS - _RATIO)
        self._carry = b""

    def convert(self, data: bytes) -> bytes:
        """Convert a chunk: PCM16 gives one mu-law byte per 3 samples, cumulatively; any byte
        count is accepted (an odd trailing byte waits for the next call). PCMA 1:1, PCMU as is."""
        if self._fmt is AudioFormat.PCMU or not data:
            return data if data else b""
        if self._fmt is AudioFormat.PCMA:
            return data.translate(_ALAW_TO_MULAW)
        if self._carry:
            data = self._carry + data
        if len(data) & 1:
            self._carry = data[-1:]
            data = data[:-1]
        else:
            self._carry = b""
        if not data:
            return b""
        x = np.concatenate((self._pending, np.frombuffer(data, _PCM16)))
        outputs = (len(x) - DOWN_TAPS) // _RATIO + 1
        if outputs <= 0:
            self._pending = x
            return b""
        consumed = outputs * _RATIO
        # Keep the unconsumed tail: the next output's whole window, which also carries the
        # decimation phase across calls.
        self._pending = x[consumed:]
        # Every 24 kHz position is evaluated and every 3rd kept (see the module docstring).
        acc = np.correlate(x[: consumed - _RATIO + DOWN_TAPS], _DOWN, "valid")[::_RATIO]
        return pcm16_to_mulaw(_to_pcm16(acc))
