"""Cost and quality of the transcoding-mode audio paths, per 20 ms frame, each way.

caller -> backend: 160 mu-law bytes (8 kHz) into the backend's format (24 kHz PCM16: 960 bytes).
backend -> caller: 20 ms of the backend's format (960 bytes of 24 kHz PCM16) into 160 mu-law bytes.

Rows: mu-law passthrough (the default mode's baseline), a-law, our numpy FIR (bridge.transcode),
stdlib audioop.ratecv (audioop-lts on 3.13+) and python-soxr's ResampleStream when installed
(`.venv/bin/pip install soxr`; it is not a runtime dependency). Quality is measured on the same
signals for every row. Prints figures only; never asserts on wall-clock time.

Run: .venv/bin/python bench/resamplers.py
"""

from __future__ import annotations

import base64
import math
import time
import warnings
from collections.abc import Callable
from typing import Protocol

import numpy as np

from bridge.audio import float_to_pcm16, mulaw_to_pcm16, pcm16_to_mulaw, synthetic_speech
from bridge.transcode import AudioFormat, BackendToCaller, CallerToBackend

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

try:
    import soxr
except ImportError:  # pragma: no cover - depends on the environment
    soxr = None

FRAMES = 20_000
REPEATS = 5
UP_FRAME = 160  # 20 ms of 8 kHz mu-law
DOWN_FRAME = 960  # 20 ms of 24 kHz PCM16


class Stream(Protocol):
    def convert(self, data: bytes) -> bytes: ...
    def flush(self) -> bytes: ...


class Row:
    """One way of doing the job: a factory of fresh streams per direction."""

    def __init__(
        self,
        name: str,
        up: Callable[[], Stream],
        down: Callable[[], Stream],
        backend_rate: int,
        backend_width: int,
    ) -> None:
        self.name = name
        self.up = up
        self.down = down
        self.backend_rate = backend_rate  # 8000 for passthrough and a-law
        self.backend_width = backend_width  # bytes per backend sample: 1 for G.711, 2 for PCM16

    @property
    def resamples(self) -> bool:
        return self.backend_rate != 8000

    @property
    def backend_frame(self) -> int:
        """Bytes of 20 ms of the backend's format."""
        return self.backend_rate // 50 * self.backend_width


class Ours:
    def __init__(self, direction: type[CallerToBackend | BackendToCaller], fmt: AudioFormat):
        self._stream = direction(fmt)
        self.convert = self._stream.convert

    def flush(self) -> bytes:
        return b""  # nothing held back but at most 2 input samples of decimation phase


class RatecvUp:
    def __init__(self) -> None:
        self._state: object = None

    def convert(self, data: bytes) -> bytes:
        out, self._state = audioop.ratecv(audioop.ulaw2lin(data, 2), 2, 1, 8000, 24000, self._state)
        return out

    def flush(self) -> bytes:
        return b""


class RatecvDown:
    def __init__(self) -> None:
        self._state: object = None

    def convert(self, data: bytes) -> bytes:
        out, self._state = audioop.ratecv(data, 2, 1, 24000, 8000, self._state)
        return audioop.lin2ulaw(out, 2)

    def flush(self) -> bytes:
        return b""


class SoxrUp:
    def __init__(self, quality: str) -> None:
        self._stream = soxr.ResampleStream(8000, 24000, 1, dtype="int16", quality=quality)

    def convert(self, data: bytes) -> bytes:
        pcm = np.frombuffer(audioop.ulaw2lin(data, 2), np.int16)
        return self._stream.resample_chunk(pcm).tobytes()

    def flush(self) -> bytes:
        return self._stream.resample_chunk(np.zeros(0, np.int16), last=True).tobytes()


class SoxrDown:
    def __init__(self, quality: str) -> None:
        self._stream = soxr.ResampleStream(24000, 8000, 1, dtype="int16", quality=quality)

    def convert(self, data: bytes) -> bytes:
        return audioop.lin2ulaw(
            self._stream.resample_chunk(np.frombuffer(data, np.int16)).tobytes(), 2
        )

    def flush(self) -> bytes:
        out = self._stream.resample_chunk(np.zeros(0, np.int16), last=True)
        return audioop.lin2ulaw(out.tobytes(), 2)


def rows() -> list[Row]:
    pcmu, pcma, pcm16 = AudioFormat.PCMU, AudioFormat.PCMA, AudioFormat.PCM16
    found = [
        Row(
            "passthrough (mu-law)",
            lambda: Ours(CallerToBackend, pcmu),
            lambda: Ours(BackendToCaller, pcmu),
            8000,
            1,
        ),
        Row(
            "a-law (mu<->a only)",
            lambda: Ours(CallerToBackend, pcma),
            lambda: Ours(BackendToCaller, pcma),
            8000,
            1,
        ),
        Row(
            "numpy FIR (ours)",
            lambda: Ours(CallerToBackend, pcm16),
            lambda: Ours(BackendToCaller, pcm16),
            24000,
            2,
        ),
        Row("audioop.ratecv", RatecvUp, RatecvDown, 24000, 2),
    ]
    if soxr is not None:
        for quality in ("HQ", "QQ"):
            found.append(
                Row(
                    f"soxr {quality}" + (" (default)" if quality == "HQ" else ""),
                    lambda q=quality: SoxrUp(q),
                    lambda q=quality: SoxrDown(q),
                    24000,
                    2,
                )
            )
    return found


# --- signals ------------------------------------------------------------------------------


def speech_mulaw(ms: int, seed: int) -> bytes:
    return pcm16_to_mulaw(float_to_pcm16(synthetic_speech(ms, seed, rate=8000)))


def backend_audio(row: Row, ms: int, seed: int) -> bytes:
    """What the backend would send: speech at its own rate and format."""
    if not row.resamples:
        return CallerToBackend(
            AudioFormat.PCMA if "a-law" in row.name else AudioFormat.PCMU
        ).convert(speech_mulaw(ms, seed))
    return float_to_pcm16(synthetic_speech(ms, seed, rate=24000))


def frames_of(data: bytes, size: int) -> list[bytes]:
    return [data[at : at + size] for at in range(0, len(data) - size + 1, size)]


def linear(mulaw: bytes) -> np.ndarray:
    return np.frombuffer(mulaw_to_pcm16(mulaw), "<i2").astype(np.float64)


# --- cost ---------------------------------------------------------------------------------


def per_frame_us(make: Callable[[], Stream], frames: list[bytes]) -> float:
    """One run of FRAMES frames through a fresh stream, in microseconds per frame."""
    convert = make().convert
    cycle = [frames[n % len(frames)] for n in range(FRAMES)]
    began = time.perf_counter()
    for frame in cycle:
        convert(frame)
    return (time.perf_counter() - began) / FRAMES * 1e6


def timings(table: list[Row], caller: list[bytes]) -> dict[str, tuple[float, float]]:
    """Best of REPEATS rounds per row and direction; rounds interleave the rows, so a burst of
    load on a shared machine hits one round of every row rather than all rounds of one."""
    backend = {
        row.name: frames_of(backend_audio(row, 2000, seed=1), row.backend_frame) for row in table
    }
    best = {row.name: (math.inf, math.inf) for row in table}
    for _ in range(REPEATS):
        for row in table:
            up = per_frame_us(row.up, caller)
            down = per_frame_us(row.down, backend[row.name])
            best[row.name] = (min(best[row.name][0], up), min(best[row.name][1], down))
    return best


def b64_us(decode_bytes: int, encode_bytes: int) -> float:
    payload_text = base64.b64encode((bytes(range(256)) * 4)[:decode_bytes]).decode()
    raw = bytes(encode_bytes)
    best = math.inf
    for _ in range(REPEATS):
        began = time.perf_counter()
        for _ in range(FRAMES):
            base64.b64decode(payload_text)
            base64.b64encode(raw).decode()
        best = min(best, time.perf_counter() - began)
    return best / FRAMES * 1e6


# --- quality ------------------------------------------------------------------------------


def run(make: Callable[[], Stream], chunks: list[bytes]) -> tuple[bytes, list[int]]:
    stream = make()
    outs = [stream.convert(chunk) for chunk in chunks]
    return b"".join(outs) + stream.flush(), [len(out) for out in outs]


def random_chunks(data: bytes, width: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    chunks, at = [], 0
    while at < len(data):
        size = int(rng.integers(1, 400)) * width
        chunks.append(data[at : at + size])
        at += size
    return chunks


def chunk_invariant(make: Callable[[], Stream], data: bytes, frame: int, width: int) -> bool:
    whole, _ = run(make, [data])
    return all(
        run(make, chunks)[0] == whole
        for chunks in (frames_of(data, frame), random_chunks(data, width, seed=1))
    )


def best_lag_snr(sent: np.ndarray, got: np.ndarray, max_lag: int = 400) -> tuple[float, int]:
    """SNR of got against sent at the lag that maximises it (got lags sent by `lag` samples)."""
    edge = 400  # 50 ms at each end: the start-up and flush of streaming resamplers
    best = (-math.inf, 0)
    for lag in range(-max_lag, max_lag + 1):
        ref = sent[edge : len(sent) - edge - max_lag]
        out = got[edge + lag : edge + lag + len(ref)]
        if len(out) < len(ref):
            continue
        noise = float(np.sum((out - ref) ** 2))
        snr = math.inf if noise == 0 else 10 * math.log10(float(np.sum(ref**2)) / noise)
        best = max(best, (snr, lag))
    return best


def round_trip_snr(row: Row) -> tuple[float, float]:
    """Caller speech -> backend format -> back, in 20 ms frames: (SNR dB, delay ms)."""
    sent = speech_mulaw(3000, seed=3)
    up, _ = run(row.up, frames_of(sent, UP_FRAME))
    back, _ = run(row.down, frames_of(up, row.backend_frame))
    snr, lag = best_lag_snr(linear(sent), linear(back))
    return snr, lag / 8


def tone_level_db(row: Row, freq: float) -> float:
    t = np.arange(24000) / 24000
    pcm = float_to_pcm16(0.5 * np.sin(2 * np.pi * freq * t))
    out = linear(run(row.down, frames_of(pcm, DOWN_FRAME))[0])[400:]
    rms = math.sqrt(float(np.mean(out**2)))
    return 20 * math.log10(rms) if rms else -math.inf


def alias_rejection(row: Row) -> str:
    """How far below a 1 kHz tone a 9 kHz tone (folding onto 1 kHz) comes out, in dB."""
    reference, alias = tone_level_db(row, 1000), tone_level_db(row, 9000)
    if alias == -math.inf:
        # Digital silence: the alias never reached mu-law's first step (|x| >= 4 of 32768).
        return f"silent>{reference - 20 * math.log10(4 / math.sqrt(2)):.0f}"
    return f"{reference - alias:.1f}"


def image_rejection(row: Row) -> str:
    """How far below a 3 kHz caller tone its images (5 kHz and up) reach the backend, in dB.

    Everything the up path puts above 4.4 kHz is an image or junk: the caller's 8 kHz audio
    has nothing there.
    """
    t = np.arange(8000) / 8000
    tone = pcm16_to_mulaw(float_to_pcm16(0.5 * np.sin(2 * np.pi * 3000 * t)))
    out = np.frombuffer(run(row.up, frames_of(tone, UP_FRAME))[0], "<i2").astype(np.float64)
    out = out[2400 : 2400 + 19200]  # 0.8 s of steady state (0.1 s in)
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out)))) ** 2
    freqs = np.fft.rfftfreq(len(out), 1 / 24000)
    band, images = spectrum[freqs < 4000].sum(), spectrum[freqs > 4400].sum()
    return f"{10 * math.log10(band / images):.1f}" if images else "inf"


def held_back_ms(sizes: list[int], nominal: int) -> float:
    """Worst shortfall of output against real time over a stream of 20 ms frames."""
    produced, worst = 0, 0
    for n, size in enumerate(sizes, 1):
        produced += size
        worst = max(worst, n * nominal - produced)
    return worst / nominal * 20


def fixed_sizes(sizes: list[int], nominal: int) -> str:
    steady = sizes[1:]
    if all(size == nominal for size in steady):
        return "yes"
    return f"no ({min(steady)}..{max(steady)} B)"


def main() -> None:
    speech = speech_mulaw(2000, seed=0)
    caller_frames = frames_of(speech, UP_FRAME)
    table = rows()
    cost = timings(table, caller_frames)
    lines = []
    for row in table:
        backend = backend_audio(row, 2000, seed=1)
        backend_frames = frames_of(backend, row.backend_frame)
        _, up_sizes = run(row.up, caller_frames)
        _, down_sizes = run(row.down, backend_frames)
        held = held_back_ms(up_sizes, row.backend_frame) + held_back_ms(down_sizes, UP_FRAME)
        if row.name.startswith("passthrough"):
            snr, delay = "n/a", "0.000"
        else:
            rt_snr, rt_delay = round_trip_snr(row)
            snr, delay = f"{rt_snr:.1f}", f"{rt_delay:.3f}"
        image = image_rejection(row) if row.resamples else "n/a"
        alias = alias_rejection(row) if row.resamples else "n/a"
        invariant = "/".join(
            "yes" if ok else "NO"
            for ok in (
                chunk_invariant(row.up, speech, UP_FRAME, 1),
                chunk_invariant(row.down, backend, row.backend_frame, row.backend_width),
            )
        )
        sizes = fixed_sizes(up_sizes, row.backend_frame) + " / " + fixed_sizes(down_sizes, UP_FRAME)
        up_us, down_us = cost[row.name]
        lines.append((row.name, up_us, down_us, snr, image, alias, delay, held, invariant, sizes))

    print(f"Transcoding per 20 ms frame (best of {REPEATS} runs of {FRAMES} frames), and quality")
    head = (
        f"{'':22} {'up us':>7} {'down us':>8} {'RT SNR dB':>10} {'image dB':>9}"
        f" {'alias 9k dB':>13} {'RT delay ms':>12} {'held ms':>8} {'chunked==whole':>15}"
        "  fixed frame sizes up / down"
    )
    print(head)
    print("-" * len(head))
    for name, up_us, down_us, snr, image, alias, delay, held, invariant, sizes in lines:
        print(
            f"{name:22} {up_us:7.2f} {down_us:8.2f} {snr:>10} {image:>9} {alias:>13}"
            f" {delay:>12} {held:8.2f} {invariant:>15}  {sizes}"
        )
    if soxr is None:
        print("soxr: not installed, rows skipped (.venv/bin/pip install soxr to include them)")

    up_b64 = b64_us(UP_FRAME, DOWN_FRAME)
    down_b64 = b64_us(DOWN_FRAME, UP_FRAME)
    alaw_b64 = b64_us(UP_FRAME, UP_FRAME)
    print()
    print("base64 per 20 ms frame, which transcoding mode adds (passthrough forwards the text):")
    print(f"  caller -> backend, PCM16: b64decode 160 B + b64encode 960 B:  {up_b64:6.2f} us")
    print(f"  backend -> caller, PCM16: b64decode 960 B + b64encode 160 B:  {down_b64:6.2f} us")
    print(f"  either way, a-law:        b64decode 160 B + b64encode 160 B:  {alaw_b64:6.2f} us")
    print()
    print("up: caller mu-law -> backend format; down: backend format -> caller mu-law.")
    print("RT SNR: caller speech -> backend -> caller in 20 ms frames, mu-law in vs mu-law out at")
    print("  the best lag (mu-law alone limits SNR against the original to ~37 dB; a transparent")
    print("  round trip gives back mostly the same codes, hence figures far above that).")
    print("  ratecv's inf: its up path keeps each original sample as every 3rd output and its down")
    print(
        "  path picks exactly those back, so it undoes itself; image and alias show each way alone."
    )
    print("image: a 3 kHz caller tone going up; dB between what lies below 4 kHz and what the up")
    print("  path puts above 4.4 kHz (images at 5 and 11 kHz: sound the caller never made).")
    print("alias 9k: a 9 kHz tone at 24 kHz folds to 1 kHz at 8 kHz; dB below a 1 kHz tone of the")
    print("  same level after the down path (silent: the alias is below mu-law's first step).")
    print("RT delay: signal delay of the round trip (best lag); held: worst audio held back, both")
    print("  ways, when fed 20 ms frames (output behind real time, on top of the signal delay).")
    print("chunked==whole: byte-identical output for 20 ms frames and random chunks, up/down.")


if __name__ == "__main__":
    main()
