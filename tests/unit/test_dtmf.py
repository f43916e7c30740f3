"""In-band DTMF: what the bridge plays to a phone menu, and what a listener makes of it."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.audio import (
    MULAW_BYTES_PER_MS,
    float_to_pcm16,
    mulaw_silence,
    mulaw_to_pcm16,
    pcm16_to_mulaw,
    rms_dbfs,
    synthetic_speech_mulaw,
)
from bridge.dtmf import DTMF_FREQUENCIES, detect_dtmf, dtmf_mulaw, valid_digits

ALL_KEYS = "123A456B789C*0#D"


def with_noise(mulaw: bytes, level_dbfs: float, seed: int = 0) -> bytes:
    """`mulaw` with white noise of RMS `level_dbfs` added."""
    samples = np.frombuffer(mulaw_to_pcm16(mulaw), dtype="<i2") / 32768
    noise = np.random.default_rng(seed).normal(0.0, 10 ** (level_dbfs / 20), len(samples))
    return pcm16_to_mulaw(float_to_pcm16(samples + noise))


def test_every_key_has_a_low_and_a_high_tone() -> None:
    assert sorted(DTMF_FREQUENCIES) == sorted(ALL_KEYS)
    assert {low for low, _ in DTMF_FREQUENCIES.values()} == {697, 770, 852, 941}
    assert {high for _, high in DTMF_FREQUENCIES.values()} == {1209, 1336, 1477, 1633}


def test_all_sixteen_keys_round_trip() -> None:
    assert detect_dtmf(dtmf_mulaw(ALL_KEYS)) == ALL_KEYS


def test_letter_keys_are_case_blind() -> None:
    assert dtmf_mulaw("abcd") == dtmf_mulaw("ABCD")


def test_repeated_keys_keep_their_repeats() -> None:
    assert detect_dtmf(dtmf_mulaw("1122")) == "1122"


@pytest.mark.parametrize("lead_in_ms", [0, 1, 3, 7, 13])
def test_shortest_allowed_timing_round_trips_at_any_alignment(lead_in_ms: int) -> None:
    # The detector's windows fall anywhere relative to the tones in a real stream.
    audio = mulaw_silence(lead_in_ms) + dtmf_mulaw(ALL_KEYS + "9900", tone_ms=40, gap_ms=40)
    assert detect_dtmf(audio) == ALL_KEYS + "9900"


def test_one_long_key_is_one_digit() -> None:
    assert detect_dtmf(dtmf_mulaw("5", tone_ms=1000)) == "5"


def test_w_adds_half_a_second_of_silence_and_is_not_heard() -> None:
    plain, paused = dtmf_mulaw("12"), dtmf_mulaw("1w2")
    assert len(paused) - len(plain) == 500 * MULAW_BYTES_PER_MS
    assert detect_dtmf(paused) == "12"
    assert detect_dtmf(dtmf_mulaw("1ww1")) == "11"


def test_keys_are_found_between_speech_with_background_noise() -> None:
    for seed in range(4):
        audio = (
            synthetic_speech_mulaw(1500, seed)
            + dtmf_mulaw("5#09*", tone_ms=60, gap_ms=60)
            + synthetic_speech_mulaw(1500, seed + 100)
        )
        assert detect_dtmf(with_noise(audio, -35.0, seed)) == "5#09*", f"seed {seed}"


def test_speech_and_noise_alone_are_not_keys() -> None:
    for seed in range(6):
        assert detect_dtmf(synthetic_speech_mulaw(3000, seed)) == "", f"seed {seed}"
    assert detect_dtmf(with_noise(mulaw_silence(3000), -35.0)) == ""
    assert detect_dtmf(b"") == ""


def test_tone_level_is_the_level_asked_for() -> None:
    for level in (-10.0, -20.0):
        burst = dtmf_mulaw("8", tone_ms=200, level_dbfs=level)[: 200 * MULAW_BYTES_PER_MS]
        steady = burst[5 * MULAW_BYTES_PER_MS : -5 * MULAW_BYTES_PER_MS]  # without the ramps
        assert rms_dbfs(mulaw_to_pcm16(steady)) == pytest.approx(level, abs=1.0)


def test_bursts_fade_in_and_out_instead_of_clicking() -> None:
    burst = np.frombuffer(mulaw_to_pcm16(dtmf_mulaw("1")[:800]), dtype="<i2") / 32768
    peak = np.max(np.abs(burst))
    assert peak > 0.4
    # The first and last millisecond stay far below the peak: no step at either end.
    assert np.max(np.abs(burst[:8])) < 0.05 * peak
    assert np.max(np.abs(burst[-8:])) < 0.05 * peak


def test_keys_are_followed_by_silence() -> None:
    audio = dtmf_mulaw("1", tone_ms=100, gap_ms=80)
    assert len(audio) == 180 * MULAW_BYTES_PER_MS
    assert audio[100 * MULAW_BYTES_PER_MS :] == mulaw_silence(80)


@pytest.mark.parametrize(("digits", "named"), [("12x3", "'x'"), ("1 2", "' '"), ("E", "'E'")])
def test_unknown_characters_are_refused_by_name(digits: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        dtmf_mulaw(digits)
    assert not valid_digits(digits)


def test_valid_digits() -> None:
    assert valid_digits("0123456789*#ABCDabcdw")
    assert not valid_digits("")


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"tone_ms": 39}, "tone_ms=39"), ({"gap_ms": 20}, "gap_ms=20"), ({"level_dbfs": 0}, "clip")],
)
def test_timing_and_level_outside_the_standard_are_refused(kwargs: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        dtmf_mulaw("1", **kwargs)


def test_an_empty_digit_string_is_refused() -> None:
    with pytest.raises(ValueError, match="no digits"):
        dtmf_mulaw("")
