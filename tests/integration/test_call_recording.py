"""RECORDING=bridge over loopback: a simulated call with two barge-ins is recorded as a
stereo WAV (or FLAC) whose right channel holds exactly what the simulated caller heard
(its own record of every byte), cut where the clears cut it and placed where it played,
and whose left channel holds the caller's speech where it was said; in Opus, the same
audio sits in the same places; a disk that cannot be written costs the recording, not the
call, in every format."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile

from bridge.records.model import Recording
from bridge.records.store import SQLiteCallStore
from bridge.simulator import CallReport
from tests.helpers.recorded_audio import (
    ALIGNED_MS,
    SAMPLES_PER_MS,
    assert_recorded_as_heard,
    assert_served,
    assert_the_caller_speaks_where_they_did,
    heard_stretches,
    read_stereo,
)
from tests.helpers.records import record
from tests.helpers.running_bridge import (
    running_bridge,
    stored_record,
    wait_until,
)
from tests.helpers.twilio_side import simulated_call

pytestmark = pytest.mark.integration

PASSWORD = "console-test-password"


FILES = {"wav": ("wav", "audio/wav"), "flac": ("flac", "audio/flac"), "opus": ("ogg", "audio/ogg")}


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
        await assert_served(bridge, report.call_sid, path.read_bytes(), media_type, PASSWORD)
    assert record.recording is not None and record.recording.status == "completed"
    assert record.recording.url == path.name
    assert record.recording.duration_s == round(soundfile.info(str(path)).frames / 8000)
    return report, path


@pytest.mark.parametrize("recording_format", ["wav", "flac"])
async def test_the_assistant_channel_is_what_the_caller_heard_cut_and_placed_as_heard(
    tmp_path: Path, recording_format: str
) -> None:
    report, path = await recorded_call(tmp_path, recording_format)
    caller, assistant = read_stereo(path)  # (FLAC: lossless, so every byte as in a WAV)
    assert_recorded_as_heard(caller, assistant, report, cuts=2)


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
