"""RECORDING=bridge over loopback: a simulated call with two barge-ins is recorded as a
stereo WAV whose right channel holds exactly what the simulated caller heard (its own
record of every byte), cut where the clears cut it and placed where it played, and whose
left channel holds the caller's speech where it was said; a disk that cannot be written
costs the recording, not the call."""

from __future__ import annotations

import time
import wave
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest

from bridge.audio import mulaw_to_pcm16
from bridge.records.model import Recording
from bridge.records.store import SQLiteCallStore
from tests.helpers.records import record
from tests.helpers.running_bridge import running_bridge, stored_record, wait_until
from tests.helpers.twilio_side import recorded_call_with_two_barge_ins, simulated_call

pytestmark = pytest.mark.integration

ALIGNED_MS = 20  # the bound on where audio sits, both channels
PASSWORD = "console-test-password"
SAMPLES_PER_MS = 8


def read_stereo(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    stereo = frames.reshape(-1, 2)
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


async def test_the_assistant_channel_is_what_the_caller_heard_cut_and_placed_as_heard(
    tmp_path: Path,
) -> None:
    async with (
        recorded_call_with_two_barge_ins(tmp_path, PASSWORD) as (bridge, report, record),
        httpx.AsyncClient(base_url=bridge.base_url) as http,
    ):
        url = f"/console/calls/{report.call_sid}/recording.wav"
        refused = await http.get(url)
        await http.post("/console/login", data={"password": PASSWORD})
        page = await http.get(f"/console/calls/{report.call_sid}")
        seek = await http.get(url, headers={"Range": "bytes=44-8043"})
        whole = await http.get(url)

    # The console plays it, behind the login, and seeks in it (range requests).
    assert refused.status_code == 401
    assert '<audio id="recording"' in page.text and url in page.text
    assert (seek.status_code, len(seek.content)) == (206, 8000)
    assert whole.content == (tmp_path / f"{report.call_sid}.wav").read_bytes()

    assert record.recording is not None and record.recording.status == "completed"
    path = tmp_path / f"{report.call_sid}.wav"
    assert record.recording.url == path.name
    caller, assistant = read_stereo(path)

    heard = report.heard_audio
    assert sum(s.nbytes for s in report.heard_segments) == len(heard)
    cuts = 0
    offset = 0
    for segment in report.heard_segments:
        said = np.frombuffer(
            mulaw_to_pcm16(heard[offset : offset + segment.nbytes]), dtype=np.int16
        )
        offset += segment.nbytes
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

    # The caller's speech sits where it was said.
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


async def test_a_disk_that_cannot_be_written_costs_the_recording_not_the_call(
    tmp_path: Path,
) -> None:
    blocked = tmp_path / "recordings"
    blocked.write_text("a file where the folder should be")
    async with running_bridge(recording="bridge", recordings_dir=str(blocked / "x")) as bridge:
        report, _ = await simulated_call(bridge, turns=1)
        record = await stored_record(bridge, report.call_sid)
    assert report.completed and report.heard_audio  # the call went on as ever
    assert record.recording is not None and record.recording.status == "failed"
    assert "could not be written" in record.recording.error


async def test_deleting_a_call_from_the_console_deletes_its_recording(tmp_path: Path) -> None:
    async with running_bridge(
        recording="bridge", recordings_dir=str(tmp_path), console_password=PASSWORD
    ) as bridge:
        report, _ = await simulated_call(bridge, turns=1)
        await stored_record(bridge, report.call_sid)
        wav = tmp_path / f"{report.call_sid}.wav"
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
    old_sid, new_sid = "CA" + "1" * 32, "CA" + "2" * 32
    for sid in (old_sid, new_sid):
        (recordings / f"{sid}.wav").write_bytes(b"RIFF")
    store = SQLiteCallStore(str(db))
    await store.open()
    for sid, age_days in ((old_sid, 3), (new_sid, 0)):
        heard = Recording("bridge", "completed", url=f"{sid}.wav", duration_s=60)
        started = time.time() - age_days * 86400 - 120
        await store.save(replace(record(sid, started_at=started), recording=heard))
    await store.close()

    async with running_bridge(
        call_db_path=str(db),
        recording="bridge",
        recordings_dir=str(recordings),
        recording_retention_days=2,
    ) as bridge:
        await wait_until(
            lambda: not (recordings / f"{old_sid}.wav").exists(), 5, "the old recording to go"
        )
        old = await bridge.app.state.store.get(old_sid)
        new = await bridge.app.state.store.get(new_sid)
    assert old is not None and old.recording is not None and old.recording.status == "deleted"
    assert (recordings / f"{new_sid}.wav").exists()
    assert new is not None and new.recording is not None and new.recording.status == "completed"
