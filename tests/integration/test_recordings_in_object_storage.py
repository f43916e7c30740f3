"""RECORDINGS_URL=s3://bucket/prefix against a real S3-protocol server on loopback (moto's,
spoken to over HTTP by the bridge's own client): a call with barge-ins recorded into the
bucket as the caller heard it, played back, pictured and replayed from there, and deleted;
a long recording uploaded in parts, byte for byte the file the disk would hold; a bridge
that dies mid-call losing at most the part in progress; a bucket that is away costing the
recording, never the call; retention deleting the objects."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import time
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import soundfile

from bridge import object_storage
from bridge.audio import pcm16_to_mulaw
from bridge.call_recording import CallRecorder
from bridge.logs import configure_logging
from bridge.object_storage import PART_SIZE
from bridge.recording_storage import RecordingStorage, timeline_document
from bridge.records.model import Recording
from bridge.records.store import SQLiteCallStore
from bridge.replay import CallRecords, load_source
from tests.helpers.object_storage import (
    SECRET_ACCESS_KEY,
    RecordingsBucket,
    start_s3_server,
    use_test_credentials,
)
from tests.helpers.recorded_audio import assert_recorded_as_heard, assert_served, read_stereo
from tests.helpers.records import record as stored_call
from tests.helpers.running_bridge import eventually, running_bridge, stored_record
from tests.helpers.twilio_side import simulated_call

pytestmark = pytest.mark.integration

PASSWORD = "console-test-password"
RATE = 8000


async def test_a_call_is_recorded_in_the_bucket_as_heard_and_played_pictured_replayed_from_it(
    s3_bucket: RecordingsBucket, tmp_path: Path
) -> None:
    db, spool = str(tmp_path / "calls.db"), tmp_path / "spool"
    async with running_bridge(
        recording="bridge",
        recordings_dir=str(spool),
        console_password=PASSWORD,
        call_db_path=db,
        **s3_bucket.settings,
    ) as bridge:
        report, _ = await simulated_call(bridge, turns=3, barge_in_after_ms=600)
        record = await stored_record(bridge, report.call_sid)
        name = f"{report.call_sid}.wav"
        content = s3_bucket.read(name)
        await assert_served(bridge, report.call_sid, content, "audio/wav", PASSWORD)
        async with httpx.AsyncClient(base_url=bridge.base_url) as http:
            await http.post("/console/login", data={"password": PASSWORD})
            picture = await http.get(f"/console/calls/{report.call_sid}/waveform.json")
            tail = await http.get(
                f"/console/calls/{report.call_sid}/recording", headers={"Range": "bytes=-100"}
            )
            past = await http.get(
                f"/console/calls/{report.call_sid}/recording",
                headers={"Range": f"bytes={len(content)}-"},
            )
        replayed = await asyncio.to_thread(
            load_source, report.call_sid, CallRecords.sqlite(db), bridge.app.state.recordings
        )
        stored_names = s3_bucket.names()
        timeline = orjson.loads(s3_bucket.read(f"{report.call_sid}.timeline.json"))
        async with httpx.AsyncClient(base_url=bridge.base_url) as http:
            await http.post("/console/login", data={"password": PASSWORD})
            deleted = await http.post(f"/console/calls/{report.call_sid}/delete")

    # The record says where: the object, in the bucket under the prefix.
    assert record.recording is not None and record.recording.status == "completed"
    assert record.recording.url == s3_bucket.url + name
    caller, assistant = read_stereo(io.BytesIO(content))
    assert record.recording.duration_s == round(len(caller) / RATE)
    # Exactly what the caller heard, where they heard it, cut where the barge-ins cut it.
    assert_recorded_as_heard(caller, assistant, report, cuts=2)
    # Beside it, the call's timeline, as the console offers it.
    assert stored_names == sorted([name, f"{report.call_sid}.timeline.json"])
    assert timeline == orjson.loads(timeline_document(record)) and timeline["timeline"]
    # The console streams any range of it, and pictures it.
    assert (tail.status_code, tail.content) == (206, content[-100:])
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(content)}"
    assert picture.status_code == 200, picture.text
    assert picture.json()["duration_s"] == pytest.approx(len(caller) / RATE, abs=0.001)
    assert max(picture.json()["channels"]["assistant"]) > 0
    # Replay finds the call's recording there and plays its caller.
    assert replayed.caller == pcm16_to_mulaw(caller.tobytes())
    assert replayed.original is not None and replayed.original.call_sid == report.call_sid
    # Nothing of it is left on the bridge's disk; deleting the call deletes both objects.
    assert list(spool.iterdir()) == []
    assert deleted.status_code == 303 and s3_bucket.names() == []


def noise_frames(seconds: int, seed: int = 0) -> list[list[str]]:
    """The caller's 20 ms frames for `seconds`, a second's worth a list: noise, which
    neither format can make much smaller."""
    rng = np.random.default_rng(seed)
    return [
        [base64.b64encode(rng.integers(0, 256, 160, dtype=np.uint8).tobytes()).decode()] * 0
        + [
            base64.b64encode(rng.integers(0, 256, 160, dtype=np.uint8).tobytes()).decode()
            for _ in range(50)
        ]
        for _ in range(seconds)
    ]


async def feed(recorders: list[CallRecorder], frames: list[list[str]]) -> None:
    """The frames to every recorder, flushed each second as the bridge does (faster than
    real time)."""
    for second, frames_of_second in enumerate(frames):
        for k, frame in enumerate(frames_of_second):
            for recorder in recorders:
                recorder.caller(frame, second + (k + 1) * 0.02)
        for recorder in recorders:
            await recorder.flush(second + 1)


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
async def test_a_long_recording_goes_up_in_parts_and_is_the_file_the_disk_would_hold(
    s3_bucket: RecordingsBucket, tmp_path: Path, suffix: str
) -> None:
    """Over 5 MiB: parts of S3's real least size (the server enforces it); the
    header written at the close (WAV's lengths, FLAC's STREAMINFO) is in the first part,
    uploaded again: the object is byte for byte what the disk holds."""
    name = f"CA{'1' * 32}{suffix}"
    on_disk = CallRecorder(tmp_path / "disk" / name, 0.0)
    uploaded = CallRecorder(tmp_path / "spool" / name, 0.0, s3_bucket.bucket())
    await feed([on_disk, uploaded], noise_frames(420 if suffix == ".wav" else 520))
    done = [await recorder.finish() for recorder in (on_disk, uploaded)]
    assert [r.status for r in done] == ["completed", "completed"], done
    content = (tmp_path / "disk" / name).read_bytes()
    assert len(content) > PART_SIZE
    assert s3_bucket.read(name) == content
    assert s3_bucket.etag(name).endswith(f"-{-(-len(content) // PART_SIZE)}")  # its parts
    assert list((tmp_path / "spool").iterdir()) == []
    with s3_bucket.bucket().reader(name) as read_back:
        assert soundfile.info(read_back).frames == done[1].duration_s * RATE


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
async def test_a_recording_under_a_part_goes_up_whole_at_its_end_in_every_format(
    s3_bucket: RecordingsBucket, tmp_path: Path, suffix: str
) -> None:
    name = f"CA{'7' * 32}{suffix}"
    on_disk = CallRecorder(tmp_path / "disk" / name, 0.0)
    uploaded = CallRecorder(tmp_path / "spool" / name, 0.0, s3_bucket.bucket())
    await feed([on_disk, uploaded], noise_frames(20))
    for recorder in (on_disk, uploaded):
        assert (await recorder.finish()).status == "completed"
    content = s3_bucket.read(name)
    assert "-" not in s3_bucket.etag(name)  # one request, no parts
    disk = (tmp_path / "disk" / name).read_bytes()
    if suffix == ".ogg":  # (each Ogg stream gets a serial number of its own)
        assert np.array_equal(
            soundfile.read(io.BytesIO(content))[0], soundfile.read(io.BytesIO(disk))[0]
        )
    else:
        assert content == disk


async def test_a_bridge_that_dies_mid_call_loses_at_most_the_part_in_progress(
    s3_bucket: RecordingsBucket, tmp_path: Path
) -> None:
    name = f"CA{'2' * 32}.wav"
    on_disk = CallRecorder(tmp_path / "disk" / name, 0.0)
    dying = CallRecorder(tmp_path / "spool" / name, 0.0, s3_bucket.bucket())
    frames = noise_frames(420)
    await feed([on_disk, dying], frames)
    await on_disk.finish()
    # The bridge is gone: `dying` is never finished. Another bridge, later, tidies up,
    # touching no other upload under the prefix (it may be shared).
    bucket = s3_bucket.bucket()
    theirs = bucket.start_upload("notes.txt", "text/plain")
    bucket.upload_part("notes.txt", theirs, 1, b"not ours")
    storage = RecordingStorage(tmp_path / "spool", bucket)
    assert s3_bucket.names() == []  # (an unfinished upload is no object yet)
    assert await storage.tidy(idle_s=0) == 1
    unfinished = bucket.client.list_multipart_uploads(Bucket=s3_bucket.name)["Uploads"]
    assert [u["UploadId"] for u in unfinished] == [theirs]
    left = s3_bucket.read(name)
    caller, _ = read_stereo(io.BytesIO(left))  # reads whole: its header says "to the end"
    whole, _ = read_stereo(tmp_path / "disk" / name)
    assert len(left) == 2 * PART_SIZE  # the two full parts; the third, in progress, lost
    assert np.array_equal(caller, whole[: len(caller)])
    assert len(whole) - len(caller) <= PART_SIZE // 4  # at most a part's frames
    assert list((tmp_path / "spool").iterdir()) == []  # (its spool, left behind, gone too)


async def test_the_part_in_progress_goes_up_every_minute_so_a_dying_bridge_loses_at_most_that(
    s3_bucket: RecordingsBucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a part's size, a call's audio is still uploaded (its part again, each time)
    every PART_EVERY_S: here every write, as if each second were a minute."""
    monkeypatch.setattr(object_storage, "PART_EVERY_S", 0.0)
    name = f"CA{'3' * 32}.wav"
    on_disk = CallRecorder(tmp_path / "disk" / name, 0.0)
    dying = CallRecorder(tmp_path / "spool" / name, 0.0, s3_bucket.bucket())
    await feed([on_disk, dying], noise_frames(30))
    await on_disk.finish()
    assert await RecordingStorage(tmp_path, s3_bucket.bucket()).tidy(idle_s=0) == 1
    caller, _ = read_stereo(io.BytesIO(s3_bucket.read(name)))
    whole, _ = read_stereo(tmp_path / "disk" / name)
    assert np.array_equal(caller, whole[: len(caller)])
    # Lost: what the recorder held back (SETTLE_S) and the last second's write.
    assert len(whole) - len(caller) <= 3 * RATE


async def test_a_bucket_that_is_away_costs_the_recording_not_the_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    use_test_credentials(monkeypatch, tmp_path)
    down = start_s3_server()
    down.stop()  # the store is down: its address refuses connections
    settings = RecordingsBucket(down, "recordings-down").settings
    with caplog.at_level(logging.INFO):
        async with running_bridge(
            recording="bridge", recordings_dir=str(tmp_path / "spool"), **settings
        ) as bridge:
            report, _ = await simulated_call(bridge, turns=1)
            record = await stored_record(bridge, report.call_sid, timeout=UPLOAD_WAIT_S)
    assert report.completed and report.heard_audio  # the call went on as ever
    assert record.recording is not None and record.recording.status == "failed"
    assert record.recording.error.startswith("could not be written: "), record.recording
    assert record.recording.url == f"s3://recordings-down/calls/{report.call_sid}.wav"
    stopped = [r for r in caplog.records if r.name == "bridge.call_recording"]
    assert len(stopped) == 1 and "the call goes on" in stopped[0].getMessage()
    assert any("will fail" in r.getMessage() for r in caplog.records)  # said once, at start
    assert SECRET_ACCESS_KEY not in caplog.text + record.recording.error
    assert list((tmp_path / "spool").iterdir()) == []


UPLOAD_WAIT_S = 20  # a refused connection, tried 3 times with botocore's backoff


async def test_recordings_past_the_retention_are_deleted_from_the_bucket(
    s3_bucket: RecordingsBucket, tmp_path: Path
) -> None:
    db = tmp_path / "calls.db"
    old, new = "CA" + "4" * 32, "CA" + "5" * 32
    elsewhere = "CA" + "6" * 32  # a record naming another bucket: never followed
    bucket = s3_bucket.bucket()
    store = SQLiteCallStore(str(db))
    await store.open()
    for sid, days_old, url in (
        (old, 3, bucket.url_of(f"{old}.flac")),
        (new, 0, bucket.url_of(f"{new}.wav")),
        (elsewhere, 3, f"s3://another-bucket/calls/{elsewhere}.wav"),
    ):
        for name in (url.rsplit("/", 1)[1], f"{sid}.timeline.json"):
            bucket.put(name, b"audio", "application/octet-stream")
        heard = Recording("bridge", "completed", url=url, duration_s=60)
        started = time.time() - days_old * 86400 - 120
        await store.save(replace(stored_call(sid, started_at=started), recording=heard))
    await store.close()

    async def old_gone() -> bool:
        names = await asyncio.to_thread(s3_bucket.names)
        return f"{old}.flac" not in names

    async with running_bridge(
        call_db_path=str(db),
        recording="bridge",
        recordings_dir=str(tmp_path / "spool"),
        recording_retention_days=2,
        **s3_bucket.settings,
    ) as bridge:
        await eventually(old_gone, 10, "the old recording to go")
        kept = await bridge.app.state.store.get(old)
    assert kept is not None and kept.recording is not None
    assert kept.recording.status == "deleted"
    assert s3_bucket.names() == sorted(
        [f"{new}.wav", f"{new}.timeline.json", f"{elsewhere}.wav", f"{elsewhere}.timeline.json"]
    )


async def test_debug_logs_never_show_the_buckets_credentials(
    s3_bucket: RecordingsBucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At DEBUG botocore logs every request's headers: a role's session token among them."""
    token = "s3-test-session-token-never-logged-FQoGZXIvYXdzEJr"
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        configure_logging("debug", fmt="text", stream=stream)
        bucket = s3_bucket.bucket()
        bucket.put("CA1.wav", b"RIFF", "audio/wav")
        assert bucket.size_and_version("CA1.wav") is not None
        logging.getLogger("bridge.object_storage").debug("bridge debug")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    out = stream.getvalue()
    assert "bridge debug" in out
    assert token not in out and SECRET_ACCESS_KEY not in out


async def test_the_console_says_a_recording_cannot_be_reached_while_the_bucket_is_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    use_test_credentials(monkeypatch, tmp_path)
    down = start_s3_server()
    down.stop()
    bucket = RecordingsBucket(down, "recordings-down")
    sid = "CA" + "8" * 32
    heard = Recording("bridge", "completed", url=f"{bucket.url}{sid}.wav", duration_s=60)
    async with running_bridge(
        recording="bridge",
        recordings_dir=str(tmp_path / "spool"),
        console_password=PASSWORD,
        **bucket.settings,
    ) as bridge:
        await bridge.app.state.store.save(replace(stored_call(sid), recording=heard))
        async with httpx.AsyncClient(base_url=bridge.base_url, timeout=30) as http:
            await http.post("/console/login", data={"password": PASSWORD})
            answers = [
                await http.get(f"/console/calls/{sid}/{what}")
                for what in ("recording", "waveform.json")
            ]
            deleted = await http.post(f"/console/calls/{sid}/delete")
            gone = await http.get(f"/console/calls/{sid}")
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.json() == {"error": f"the recording of the call {sid} could not be reached"}
    # The operator's delete still forgets the call; the object's is said in the log.
    assert deleted.status_code == 303 and gone.status_code == 404
    assert any("could not delete the recording" in r.getMessage() for r in caplog.records)
    assert "Traceback" not in caplog.text and SECRET_ACCESS_KEY not in caplog.text
