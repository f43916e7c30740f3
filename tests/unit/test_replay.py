"""What `phone-bridge replay` says changed: turns paired by where the caller stopped
speaking, and the differences a caller would notice, each named once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from bridge.audio import mulaw_to_pcm16, synthetic_speech_mulaw
from bridge.replay import (
    CallRecords,
    ReplayError,
    TurnFigures,
    TurnRow,
    load_source,
    pair_turns,
    read_caller_channel,
    what_changed,
)


def turn(
    stopped: float, heard: float | None = 500, cut: bool = False, at: float | None = None
) -> TurnFigures:
    return TurnFigures(stopped, heard, cut, at)


def test_turns_pair_by_where_the_caller_stopped_and_strays_get_rows_of_their_own() -> None:
    was = [turn(1700), turn(4000), turn(6300)]
    now = [turn(1720), turn(3100), turn(3990), turn(9000)]
    rows = pair_turns(was, now)
    assert rows == [
        TurnRow(was[0], now[0]),
        TurnRow(None, now[1]),
        TurnRow(was[1], now[2]),
        TurnRow(was[2], None),
        TurnRow(None, now[3]),
    ]


def test_nothing_changed_within_the_tolerances() -> None:
    rows = [
        TurnRow(turn(1700, 502, True, 638), turn(1700, 600, True, 670)),
        TurnRow(turn(4000, 502), turn(4000, 380)),
    ]
    assert what_changed(rows, latency_tolerance_ms=150, cut_tolerance_ms=40) == []


def test_each_difference_a_caller_would_notice_is_named() -> None:
    rows = [
        TurnRow(turn(1700, 502, True, 638), turn(1700, 902, True, 338)),
        TurnRow(turn(4000, 502, True, 640), turn(4000, 500, False)),
        TurnRow(turn(6300, 502), turn(6300, None)),
        TurnRow(turn(8000), None),
        TurnRow(None, turn(9000)),
    ]
    assert what_changed(rows, latency_tolerance_ms=150, cut_tolerance_ms=40) == [
        "turn 1: first audio heard after 902 ms, was 502 ms (+400)",
        "turn 1: its answer was cut at 338 ms, was 638 ms",
        "turn 2: the caller no longer cuts its answer off",
        "turn 3 was answered and now is not answered",
        "turn 4 of the original has no turn in the replay",
        "turn 5 is new: the original had no turn ending there",
    ]


def test_the_caller_is_the_left_channel_of_a_recording_in_any_format(tmp_path: Path) -> None:
    caller = np.frombuffer(mulaw_to_pcm16(synthetic_speech_mulaw(500, seed=1)), np.int16)
    assistant = np.frombuffer(mulaw_to_pcm16(synthetic_speech_mulaw(500, seed=2)), np.int16)
    stereo = np.stack([caller, assistant], axis=1)
    for name, fmt in (("x.wav", "WAV"), ("x.flac", "FLAC")):
        soundfile.write(tmp_path / name, stereo, 8000, format=fmt, subtype="PCM_16")
        # mu-law -> 16-bit -> mu-law is exact: the caller comes back byte for byte.
        assert read_caller_channel(tmp_path / name) == synthetic_speech_mulaw(500, seed=1)
    # A mono file at another rate is the caller, resampled to the phone's 8 kHz.
    soundfile.write(tmp_path / "mono.wav", np.zeros(16000, np.int16), 16000)
    assert len(read_caller_channel(tmp_path / "mono.wav")) == 8000


def test_what_cannot_be_replayed_is_said_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not audio")
    with pytest.raises(ReplayError, match=r"cannot read .*notes\.txt as audio"):
        load_source(str(tmp_path / "notes.txt"), None, None)
    with pytest.raises(ReplayError, match="neither a file nor a call's id"):
        load_source("CA-nope", None, None)
    with pytest.raises(ReplayError, match="no call records to find"):
        load_source("CA" + "0" * 32, CallRecords.sqlite(str(tmp_path / "no.db")), None)
