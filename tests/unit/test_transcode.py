"""Transcoding mode: what a caller or a PCM16/a-law backend would hear from bridge.transcode."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bridge.audio import (
    alaw_to_pcm16,
    float_to_pcm16,
    mulaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_mulaw,
    synthetic_speech,
)
from bridge.transcode import (
    DOWN_DELAY_MS,
    ROUND_TRIP_DELAY_SAMPLES,
    AudioFormat,
    BackendToCaller,
    CallerToBackend,
    bytes_per_ms,
)

PCM16 = AudioFormat.PCM16


# --- signals and measures -----------------------------------------------------------------


def speech_mulaw(ms: int = 2000, seed: int = 0) -> bytes:
    return pcm16_to_mulaw(float_to_pcm16(synthetic_speech(ms, seed, rate=8000)))


def sine(freq: float, ms: int, rate: int, amp: float = 0.5) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * np.arange(rate * ms // 1000) / rate)


def sine_mulaw(freq: float, ms: int = 1000, amp: float = 0.5) -> bytes:
    return pcm16_to_mulaw(float_to_pcm16(sine(freq, ms, 8000, amp)))


def sine_pcm16_24k(freq: float, ms: int = 1000, amp: float = 0.5) -> bytes:
    return float_to_pcm16(sine(freq, ms, 24000, amp))


def linear(mulaw: bytes) -> np.ndarray:
    return np.frombuffer(mulaw_to_pcm16(mulaw), "<i2").astype(np.float64)


def samples(pcm16: bytes) -> np.ndarray:
    return np.frombuffer(pcm16, "<i2").astype(np.float64)


def snr_db(reference: np.ndarray, output: np.ndarray) -> float:
    noise = float(np.sum((output - reference) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(float(np.sum(reference**2)) / noise)


def level_db(x: np.ndarray) -> float:
    rms = math.sqrt(float(np.mean(x**2)))
    return 20 * math.log10(rms) if rms else -math.inf


def round_trip(mulaw: bytes) -> bytes:
    return BackendToCaller(PCM16).convert(CallerToBackend(PCM16).convert(mulaw))


def random_splits(data: bytes, rng: np.random.Generator, largest: int) -> list[bytes]:
    chunks, at = [], 0
    while at < len(data):
        size = int(rng.integers(1, largest + 1))
        chunks.append(data[at : at + size])
        at += size
    return chunks


def fixed_splits(data: bytes, size: int) -> list[bytes]:
    return [data[at : at + size] for at in range(0, len(data), size)]


def fed(converter: CallerToBackend | BackendToCaller, chunks: list[bytes]) -> bytes:
    return b"".join(converter.convert(chunk) for chunk in chunks)


# --- formats and sizes --------------------------------------------------------------------


def test_bytes_per_ms() -> None:
    assert bytes_per_ms(AudioFormat.PCMU) == 8
    assert bytes_per_ms(AudioFormat.PCMA) == 8
    assert bytes_per_ms(AudioFormat.PCM16) == 48
    assert AudioFormat("pcm16") is AudioFormat.PCM16  # config strings map onto the enum


def test_pcmu_is_passed_through_unchanged() -> None:
    audio = speech_mulaw(200)
    assert CallerToBackend(AudioFormat.PCMU).convert(audio) == audio
    assert BackendToCaller(AudioFormat.PCMU).convert(audio) == audio


@pytest.mark.parametrize("fmt", list(AudioFormat))
def test_empty_input_gives_empty_output(fmt: AudioFormat) -> None:
    assert CallerToBackend(fmt).convert(b"") == b""
    assert BackendToCaller(fmt).convert(b"") == b""


def test_up_gives_exactly_six_bytes_per_mulaw_byte_for_any_chunk() -> None:
    rng = np.random.default_rng(1)
    up = CallerToBackend(PCM16)
    for chunk in [b"\x00", *random_splits(speech_mulaw(300), rng, 37), bytes(160)]:
        assert len(up.convert(chunk)) == 6 * len(chunk)


def test_down_gives_one_byte_per_three_samples_cumulatively_even_with_odd_splits() -> None:
    rng = np.random.default_rng(2)
    down = BackendToCaller(PCM16)
    data = sine_pcm16_24k(700, 300)
    bytes_in = bytes_out = 0
    for chunk in [b"\x01", b"\x02", b"\x03", *random_splits(data, rng, 9), b"\x04"]:
        bytes_in += len(chunk)
        bytes_out += len(down.convert(chunk))
        # Every byte of audio accounted for at every point: no drift between byte and ms.
        assert bytes_out == bytes_in // 2 // 3


# --- quality ------------------------------------------------------------------------------


def test_round_trip_delay_is_the_stated_one() -> None:
    sent, got = linear(speech_mulaw(1000, seed=3)), linear(round_trip(speech_mulaw(1000, seed=3)))
    lags = range(10, 45)
    best = max(lags, key=lambda lag: float(np.dot(sent[: len(sent) - lag], got[lag:])))
    # 35.5 + 47.5 samples of FIR delay at 24 kHz, less 2 of decimation phase: 27 at 8 kHz.
    assert best == ROUND_TRIP_DELAY_SAMPLES == 27


def test_the_model_audio_reaches_the_caller_the_stated_delay_later() -> None:
    # A click at 24 kHz sample 3000 (125 ms) comes out at the 8 kHz sample whose time, less
    # the stated delay, is closest to it: what truncations subtract is the real lag.
    click = np.zeros(6000)
    click[3000] = 0.9
    out = np.abs(linear(BackendToCaller(PCM16).convert(float_to_pcm16(click))))
    peak_ms = int(np.argmax(out)) / 8
    assert abs(peak_ms - DOWN_DELAY_MS - 125.0) <= 1 / 16  # within half an 8 kHz sample
    assert BackendToCaller(AudioFormat.PCMA).delay_ms == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_speech_round_trip_is_transparent_after_mulaw(seed: int) -> None:
    original = synthetic_speech(2000, seed, rate=8000) * 32767
    sent = speech_mulaw(2000, seed)
    got = linear(round_trip(sent))
    d = ROUND_TRIP_DELAY_SAMPLES
    # Mu-law in vs mu-law out, aligned by the 27-sample delay: measured 65.5, 67.2, 66.6 dB
    # (most codes come back identical); threshold 60 dB.
    assert snr_db(linear(sent)[:-d], got[d:]) > 60
    # Against the pre-mu-law signal the round trip is as good as mu-law alone (37.4 dB measured
    # for both): resampling adds nothing audible on top of the G.711 quantisation.
    assert snr_db(original[:-d], got[d:]) > snr_db(original, linear(sent)) - 0.3


def test_phone_band_multitone_round_trip() -> None:
    rng = np.random.default_rng(4)
    t = np.arange(16000) / 8000
    tones = sum(np.sin(2 * np.pi * f * t + 2 * np.pi * rng.random()) for f in range(300, 3401, 100))
    sent = pcm16_to_mulaw(float_to_pcm16(0.5 * tones / np.max(np.abs(tones))))
    d = ROUND_TRIP_DELAY_SAMPLES
    # Measured 41.9 dB: limited by the 0.25 dB droop of the two filters near 3.4 kHz (the band
    # edge) — 61 dB with tones only up to 3 kHz. Threshold 39 dB.
    assert snr_db(linear(sent)[:-d], linear(round_trip(sent))[d:]) > 39


def test_1khz_level_is_preserved_each_way() -> None:
    sent = sine_mulaw(1000)
    up = samples(CallerToBackend(PCM16).convert(sent))
    # Skip the filter's start-up: measure on whole periods of the steady state.
    assert abs(level_db(up[240:]) - level_db(linear(sent)[80:])) < 0.5
    tone = sine_pcm16_24k(1000)
    down = linear(BackendToCaller(PCM16).convert(tone))
    assert abs(level_db(down[80:]) - level_db(samples(tone)[240:])) < 0.5


@pytest.mark.parametrize("alias_hz", [6000, 9000])
def test_tone_above_4khz_does_not_alias_into_the_phone_band(alias_hz: int) -> None:
    reference = level_db(linear(BackendToCaller(PCM16).convert(sine_pcm16_24k(1000)))[80:])
    # 6 kHz would fold to 2 kHz, 9 kHz to 1 kHz. Measured: digital silence (-inf) for both.
    out = linear(BackendToCaller(PCM16).convert(sine_pcm16_24k(alias_hz)))[80:]
    assert level_db(out) < reference - 60


def test_whole_stopband_is_at_least_60db_down() -> None:
    reference = level_db(linear(BackendToCaller(PCM16).convert(sine_pcm16_24k(1000, 250)))[80:])
    worst = max(
        level_db(linear(BackendToCaller(PCM16).convert(sine_pcm16_24k(f, 250)))[80:])
        for f in range(4600, 12000, 100)
    )
    # Measured worst 66.6 dB below the 1 kHz tone (4.6 kHz, folding to 3.4 kHz; the residue is
    # mu-law's smallest step rather than filter leakage). Threshold 60 dB.
    assert worst < reference - 60


def full_scale_square(rate: int) -> np.ndarray:
    return np.where(np.sin(2 * np.pi * 100 * np.arange(rate) / rate) >= 0, 1.0, -1.0)


def sign_follows(output: np.ndarray, expected: np.ndarray, delay: int, guard: int) -> bool:
    """Whether output has the sign of expected (delayed), except `guard` samples around edges."""
    edges = np.abs(np.diff(expected, prepend=expected[0])) != 0
    near_edge = np.convolve(edges, np.ones(2 * guard + 1), "same") != 0
    n = len(expected) - delay
    steady = ~near_edge[:n]
    return bool(np.all(np.sign(output[delay : delay + n])[steady] == expected[:n][steady]))


# A full-scale square wave makes the filters overshoot past 16 bits (Gibbs): the excess must
# clip, not wrap round to the opposite sign (a full-scale click on the line).


def test_full_scale_caller_audio_saturates_instead_of_wrapping() -> None:
    square = full_scale_square(8000)
    up = samples(CallerToBackend(PCM16).convert(pcm16_to_mulaw(float_to_pcm16(square))))
    assert up.max() == 32767 and up.min() == -32768  # the overshoot happened and was clipped
    # Up-filter delay 35.5 samples at 24 kHz; the first overshoot peaks ~3 samples past an edge.
    assert sign_follows(up, np.repeat(square, 3), delay=36, guard=2)


def test_full_scale_backend_audio_saturates_instead_of_wrapping() -> None:
    square = full_scale_square(24000)
    down = linear(BackendToCaller(PCM16).convert(float_to_pcm16(square)))
    # Down-filter delay 47.5 samples at 24 kHz: about 16 at 8 kHz.
    assert sign_follows(down, square[2::3], delay=16, guard=2)


# --- chunking -----------------------------------------------------------------------------


@pytest.mark.parametrize("signal", ["sine", "speech"])
def test_up_output_does_not_depend_on_chunking(signal: str) -> None:
    audio = sine_mulaw(440, 2000) if signal == "sine" else speech_mulaw(2000, seed=5)
    whole = CallerToBackend(PCM16).convert(audio)
    assert fed(CallerToBackend(PCM16), fixed_splits(audio, 160)) == whole  # 20 ms frames
    rng = np.random.default_rng(6)
    assert fed(CallerToBackend(PCM16), random_splits(audio, rng, 23)) == whole


@pytest.mark.parametrize("signal", ["sine", "speech"])
def test_down_output_does_not_depend_on_chunking(signal: str) -> None:
    if signal == "sine":
        audio = sine_pcm16_24k(440, 2000)
    else:
        audio = float_to_pcm16(synthetic_speech(2000, seed=7, rate=24000))
    whole = BackendToCaller(PCM16).convert(audio)
    assert fed(BackendToCaller(PCM16), fixed_splits(audio, 960)) == whole  # 20 ms frames
    rng = np.random.default_rng(8)
    # Small random chunks, odd byte counts included: samples split across calls.
    assert fed(BackendToCaller(PCM16), random_splits(audio, rng, 15)) == whole


def test_sine_in_small_random_chunks_equals_sine_fed_whole() -> None:
    rng = np.random.default_rng(9)
    tone = sine_mulaw(1234.5, 1000, amp=0.7)
    up_whole = CallerToBackend(PCM16).convert(tone)
    up_chunked = fed(CallerToBackend(PCM16), random_splits(tone, rng, 7))
    assert up_chunked == up_whole
    down_whole = BackendToCaller(PCM16).convert(up_whole)
    assert fed(BackendToCaller(PCM16), random_splits(up_whole, rng, 11)) == down_whole
    assert linear(down_whole).std() > 1000  # the tone made it through at all


# --- reset --------------------------------------------------------------------------------


def test_reset_starts_the_next_answer_clean() -> None:
    interrupted = float_to_pcm16(synthetic_speech(333, seed=10, rate=24000))[:-1]  # odd bytes
    answer = float_to_pcm16(synthetic_speech(500, seed=11, rate=24000))
    fresh = BackendToCaller(PCM16).convert(answer)

    # Without reset, the tail of the interrupted answer (history, phase, odd byte) leaks in.
    leaky = BackendToCaller(PCM16)
    leaky.convert(interrupted)
    assert leaky.convert(answer) != fresh

    down = BackendToCaller(PCM16)
    down.convert(interrupted)
    down.reset()
    assert down.convert(answer) == fresh


# --- a-law --------------------------------------------------------------------------------


def test_pcma_is_standard_alaw_one_byte_per_byte() -> None:
    audio = speech_mulaw(500)
    alaw = CallerToBackend(AudioFormat.PCMA).convert(audio)
    assert len(alaw) == len(audio)
    assert alaw == pcm16_to_alaw(mulaw_to_pcm16(audio))
    back = BackendToCaller(AudioFormat.PCMA).convert(alaw)
    assert len(back) == len(alaw)
    assert back == pcm16_to_mulaw(alaw_to_pcm16(alaw))


@pytest.mark.parametrize("seed", [0, 1])
def test_pcma_round_trip_keeps_speech(seed: int) -> None:
    sent = speech_mulaw(2000, seed)
    alaw = CallerToBackend(AudioFormat.PCMA).convert(sent)
    # The backend hears the caller: a-law decodes to within G.711 precision of the mu-law.
    # Measured 36.6 dB for both seeds; threshold 33 dB.
    assert snr_db(linear(sent), samples(alaw_to_pcm16(alaw))) > 33
    back = BackendToCaller(AudioFormat.PCMA).convert(alaw)
    # Mu-law -> a-law -> mu-law: measured 83.4 and 82.7 dB (99.6 % of codes identical);
    # threshold 75 dB.
    assert snr_db(linear(sent), linear(back)) > 75
