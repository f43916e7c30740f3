"""`phone-bridge replay` over loopback: a call recorded with RECORDING=bridge is replayed
into a running bridge, which meets the very same caller (sample for sample, as its own
recording of the replay shows) and answers as before; replayed into a bridge that answers
later, the command says so, turn by turn, and fails with --fail-on-change."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from bridge.recording_storage import RecordingStorage
from bridge.replay import (
    CHANGED_AT_EXIT,
    CallRecords,
    ReplayError,
    load_source,
    original_turns,
    pair_turns,
    replayed_turns,
    what_changed,
)
from bridge.simulator import SimulatorOptions, simulate_call
from bridge.simulator.replay_script import ReplayScript
from tests.helpers.postgres_server import PostgresServer
from tests.helpers.running_bridge import AUTH_TOKEN, running_bridge, stored_record
from tests.helpers.twilio_side import simulated_call

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def caller_channel(path: Path) -> np.ndarray:
    audio, rate = soundfile.read(path, dtype="int16", always_2d=True)
    assert rate == 8000
    return audio[:, 0]


async def test_a_replayed_call_meets_the_same_caller_and_hears_what_it_heard(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "calls.db")
    async with running_bridge(
        recording="bridge", recordings_dir=str(tmp_path), call_db_path=db
    ) as bridge:
        original, _ = await simulated_call(bridge, turns=3, barge_in_after_ms=600)
        record = await stored_record(bridge, original.call_sid)
        recordings = RecordingStorage(tmp_path)
        source = await asyncio.to_thread(
            load_source, original.call_sid, CallRecords.sqlite(db), recordings
        )
        assert source.original is not None and source.original.call_sid == original.call_sid

        options = SimulatorOptions(
            webhook_url=bridge.webhook_url, auth_token=AUTH_TOKEN, max_duration_s=30
        )
        replay = await simulate_call(
            options, lambda playback: ReplayScript(source.caller, options, playback)
        )
        replayed = await stored_record(bridge, replay.call_sid)

    # The same caller: the bridge's recording of the replay holds the original caller's
    # channel sample for sample, each where it was first said.
    assert replayed.recording is not None and replayed.recording.status == "completed"
    first = caller_channel(tmp_path / f"{original.call_sid}.wav")
    again = caller_channel(tmp_path / f"{replay.call_sid}.wav")
    common = min(len(first), len(again))
    assert common >= len(first) - 8 * 100  # all but the last frames of the original
    assert np.array_equal(first[:common], again[:common])
    # Barge-ins at the same instants as the first time.
    assert [t.speech_start_ms for t in replay.turns] == [t.speech_start_ms for t in original.turns]
    assert [t.barged_in for t in replay.turns] == [False, True, True]

    # Turn for turn, what the caller heard is what they heard the first time.
    rows = pair_turns(original_turns(record), replayed_turns(replay))
    assert len(rows) == 3 and all(row.was and row.now for row in rows)
    assert [row.now.cut for row in rows if row.now] == [True, True, False]
    assert what_changed(rows, latency_tolerance_ms=150, cut_tolerance_ms=40) == []
    cuts = [
        (row.was.truncated_at_ms, row.now.truncated_at_ms)
        for row in rows[:2]
        if row.was and row.now
    ]
    assert all(was is not None and now is not None and abs(now - was) <= 40 for was, now in cuts)


async def test_replayed_into_a_bridge_that_answers_later_the_command_says_what_changed(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "calls.db")
    async with running_bridge(
        recording="bridge", recordings_dir=str(tmp_path), call_db_path=db
    ) as bridge:
        original, _ = await simulated_call(bridge, turns=2, barge_in_after_ms=600)
        await stored_record(bridge, original.call_sid)
    # The same agent, a bridge that waits 400 ms longer for the end of a turn.
    async with running_bridge(vad_silence_ms=900) as slower:
        command = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "replay",
            str(tmp_path / f"{original.call_sid}.wav"), slower.webhook_url, "--fail-on-change",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp_path,
            env={**os.environ, "CALL_DB_PATH": db, "TWILIO_AUTH_TOKEN": AUTH_TOKEN},
        )  # fmt: skip
        out, err = await asyncio.wait_for(command.communicate(), 40)
    text = out.decode()
    assert command.returncode == CHANGED_AT_EXIT, (text, err.decode())
    assert f"replayed {tmp_path / original.call_sid}.wav" in text
    assert "original: " in text and "2 turns, 1 barge-ins" in text
    # ~900 ms, was ~500 ms: the 400 ms the bridge now waits.
    later = re.search(r"turn 1: first audio heard after (\d+) ms, was (\d+) ms \(\+(\d+)\)", text)
    assert later is not None, text
    assert 380 <= int(later[3]) <= 420, later[0]
    # The caller barges in where they did before, into an answer that began 400 ms later:
    # it is cut 400 ms sooner.
    assert "turn 1: its answer was cut at 2" in text
    assert "Traceback" not in err.decode()


async def test_a_call_that_was_not_recorded_cannot_be_replayed(tmp_path: Path) -> None:
    db = str(tmp_path / "calls.db")
    async with running_bridge(call_db_path=db) as bridge:
        original, _ = await simulated_call(bridge, turns=1)
        await stored_record(bridge, original.call_sid)
    with pytest.raises(ReplayError, match="was not recorded"):
        await asyncio.to_thread(
            load_source, original.call_sid, CallRecords.sqlite(db), RecordingStorage(tmp_path)
        )
    with pytest.raises(ReplayError, match=r"no call CA0+ in the call records"):
        await asyncio.to_thread(
            load_source, "CA" + "0" * 32, CallRecords.sqlite(db), RecordingStorage(tmp_path)
        )


async def test_a_call_kept_in_postgresql_is_found_through_call_db_url(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """Several replicas keep their records in one database: `replay CALL_ID` finds the
    call there (and its recording where RECORDINGS_DIR says), and never shows the
    database's password."""
    url = postgres_server.create_database()
    async with running_bridge(
        recording="bridge", recordings_dir=str(tmp_path), call_db_url=url, call_db_path=None
    ) as bridge:
        original, _ = await simulated_call(bridge, turns=1)
        await stored_record(bridge, original.call_sid)
        records = CallRecords.of(bridge.settings)
    assert records is not None
    assert postgres_server.password not in records.where and ":***@" in records.where
    source = await asyncio.to_thread(
        load_source, original.call_sid, records, RecordingStorage(tmp_path)
    )
    assert source.original is not None and source.original.call_sid == original.call_sid
    with pytest.raises(ReplayError, match=r"no call CA0+ in the call records \(CALL_DB_URL "):
        await asyncio.to_thread(load_source, "CA" + "0" * 32, records, RecordingStorage(tmp_path))
    postgres_server.drop_database(url)
