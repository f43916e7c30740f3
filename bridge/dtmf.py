"""In-band DTMF (touch tones) as 8 kHz G.711 mu-law: a generator and a detector.

The bridge plays `dtmf_mulaw` into a live call so the model can work a phone menu (IVR) on
the far end; tests and the simulator use `detect_dtmf` to check what the other side heard.
Frequencies and timing follow ITU-T Q.23 / Q.24.
"""

from __future__ import annotations

import numpy as np

from bridge.audio import MULAW_RATE, float_to_pcm16, mulaw_silence, mulaw_to_pcm16, pcm16_to_mulaw

DTMF_FREQUENCIES: dict[str, tuple[float, float]] = {
    "1": (697.0, 1209.0),
    "2": (697.0, 1336.0),
    "3": (697.0, 1477.0),
    "A": (697.0, 1633.0),
    "4": (770.0, 1209.0),
    "5": (770.0, 1336.0),
    "6": (770.0, 1477.0),
    "B": (770.0, 1633.0),
    "7": (852.0, 1209.0),
    "8": (852.0, 1336.0),
    "9": (852.0, 1477.0),
    "C": (852.0, 1633.0),
    "*": (941.0, 1209.0),
    "0": (941.0, 1336.0),
    "#": (941.0, 1477.0),
    "D": (941.0, 1633.0),
}
PAUSE = "w"  # in a digit string: PAUSE_MS of silence, as in Twilio's sendDigits
PAUSE_MS = 500
# Q.24 practice: receivers must accept tones and pauses of 40 ms, so nothing shorter is sent.
MIN_TONE_MS = 40
MIN_GAP_MS = 40
# Each tone's RMS is 3 dB below the pair's, so a pair over -6 dBFS would clip at its peaks.
MAX_LEVEL_DBFS = -6.0
_RAMP_MS = 5  # raised-cosine fade in and out: a tone switched on abruptly clicks

_LOW_GROUP = (697.0, 770.0, 852.0, 941.0)
_HIGH_GROUP = (1209.0, 1336.0, 1477.0, 1633.0)
_DIGIT_BY_PAIR = {pair: digit for digit, pair in DTMF_FREQUENCIES.items()}

# Detector tuning. A 20 ms window resolves the 73 Hz between 697 and 770 Hz (a 10 ms one
# cannot); stepping it by 10 ms means a 40 ms tone always fills at least two whole windows.
_WINDOW = MULAW_RATE * 20 // 1000
_HOP = MULAW_RATE * 10 // 1000
_MIN_WINDOWS = 2  # consecutive windows a digit must fill before it counts (30-40 ms of tone)
_GAP_WINDOWS = 2  # windows without it before the same digit counts again (a 40 ms gap has 2)
_GROUP_MARGIN_DB = 6.0  # strongest tone over the runner-up in its group
_MIN_TONE_SHARE = 0.7  # the two tones' share of the window's energy: speech spreads wider
_MAX_TWIST_DB = 8.0
_FLOOR_DBFS = -45.0


def _key(char: str) -> str:
    """The canonical form of one character of a digit string (letters are case-blind)."""
    return PAUSE if char in (PAUSE, PAUSE.upper()) else char.upper()


def valid_digits(digits: str) -> bool:
    """True when `digits` is non-empty and holds only 0-9 * # A-D (any case) and w."""
    return bool(digits) and all(
        _key(char) in DTMF_FREQUENCIES or _key(char) == PAUSE for char in digits
    )


def dtmf_mulaw(
    digits: str, tone_ms: int = 100, gap_ms: int = 80, level_dbfs: float = -10.0
) -> bytes:
    """Touch tones for `digits` as 8 kHz mu-law, ready to send as Twilio media.

    Each key is a `tone_ms` two-tone burst followed by `gap_ms` of silence; `w` adds 0.5 s
    of silence. `level_dbfs` is the burst's RMS level, as `bridge.audio.rms_dbfs` measures
    it: each tone sits 3 dB below it.
    """
    if not digits:
        raise ValueError("no digits to send")
    for position, char in enumerate(digits):
        if not valid_digits(char):
            raise ValueError(
                f"{char!r} (position {position + 1} of {digits!r}) is not a DTMF key; "
                "use 0-9 * # A-D, or w for a 0.5 s pause"
            )
    if tone_ms < MIN_TONE_MS:
        raise ValueError(f"tone_ms={tone_ms} is too short: a tone lasts at least {MIN_TONE_MS} ms")
    if gap_ms < MIN_GAP_MS:
        raise ValueError(
            f"gap_ms={gap_ms} is too short: the gap between tones is at least {MIN_GAP_MS} ms"
        )
    if level_dbfs > MAX_LEVEL_DBFS:
        raise ValueError(f"level_dbfs={level_dbfs} would clip; use at most {MAX_LEVEL_DBFS:g} dBFS")

    tone_rms = 10 ** ((level_dbfs - 3.0) / 20)
    amplitude = tone_rms * np.sqrt(2.0)
    n = MULAW_RATE * tone_ms // 1000
    t = np.arange(n) / MULAW_RATE
    ramp_n = MULAW_RATE * _RAMP_MS // 1000
    # Starts and ends on an exact zero, so the burst joins the silence around it cleanly.
    ramp = 0.5 * (1 - np.cos(np.pi * np.arange(ramp_n) / ramp_n))
    envelope = np.ones(n)
    envelope[:ramp_n] = ramp
    envelope[n - ramp_n :] = ramp[::-1]

    bursts: dict[str, bytes] = {}
    gap = mulaw_silence(gap_ms)
    pieces: list[bytes] = []
    for char in digits:
        key = _key(char)
        if key == PAUSE:
            pieces.append(mulaw_silence(PAUSE_MS))
            continue
        if key not in bursts:
            low, high = DTMF_FREQUENCIES[key]
            wave = amplitude * (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t))
            bursts[key] = pcm16_to_mulaw(float_to_pcm16(wave * envelope))
        pieces.append(bursts[key])
        pieces.append(gap)
    return b"".join(pieces)


def _window_energies(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per window: the Goertzel energy at each of the 8 DTMF frequencies (as the power the
    window holds at that frequency), and the window's total energy.

    The Goertzel recursion computes one DFT term; here all windows and frequencies are one
    matrix product, which gives the same numbers far faster in numpy.
    """
    count = 1 + (len(samples) - _WINDOW) // _HOP
    starts = np.arange(count)[:, None] * _HOP
    windows = samples[starts + np.arange(_WINDOW)[None, :]]
    frequencies = np.array(_LOW_GROUP + _HIGH_GROUP)
    basis = np.exp(-2j * np.pi * np.outer(np.arange(_WINDOW), frequencies) / MULAW_RATE)
    # A sine of amplitude A gives |X| = A*N/2; 2|X|^2/N is then its energy A^2*N/2.
    tone_energy = 2 * np.abs(windows @ basis) ** 2 / _WINDOW
    return tone_energy, np.sum(windows**2, axis=1)


def _classify(tone_energy: np.ndarray, total_energy: np.ndarray) -> list[str | None]:
    """The digit each window holds, or None."""
    margin = 10 ** (_GROUP_MARGIN_DB / 10)
    max_twist = 10 ** (_MAX_TWIST_DB / 10)
    floor = _WINDOW * 10 ** (_FLOOR_DBFS / 10)
    low_group, high_group = tone_energy[:, :4], tone_energy[:, 4:]
    low_sorted, high_sorted = np.sort(low_group, axis=1), np.sort(high_group, axis=1)
    low_best, high_best = low_sorted[:, -1], high_sorted[:, -1]
    pair = low_best + high_best
    is_digit = (
        (total_energy > floor)
        & (low_best > margin * low_sorted[:, -2])
        & (high_best > margin * high_sorted[:, -2])
        & (pair > _MIN_TONE_SHARE * total_energy)
        & (high_best < max_twist * low_best)
        & (low_best < max_twist * high_best)
    )
    low_index, high_index = np.argmax(low_group, axis=1), np.argmax(high_group, axis=1)
    return [
        _DIGIT_BY_PAIR[(_LOW_GROUP[low], _HIGH_GROUP[high])] if hit else None
        for hit, low, high in zip(is_digit, low_index, high_index, strict=True)
    ]


def detect_dtmf(mulaw: bytes) -> str:
    """The DTMF keys heard in 8 kHz mu-law audio, in order (pauses are not reported).

    A key counts once it has filled two consecutive overlapping 20 ms windows (30-40 ms of
    tone); the same key counts again only after it has been absent for two windows, so
    "1122" sent with gaps reads back as "1122" while one held key reads as one.
    """
    samples = np.frombuffer(mulaw_to_pcm16(mulaw), dtype="<i2").astype(np.float64) / 32768
    # Trailing silence lets a tone that runs to the very end fill its last windows.
    samples = np.concatenate([samples, np.zeros(_WINDOW)])
    window_digits = _classify(*_window_energies(samples))

    heard: list[str] = []
    held: str | None = None  # the key last reported, while it is still sounding
    absent = 0  # windows since `held` was last seen
    run_digit: str | None = None
    run = 0
    for digit in window_digits:
        if held is not None:
            if digit == held:
                absent, run_digit, run = 0, None, 0
                continue
            absent += 1
            if absent >= _GAP_WINDOWS:
                held = None
        if digit is None:
            run_digit, run = None, 0
            continue
        run = run + 1 if digit == run_digit else 1
        run_digit = digit
        if run >= _MIN_WINDOWS and digit != held:
            heard.append(digit)
            held, absent, run_digit, run = digit, 0, None, 0
    return "".join(heard)
