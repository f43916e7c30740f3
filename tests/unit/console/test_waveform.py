"""The recording's picture: each channel's peaks read block by block exactly as if the file
were read whole, in any format libsndfile reads, bounded for very long files; and the
call's moments to mark on it, from its timeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from bridge.console import waveform
from bridge.console.waveform import Marker, markers, read_peaks
from bridge.core.timeline import Moment, TimelineEntry, speech_detail
from bridge.recording_storage import LocalRecording

RATE = 8000


def stereo(
    seconds: float, caller: tuple[float, float], assistant: tuple[float, float]
) -> np.ndarray:
    """Silence, with noise on the left in `caller` (s, from-to) and on the right in
    `assistant`, at different levels."""
    frames = np.zeros((round(seconds * RATE), 2), dtype=np.int16)
    noise = np.random.default_rng(5).integers(-8000, 8000, size=len(frames), dtype=np.int16)
    for channel, (start, end), scale in ((0, caller, 1), (1, assistant, 2)):
        stretch = slice(round(start * RATE), round(end * RATE))
        frames[stretch, channel] = noise[stretch] * scale
    return frames


def whole_file_peaks(frames: np.ndarray, buckets: int) -> list[list[int]]:
    """What the peaks must be: each bucket's loudest sample, the file read at once."""
    edges = np.arange(buckets + 1) * len(frames) // buckets
    magnitudes = np.abs(frames.astype(np.float32) / 32768)
    return [
        [
            int(min(np.rint(magnitudes[edges[k] : edges[k + 1], channel].max() * 1000), 1000))
            for k in range(buckets)
        ]
        for channel in (0, 1)
    ]


@pytest.mark.parametrize(("block_frames", "buckets"), [(777, 100), (8000, 1000), (1 << 16, 7)])
def test_peaks_read_block_by_block_are_those_of_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block_frames: int, buckets: int
) -> None:
    monkeypatch.setattr(waveform, "BLOCK_FRAMES", block_frames)  # blocks straddle buckets
    frames = stereo(10.0, caller=(2.0, 3.0), assistant=(5.0, 5.5))
    path = tmp_path / "call.wav"
    soundfile.write(path, frames, RATE, subtype="PCM_16")

    peaks = read_peaks(path, buckets)

    assert (peaks.duration_s, peaks.pictured_s) == (10.0, 10.0)
    assert [peaks.channels["caller"], peaks.channels["assistant"]] == whole_file_peaks(
        frames, buckets
    )


def test_each_side_is_loud_only_where_it_spoke(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    soundfile.write(path, stereo(10.0, caller=(2.0, 3.0), assistant=(5.0, 5.5)), RATE)
    peaks = read_peaks(path, 100)  # 0.1 s a bucket
    caller, assistant = (np.array(peaks.channels[side]) for side in ("caller", "assistant"))
    assert list(np.flatnonzero(caller)) == list(range(20, 30))
    assert list(np.flatnonzero(assistant)) == list(range(50, 55))
    assert 200 < caller.max() < 250 and 450 < assistant.max() < 500  # 8000 and 16000 of 32768


def test_a_compressed_recording_reads_as_its_wav_does(tmp_path: Path) -> None:
    frames = stereo(4.0, caller=(0.5, 1.0), assistant=(2.0, 3.0))
    soundfile.write(tmp_path / "call.wav", frames, RATE, subtype="PCM_16")
    soundfile.write(tmp_path / "call.flac", frames, RATE)
    assert read_peaks(tmp_path / "call.flac") == read_peaks(tmp_path / "call.wav")


def test_short_and_empty_recordings(tmp_path: Path) -> None:
    soundfile.write(tmp_path / "short.wav", stereo(0.01, (0, 0.01), (0, 0)), RATE)
    short = read_peaks(tmp_path / "short.wav", 1000)
    assert len(short.channels["caller"]) == 80  # a bucket a frame: no more than there are
    soundfile.write(tmp_path / "empty.wav", np.zeros((0, 2), dtype=np.int16), RATE)
    empty = read_peaks(tmp_path / "empty.wav")
    assert empty.duration_s == 0 and empty.channels == {"caller": [], "assistant": []}
    assert empty.as_json()["buckets"] == 0


def test_a_very_long_recording_is_pictured_only_so_far(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(waveform, "MAX_PICTURED_S", 5)
    path = tmp_path / "call.wav"
    soundfile.write(path, stereo(10.0, caller=(2.0, 3.0), assistant=(7.0, 8.0)), RATE)
    peaks = read_peaks(path, 50)  # 0.1 s a bucket, of the first 5 s
    assert (peaks.duration_s, peaks.pictured_s) == (10.0, 5.0)
    assert list(np.flatnonzero(peaks.channels["caller"])) == list(range(20, 30))
    assert not any(peaks.channels["assistant"])  # it spoke past what is pictured


def test_a_file_that_is_no_recording_raises_what_soundfile_raises(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    path.write_bytes(b"RIFF....WAVEfmt not really")
    with pytest.raises(soundfile.LibsndfileError):
        read_peaks(path)


async def test_a_picture_is_read_once_until_its_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[Path] = []
    real = waveform.read_peaks

    def counted(path: Path, buckets: int = waveform.BUCKETS) -> waveform.Peaks:
        reads.append(path)
        return real(path, buckets)

    monkeypatch.setattr(waveform, "read_peaks", counted)
    path = tmp_path / "call.wav"
    soundfile.write(path, stereo(1.0, (0, 0.5), (0.5, 1.0)), RATE)
    pictures = waveform.Waveforms()
    recording = LocalRecording(path)
    first = await pictures.peaks(recording)
    assert await pictures.peaks(recording) == first and len(reads) == 1
    soundfile.write(path, stereo(2.0, (0, 0.5), (0.5, 1.0)), RATE)  # written again
    assert (await pictures.peaks(recording)).duration_s == 2.0 and len(reads) == 2


# ------------------------------------------------------------------------------ markers


def entry(at: float, moment: Moment, detail: str = "") -> TimelineEntry:
    return TimelineEntry(at, moment, detail)


def test_the_calls_moments_are_marked_where_they_happened() -> None:
    timeline = [
        entry(0.0, Moment.STREAM_STARTED),
        # The VAD is sure at 1.2 s that speech began at 0.7 s; at 2.0 that it ended at 1.4.
        entry(1.2, Moment.SPEECH_STARTED, speech_detail("began", 0.7)),
        entry(2.0, Moment.SPEECH_STOPPED, speech_detail("ended", 1.4)),
        entry(2.1, Moment.AUDIO_SENT, "a1"),
        entry(2.1, Moment.AUDIO_HEARD, "700 ms after"),
        entry(2.6, Moment.SPEECH_STARTED),  # (a record from before the detail)
        entry(2.6, Moment.CLEAR),
        entry(2.6, Moment.TRUNCATE, "a1 at 500 ms"),
        entry(3.0, Moment.SPEECH_STOPPED, speech_detail("ended", 2.9)),
        entry(3.1, Moment.TOOL_STARTED, "weather"),
        entry(3.2, Moment.TOOL_STARTED, "lookup"),
        entry(3.5, Moment.TOOL_FINISHED, "weather"),
        entry(4.0, Moment.KEYS, "5 keys"),
        entry(5.0, Moment.TRUNCATE, "a2 at 100 ms"),  # nothing was queued: no clear
        entry(6.0, Moment.SESSION_LOST, "connection lost"),
        entry(7.0, Moment.ROLLOVER, "after 3500 s"),
        entry(8.0, Moment.SPEECH_STARTED, speech_detail("began", 7.8)),
        entry(9.0, Moment.ENDED, "the caller hung up"),
    ]
    assert markers(timeline, until=9.5) == [
        Marker("caller", 0.7, 1.4, "caller speaking"),
        Marker("heard", 2.1, 2.1, "answer began to play, 700 ms after"),
        Marker("caller", 2.6, 2.9, "caller speaking"),
        Marker("barge_in", 2.6, 2.6, "barge-in: cut a1 at 500 ms"),
        Marker("tool", 3.1, 3.5, "tool weather"),
        Marker("tool", 3.2, 9.5, "tool lookup (unfinished)"),
        Marker("keys", 4.0, 4.0, "caller pressed 5 keys"),
        Marker("barge_in", 5.0, 5.0, "barge-in: cut a2 at 100 ms"),
        Marker("session", 6.0, 6.0, "session lost: connection lost"),
        Marker("session", 7.0, 7.0, "session replaced after 3500 s"),
        Marker("caller", 7.8, 9.5, "caller speaking (until the end)"),
    ]


def test_a_call_with_no_moments_has_no_marks() -> None:
    assert markers([entry(0.0, Moment.STREAM_STARTED), entry(3.0, Moment.ENDED)], 3.0) == []


def test_a_pause_that_resumed_is_marked_as_one_and_a_confirmed_one_as_a_barge_in() -> None:
    """INTERRUPTIONS=confirm: the clear comes first; a resume makes it a pause, a cut
    (a moment later) makes it the barge-in it was."""
    timeline = [
        TimelineEntry(3.44, Moment.CLEAR),
        TimelineEntry(3.44, Moment.PAUSED),
        TimelineEntry(4.10, Moment.RESUMED, "after 660 ms"),
        TimelineEntry(6.00, Moment.CLEAR),
        TimelineEntry(6.00, Moment.PAUSED),
        TimelineEntry(7.10, Moment.TRUNCATE, "item_b at 640 ms"),
    ]
    assert markers(timeline, until=10.0) == [
        Marker("paused", 3.44, 4.1, "paused, then resumed after 660 ms"),
        Marker("barge_in", 6.0, 6.0, "barge-in: cut item_b at 640 ms"),
    ]
