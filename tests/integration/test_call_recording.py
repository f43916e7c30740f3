"""RECORDING=bridge over loopback: a simulated call with two barge-ins is recorded as a
stereo WAV (or FLAC) whose right channel holds exactly what the simulated caller heard
(its own record of every byte), cut where the clears cut it and placed where it played,
and whose left channel holds the caller's speech where it was said; in Opus, the same
audio sits in the same places; a disk that cannot be written costs the recording, not the
call, in every format."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile

from bridge.audio import mulaw_to_pcm16
from bridge.records.model import Recording
from bridge.records.store import SQLiteCallStore
from bridge.simulator import CallReport, HeardAudio
from tests.helpers.records import record
from tests.helpers.running_bridge import (
    RunningBridge,
    running_bridge,
    stored_record,
    wait_until,
)
from tests.helpers.twilio_side import simulated_call

pytestmark = pytest.mark.integration

ALIGNED_MS = 20  # the bound on where audio sits, both channels
PASSWORD = "console-test-password"
SAMPLES_PER_MS = 8


FILES = {"wav": ("wav", "audio/wav"), "flac": ("flac", "audio/flac"), "opus": ("ogg", "audio/ogg")}


def read_stereo(path: Path, subtype: str = "PCM_16") -> tuple[np.ndarray, np.ndarray]:
    info = soundfile.info(str(path))
    assert (info.channels, info.samplerate, info.subtype) == (2, 8000, subtype), info
    stereo, _ = soundfile.read(path, dtype="int16")
    return stereo[:, 0], stereo[:, 1]


def found_at(channel: np.ndarray, pcm: np.ndarray, near_ms: float) -> int | None:
    """Where `pcm` begins in `channel`, searched within 100 ms of `near_ms`: found by its
    first 20 ms of sound (silence would match any silence)."""
    sound = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 1000)
    assert len(sound), "nothing to find: the segment is silent"
    first = int(sound[0])
    probe = pcm[first : first + 160]
    centre = round(near_ms * SAMPLES_PER_MS) + first
    for at in range(max(0, centre - 800), min(len(channel) - len(probe), centre + 800)):
        if np.array_equal(channel[at : at + len(probe)], probe):
            return at - first
    return None


async def assert_served(bridge: RunningBridge, call_sid: str, path: Path, media_type: str) -> None:
    """The console's page of the call plays the recording (behind the login, as
    `media_type`) and seeks in it (range requests), at its address and at the one it had
    before FLAC and Opus."""
    async with httpx.AsyncClient(base_url=bridge.base_url) as http:
        url = f"/console/calls/{call_sid}/recording"
        refused = await http.get(url)
        await http.post("/console/login", data={"password": PASSWORD})
        page = await http.get(f"/console/calls/{call_sid}")
        seek = await http.get(url, headers={"Range": "bytes=44-8043"})
        whole = await http.get(url)
        old_address = await http.get(url + ".wav")
    assert refused.status_code == 401
    assert '<audio id="recording"' in page.text and f'src="{url}"' in page.text
    assert (seek.status_code, len(seek.content)) == (206, 8000)
    assert seek.headers["content-range"] == f"bytes 44-8043/{path.stat().st_size}"
    assert whole.content == old_address.content == path.read_bytes()
    for response in (seek, whole, old_address):
        assert response.headers["content-type"] == media_type


async def recorded_call(tmp_path: Path, recording_format: str) -> tuple[CallReport, Path]:
    """A simulated call with two barge-ins, recorded in `recording_format`: what the
    caller measured, and the file (served by the console, its record complete)."""
    suffix, media_type = FILES[recording_format]
    async with running_bridge(
        recording="bridge",
        recording_format=recording_format,
        recordings_dir=str(tmp_path),
        console_password=PASSWORD,
    ) as bridge:
        report, _ = await simulated_call(bridge, turns=3, barge_in_after_ms=600)
        record = await stored_record(bridge, report.call_sid)
        path = tmp_path / f"{report.call_sid}.{suffix}"
        await assert_served(bridge, report.call_sid, path, media_type)
    assert record.recording is not None and record.recording.status == "completed"
    assert record.recording.url == path.name
    assert record.recording.duration_s == round(soundfile.info(str(path)).frames / 8000)
    return report, path


def heard_stretches(report: CallReport) -> Iterator[tuple[HeardAudio, np.ndarray]]:
    """Each stretch the caller heard without a break, with its audio as 16-bit samples."""
    heard = report.heard_audio
    assert sum(s.nbytes for s in report.heard_segments) == len(heard)
    offset = 0
    for segment in report.heard_segments:
        said = heard[offset : offset + segment.nbytes]
        offset += segment.nbytes
        yield segment, np.frombuffer(mulaw_to_pcm16(said), dtype=np.int16)


@pytest.mark.parametrize("recording_format", ["wav", "flac"])
async def test_the_assistant_channel_is_what_the_caller_heard_cut_and_placed_as_heard(
    tmp_path: Path, recording_format: str
) -> None:
    report, path = await recorded_call(tmp_path, recording_format)
    caller, assistant = read_stereo(path)  # (FLAC: lossless, so every byte as in a WAV)
    cuts = 0
    for segment, said in heard_stretches(report):
        start = found_at(assistant, said, segment.start_ms)
        assert start is not None, segment
        # Placed where it played ...
        assert abs(start / SAMPLES_PER_MS - segment.start_ms) <= ALIGNED_MS, segment
        # ... and exactly what was heard: every byte, and it stops where the clear cut it.
        recorded = assistant[start : start + len(said)]
        same = int(np.argmin(recorded == said)) if not np.array_equal(recorded, said) else None
        tail_ms = 0.0 if same is None else (len(said) - same) / SAMPLES_PER_MS
        assert tail_ms <= ALIGNED_MS, (segment, tail_ms)
        if segment.cut:
            cuts += 1
            # Nothing the caller did not hear follows the cut (within the bound).
            cut_at = start + len(said) + ALIGNED_MS * SAMPLES_PER_MS
            assert not np.any(assistant[cut_at : cut_at + 200 * SAMPLES_PER_MS]), segment
    assert cuts == 2
    assert_the_caller_speaks_where_they_did(caller, report)


def assert_the_caller_speaks_where_they_did(caller: np.ndarray, report: CallReport) -> None:
    for turn in report.turns:
        window = caller[
            round((turn.speech_start_ms - 100) * SAMPLES_PER_MS) : round(
                (turn.speech_start_ms + 200) * SAMPLES_PER_MS
            )
        ]
        loud = np.flatnonzero(np.abs(window.astype(np.int32)) > 1000)
        assert len(loud), turn
        onset_ms = turn.speech_start_ms - 100 + loud[0] / SAMPLES_PER_MS
        assert abs(onset_ms - turn.speech_start_ms) <= ALIGNED_MS, (turn, onset_ms)


def placed_at(channel: np.ndarray, pcm: np.ndarray, near_ms: float) -> tuple[int, float]:
    """Where `pcm` begins in `channel`, searched within 100 ms of `near_ms` by how alike
    200 ms of it from its first sound are (a lossy codec changes every sample): the sample,
    and that likeness (a correlation coefficient)."""
    first = int(np.flatnonzero(np.abs(pcm.astype(np.int32)) > 1000)[0])
    probe = pcm[first : first + 200 * SAMPLES_PER_MS].astype(np.float64)
    centre = round(near_ms * SAMPLES_PER_MS) + first
    likeness = {
        at: float(np.corrcoef(channel[at : at + len(probe)], probe)[0, 1])
        for at in range(max(0, centre - 800), min(len(channel) - len(probe), centre + 800))
    }
    best = max(likeness, key=likeness.__getitem__)
    return best - first, likeness[best]


async def test_an_opus_recording_holds_the_call_on_its_own_clock(tmp_path: Path) -> None:
    """Opus is lossy: no byte is kept, but every stretch the caller heard sits where it
    played, the caller's speech where it was said, and the file lasts as long as the call
    streamed."""
    report, path = await recorded_call(tmp_path, "opus")
    caller, assistant = read_stereo(path, subtype="OPUS")
    streamed = report.frames_sent * 20 * SAMPLES_PER_MS  # the caller's frames, end to end
    assert streamed <= len(caller) <= streamed + ALIGNED_MS * SAMPLES_PER_MS
    placed = 0
    for segment, said in heard_stretches(report):
        if len(said) < 200 * SAMPLES_PER_MS:
            continue  # too short to tell apart from its neighbours by its likeness
        start, likeness = placed_at(assistant, said, segment.start_ms)
        assert likeness > 0.9, (segment, likeness)
        assert abs(start / SAMPLES_PER_MS - segment.start_ms) <= ALIGNED_MS, segment
        placed += 1
    assert placed >= 3  # the two answers cut by the barge-ins, and the last one
    assert_the_caller_speaks_where_they_did(caller, report)


@pytest.mark.parametrize("recording_format", ["wav", "flac", "opus"])
async def test_a_disk_that_cannot_be_written_costs_the_recording_not_the_call(
    tmp_path: Path, recording_format: str
) -> None:
    blocked = tmp_path / "recordings"
    blocked.write_text("a file where the folder should be")
    async with running_bridge(
        recording="bridge", recording_format=recording_format, recordings_dir=str(blocked / "x")
    ) as bridge:
        report, _ = await simulated_call(bridge, turns=1)
        record = await stored_record(bridge, report.call_sid)
    assert report.completed and report.heard_audio  # the call went on as ever
    assert record.recording is not None and record.recording.status == "failed"
    assert "could not be written" in record.recording.error


@pytest.mark.parametrize("recording_format", ["wav", "flac", "opus"])
async def test_deleting_a_call_from_the_console_deletes_its_recording(
    tmp_path: Path, recording_format: str
) -> None:
    async with running_bridge(
        recording="bridge",
        recording_format=recording_format,
        recordings_dir=str(tmp_path),
        console_password=PASSWORD,
    ) as bridge:
        report, _ = await simulated_call(bridge, turns=1)
        await stored_record(bridge, report.call_sid)
        wav = tmp_path / f"{report.call_sid}.{FILES[recording_format][0]}"
        assert wav.is_file()
        delete = f"/console/calls/{report.call_sid}/delete"
        async with httpx.AsyncClient(base_url=bridge.base_url) as http:
            await http.post("/console/login", data={"password": PASSWORD})
            other_site = await http.post(delete, headers={"Origin": "https://evil.example"})
            assert other_site.status_code == 403 and wav.is_file()
            deleted = await http.post(delete)
            gone = await http.get(f"/console/calls/{report.call_sid}")
    assert deleted.status_code == 303 and deleted.headers["location"] == "/console/calls"
    assert not wav.exists() and gone.status_code == 404


async def test_recordings_past_the_retention_are_deleted_with_their_timelines(
    tmp_path: Path,
) -> None:
    db, recordings = tmp_path / "calls.db", tmp_path / "recordings"
    recordings.mkdir()
    # One old recording in each format (whichever RECORDING_FORMAT was when it was made).
    old = {"CA" + str(k) * 32: suffix for k, suffix in enumerate(("wav", "flac", "ogg"), 1)}
    new_sid = "CA" + "9" * 32
    files = {
        sid: recordings / f"{sid}.{suffix}" for sid, suffix in {**old, new_sid: "flac"}.items()
    }
    store = SQLiteCallStore(str(db))
    await store.open()
    for sid, path in files.items():
        path.write_bytes(b"audio")
        heard = Recording("bridge", "completed", url=path.name, duration_s=60)
        started = time.time() - (0 if sid == new_sid else 3) * 86400 - 120
        await store.save(replace(record(sid, started_at=started), recording=heard))
    await store.close()

    async with running_bridge(
        call_db_path=str(db),
        recording="bridge",
        recordings_dir=str(recordings),
        recording_retention_days=2,
    ) as bridge:
        await wait_until(
            lambda: not any(files[sid].exists() for sid in old), 5, "the old recordings to go"
        )
        kept = {sid: await bridge.app.state.store.get(sid) for sid in files}
    for sid in old:
        gone = kept[sid]
        assert gone is not None and gone.recording is not None
        assert gone.recording.status == "deleted"
    assert files[new_sid].exists()
    new = kept[new_sid]
    assert new is not None and new.recording is not None and new.recording.status == "completed"
