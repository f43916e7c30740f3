"""Call records kept in SQLite: what the console lists, finds and reads back after a call."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bridge.core.summary import TranscriptLine
from bridge.core.timeline import Moment, TimelineEntry
from bridge.records import store as records
from bridge.records.model import CallRecord, Recording, TurnTiming, WebhookDelivery
from bridge.records.store import SQLiteCallStore, apply_migrations

T0 = 1_767_000_000.0  # an afternoon in late 2025


def make_record(call_sid: str = "CA0001", **changes: Any) -> CallRecord:
    record = CallRecord(
        call_sid=call_sid,
        stream_sid="MZ" + call_sid[2:],
        from_number="+14155550123",
        to_number="+442079460000",
        profile="front-desk",
        direction="inbound",
        started_at=T0,
        ended_at=T0 + 93.25,
        outcome="caller_hung_up",
        end_reason="The caller hung up.",
        model="gpt-realtime",
        turns=(
            TurnTiming(1, 2150.5, 2890.25, 3010.0),
            TurnTiming(2, 9400.0, 10050.75, None, barged_in=True, truncated_at_ms=1320),
            TurnTiming(3, None, None, None),
        ),
        barge_ins=1,
        reconnects=0,
        tokens={
            "text_in": 1245,
            "text_cached": 1216,
            "audio_in": 856,
            "audio_cached": 576,
            "text_out": 87,
            "audio_out": 345,
            "transcription": 120,
        },
        cost_usd=0.0421,
        transcript=(
            TranscriptLine("assistant", "Hello, Pizza Palace, how can I help?", at=0.62),
            TranscriptLine("caller", "A large margherita please", at=1.875),
            TranscriptLine("assistant", "Sure, that will be", cut=True, at=None),
        ),
        timeline=(
            TimelineEntry(-0.412, Moment.WEBHOOK_ANSWERED),
            TimelineEntry(0.0, Moment.STREAM_STARTED),
            TimelineEntry(9.9, Moment.SPEECH_STARTED),
            TimelineEntry(9.9, Moment.CLEAR),
            TimelineEntry(9.9, Moment.TRUNCATE, "item_2 at 1320 ms"),
            TimelineEntry(93.25, Moment.ENDED, "the caller hung up"),
        ),
        timeline_dropped=3,
    )
    return replace(record, **changes)


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "calls.db")


@pytest.fixture
async def store(db_path: str) -> AsyncIterator[SQLiteCallStore]:
    s = SQLiteCallStore(db_path)
    await s.open()
    yield s
    await s.close()


async def open_store(path: str) -> SQLiteCallStore:
    s = SQLiteCallStore(path)
    await s.open()
    return s


# ------------------------------------------------------------------ save and get


@pytest.mark.parametrize("where", ["file", "memory"])
async def test_a_full_record_reads_back_equal(where: str, db_path: str) -> None:
    s = await open_store(db_path if where == "file" else ":memory:")
    record = make_record(final_status="completed", duration_s=94)
    await s.save(record)
    got = await s.get("CA0001")
    await s.close()

    assert got == record
    assert got is not None
    assert got.duration_ms == pytest.approx(93_250.0)


async def test_records_survive_a_restart(db_path: str) -> None:
    first = await open_store(db_path)
    await first.save(make_record())
    await first.close()

    second = await open_store(db_path)
    try:
        assert await second.get("CA0001") == make_record()
    finally:
        await second.close()


async def test_awkward_strings_are_stored_verbatim(store: SQLiteCallStore) -> None:
    nasty = "O'Brien said \"hi\"\nthen: Robert'); DROP TABLE calls;-- 👋 Zürich \\ % _ \t"
    record = make_record(
        profile=nasty,
        end_reason=nasty,
        transcript=(TranscriptLine("caller", nasty), TranscriptLine("assistant", "")),
    )
    await store.save(record)

    assert await store.get("CA0001") == record
    assert [s.call_sid for s in await store.search()] == ["CA0001"]


async def test_an_empty_call_round_trips(store: SQLiteCallStore) -> None:
    # A call refused before the model spoke: nothing but ids and the outcome.
    record = make_record(
        profile=None, outcome="refused", turns=(), barge_ins=0, tokens={}, cost_usd=None,
        transcript=(),
    )  # fmt: skip
    await store.save(record)

    assert await store.get("CA0001") == record


async def test_an_unknown_call_is_none(store: SQLiteCallStore) -> None:
    await store.save(make_record())
    assert await store.get("CA9999") is None
    assert await store.get("") is None


async def test_a_call_is_recorded_once_and_a_second_record_never_replaces_it(
    store: SQLiteCallStore,
) -> None:
    first = make_record()
    assert not await store.has("CA0001")
    assert await store.save(first) is True
    assert await store.has("CA0001")
    replayed = make_record(
        outcome="transferred",
        transcript=(TranscriptLine("caller", "put me through to billing"),),
        turns=(TurnTiming(1, 100.0, 200.0, 300.0),),
    )
    assert await store.save(replayed) is False

    assert await store.get("CA0001") == first
    [summary] = await store.search()
    assert summary.outcome == first.outcome
    assert await store.search("billing") == []


async def test_concurrent_saves_are_all_kept(store: SQLiteCallStore) -> None:
    sids = [f"CA{i:04d}" for i in range(40)]
    await asyncio.gather(
        *(store.save(make_record(sid, started_at=T0 + i)) for i, sid in enumerate(sids))
    )

    assert [s.call_sid for s in await store.search(limit=100)] == sids[::-1]


# ------------------------------------------------------------------------ search


@pytest.fixture
async def three_calls(store: SQLiteCallStore) -> SQLiteCallStore:
    await store.save(make_record("CAaaa111", started_at=T0, ended_at=T0 + 10))
    await store.save(
        make_record(
            "CAbbb222",
            from_number="+15105550199",
            profile="after-hours",
            outcome="time_limit",
            started_at=T0 + 3600,
            ended_at=T0 + 3700,
            transcript=(TranscriptLine("caller", "Is the shop in ZÜRICH open on Sunday?"),),
            cost_usd=None,
        )
    )
    await store.save(
        make_record(
            "CAccc333",
            to_number="+12125550100",
            direction="outbound",
            started_at=T0 + 60,
            ended_at=T0 + 70,
            transcript=(TranscriptLine("assistant", "Your parcel arrives tomorrow"),),
        )
    )
    return store


async def sids(store: SQLiteCallStore, text: str | None = None, **kw: int) -> list[str]:
    return [s.call_sid for s in await store.search(text, **kw)]


async def test_the_list_is_newest_first(three_calls: SQLiteCallStore) -> None:
    assert await sids(three_calls) == ["CAbbb222", "CAccc333", "CAaaa111"]
    assert await sids(three_calls, "") == await sids(three_calls, "   ")
    assert await sids(three_calls, "   ") == ["CAbbb222", "CAccc333", "CAaaa111"]


async def test_summaries_carry_what_the_list_shows(three_calls: SQLiteCallStore) -> None:
    newest, middle, _ = await three_calls.search()
    assert newest.from_number == "+15105550199"
    assert newest.profile == "after-hours"
    assert newest.outcome == "time_limit"
    assert newest.cost_usd is None
    assert (newest.started_at, newest.ended_at) == (T0 + 3600, T0 + 3700)
    assert (middle.direction, middle.to_number) == ("outbound", "+12125550100")
    assert (middle.turns, middle.barge_ins, middle.cost_usd) == (3, 1, 0.0421)


async def test_search_by_number(three_calls: SQLiteCallStore) -> None:
    assert await sids(three_calls, "5105550199") == ["CAbbb222"]
    assert await sids(three_calls, "+1212555") == ["CAccc333"]
    assert await sids(three_calls, "+14155550123") == ["CAccc333", "CAaaa111"]


async def test_search_by_transcript_word_ignores_case(three_calls: SQLiteCallStore) -> None:
    assert await sids(three_calls, "PARCEL") == ["CAccc333"]
    assert await sids(three_calls, "pizza palace") == ["CAaaa111"]
    # Not only ASCII: SQLite's own LIKE would miss this one.
    assert await sids(three_calls, "zürich") == ["CAbbb222"]


async def test_search_by_sid_profile_and_outcome(three_calls: SQLiteCallStore) -> None:
    assert await sids(three_calls, "CAccc") == ["CAccc333"]
    assert await sids(three_calls, "caccc3") == ["CAccc333"]
    assert await sids(three_calls, "after-hours") == ["CAbbb222"]
    assert await sids(three_calls, "time_limit") == ["CAbbb222"]
    assert await sids(three_calls, "no such thing") == []


async def test_wildcards_in_the_search_text_are_literal(store: SQLiteCallStore) -> None:
    def said(text: str) -> dict[str, Any]:
        # Nothing else in these records holds a % or an _, so only the transcript can match.
        return {"transcript": (TranscriptLine("caller", text),), "outcome": "refused"}

    await store.save(make_record("CA01", **said("I am 100% sure"), started_at=T0 + 1))
    await store.save(make_record("CA02", **said("I am 1000 sure"), started_at=T0 + 2))
    await store.save(make_record("CA03", **said("order a_b"), started_at=T0 + 3))
    await store.save(make_record("CA04", **said("order axb"), started_at=T0 + 4))
    await store.save(make_record("CA05", **said("path c\\d"), started_at=T0 + 5))
    await store.save(make_record("CA06", **said("path cd"), started_at=T0 + 6))

    assert await sids(store, "100%") == ["CA01"]
    assert await sids(store, "100% sure") == ["CA01"]
    assert await sids(store, "a_b") == ["CA03"]
    assert await sids(store, "c\\d") == ["CA05"]
    assert await sids(store, "%") == ["CA01"]
    assert await sids(store, "_") == ["CA03"]


async def test_limit_and_offset_page_through_everything(store: SQLiteCallStore) -> None:
    # Two calls share a start time: paging must still neither repeat nor skip one.
    starts = [T0, T0 + 5, T0 + 5, T0 + 9, T0 + 12, T0 + 20, T0 + 21]
    for i, start in enumerate(starts):
        await store.save(make_record(f"CA{i:02d}", started_at=start))

    pages = [await sids(store, limit=3, offset=o) for o in (0, 3, 6, 9)]

    assert [len(p) for p in pages] == [3, 3, 1, 0]
    flat = [sid for page in pages for sid in page]
    assert flat == await sids(store, limit=50)
    assert sorted(flat) == [f"CA{i:02d}" for i in range(7)]
    assert flat[:2] == ["CA06", "CA05"]
    assert await sids(store, "+1415", limit=2, offset=1) == flat[1:3]


async def test_negative_paging_is_refused(store: SQLiteCallStore) -> None:
    with pytest.raises(ValueError, match="negative"):
        await store.search(limit=-1)
    with pytest.raises(ValueError, match="negative"):
        await store.search(offset=-5)


# ------------------------------------------------------------ Twilio's status callback


async def test_a_status_that_arrives_before_the_record_is_kept(store: SQLiteCallStore) -> None:
    await store.record_status("CA0001", "completed", 94)
    assert await store.search() == []  # no half-made call in the list meanwhile

    await store.save(make_record())

    got = await store.get("CA0001")
    assert got is not None
    assert (got.final_status, got.duration_s) == ("completed", 94)


async def test_a_status_that_arrives_after_the_record_is_kept(store: SQLiteCallStore) -> None:
    await store.save(make_record())
    await store.record_status("CA0001", "completed", 94)

    got = await store.get("CA0001")
    assert got is not None
    assert (got.final_status, got.duration_s) == ("completed", 94)


RECORDING = Recording("twilio", "in-progress", "RE1", "https://api.twilio.com/RE1")
COMPLETED = Recording("twilio", "completed", "RE1", "https://api.twilio.com/RE1", 42)


@pytest.mark.parametrize("callback_first", [False, True], ids=["after", "before"])
async def test_a_recordings_status_is_kept_whether_it_comes_before_or_after_the_record(
    store: SQLiteCallStore, callback_first: bool
) -> None:
    if callback_first:  # Twilio's callback beat the call's teardown
        await store.record_recording("CA0001", COMPLETED)
    await store.save(make_record(recording=RECORDING))
    if not callback_first:
        await store.record_recording("CA0001", COMPLETED)
    got = await store.get("CA0001")
    assert got is not None and got.recording == COMPLETED


async def test_a_recording_that_could_not_start_round_trips(store: SQLiteCallStore) -> None:
    failed = Recording("twilio", "failed", error="HTTP 400: Call is not in-progress")
    await store.save(make_record(recording=failed))
    got = await store.get("CA0001")
    assert got is not None and got.recording == failed


async def test_a_second_record_of_a_call_changes_neither_it_nor_its_status(
    store: SQLiteCallStore,
) -> None:
    await store.record_status("CA0001", "completed", 94)
    assert await store.save(make_record())
    assert not await store.save(make_record(outcome="assistant_ended"))

    got = await store.get("CA0001")
    assert got is not None
    assert (got.outcome, got.final_status, got.duration_s) == ("caller_hung_up", "completed", 94)


async def test_a_late_progress_callback_does_not_undo_the_final_one(
    store: SQLiteCallStore,
) -> None:
    await store.record_status("CA0001", "in-progress", None)
    await store.record_status("CA0001", "completed", 94)
    await store.record_status("CA0001", "ringing", None)  # delivered out of order
    await store.save(make_record())
    await store.record_status("CA0001", "in-progress", None)

    got = await store.get("CA0001")
    assert got is not None
    assert (got.final_status, got.duration_s) == ("completed", 94)


async def test_a_status_alone_survives_a_restart(db_path: str) -> None:
    first = await open_store(db_path)
    await first.record_status("CA0001", "busy", 0)
    await first.close()

    second = await open_store(db_path)
    try:
        await second.save(make_record())
        got = await second.get("CA0001")
    finally:
        await second.close()
    assert got is not None
    assert (got.final_status, got.duration_s) == ("busy", 0)


# -------------------------------------------------------------------- the schema


def v1_database(path: str) -> None:
    """A file as the first release left it: migration 1 only, and one call in it."""
    conn = sqlite3.connect(path, isolation_level=None)
    assert apply_migrations(conn, target=1) == 1
    conn.execute(
        """
        INSERT INTO calls VALUES (
            'CAold', 'MZold', '+14155550123', '+442079460000', 'front-desk', 'inbound',
            ?, ?, 'caller_hung_up', 'The caller hung up.', 'gpt-realtime', 1, 0, 0, 0.01,
            'completed', 12, ?, '{"audio_in": 100}', ?
        )
        """,
        (
            T0,
            T0 + 12,
            '[{"index": 1, "caller_stopped_ms": 1500.0, "first_audio_sent_ms": 2100.0,'
            ' "first_audio_heard_ms": 2250.0, "barged_in": false, "truncated_at_ms": null}]',
            '[{"role": "caller", "text": "When do you open on Saturday?", "cut": false},'
            ' {"role": "assistant", "text": "At nine.", "cut": false}]',
        ),
    )
    conn.close()


def user_version(path: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


async def test_a_v1_database_is_upgraded_and_keeps_its_calls(db_path: str) -> None:
    v1_database(db_path)
    assert user_version(db_path) == 1

    s = await open_store(db_path)
    try:
        old = await s.get("CAold")
        # Found through the column migration 2 added and filled in from the JSON.
        found = await sids(s, "saturday")
        await s.save(make_record(started_at=T0 + 100))
        everything = await sids(s)
    finally:
        await s.close()

    assert user_version(db_path) == SQLiteCallStore.SCHEMA_VERSION == 5
    assert old is not None
    assert old.timeline == () and old.timeline_dropped == 0  # recorded before timelines
    assert old.transcript == (  # recorded before lines carried their time: none
        TranscriptLine("caller", "When do you open on Saturday?"),
        TranscriptLine("assistant", "At nine."),
    )
    assert old.turns == (TurnTiming(1, 1500.0, 2100.0, 2250.0),)
    assert (old.tokens, old.final_status, old.duration_s) == ({"audio_in": 100}, "completed", 12)
    assert found == ["CAold"]
    assert everything == ["CA0001", "CAold"]


async def test_opening_an_up_to_date_database_again_changes_nothing(db_path: str) -> None:
    first = await open_store(db_path)
    await first.save(make_record())
    await first.close()

    again = await open_store(db_path)  # would fail if a migration ran twice
    try:
        assert await again.get("CA0001") == make_record()
    finally:
        await again.close()
    assert user_version(db_path) == SQLiteCallStore.SCHEMA_VERSION


async def test_a_database_from_a_newer_version_is_refused(db_path: str) -> None:
    s = await open_store(db_path)
    await s.save(make_record())
    await s.close()
    newer = SQLiteCallStore.SCHEMA_VERSION + 1
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {newer}")
    conn.close()

    refused = SQLiteCallStore(db_path)
    with pytest.raises(ValueError, match=rf"schema version {newer}, newer than .*upgrade") as exc:
        await refused.open()
    assert db_path in str(exc.value)
    await refused.close()
    assert user_version(db_path) == newer


@pytest.mark.parametrize(
    "content", [b"call_sid,from\nCA1,+1415\n" * 200, b"x", b"\x00" * 4096], ids=repr
)
async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "calls.csv"
    path.write_bytes(content)

    s = SQLiteCallStore(str(path))
    with pytest.raises(ValueError, match="is not a SQLite database") as exc:
        await s.open()
    assert str(path) in str(exc.value)
    await s.close()
    assert path.read_bytes() == content


async def test_a_file_database_lets_other_readers_in_while_open(
    store: SQLiteCallStore, db_path: str
) -> None:
    await store.save(make_record())
    reader = sqlite3.connect(db_path)
    try:
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert reader.execute("SELECT call_sid FROM calls").fetchall() == [("CA0001",)]
    finally:
        reader.close()


# -------------------------------------------------------- the event loop and closing


class WatchedConnection(sqlite3.Connection):
    """Notes which thread runs each statement, and makes each one slow, like a busy disk."""

    threads: ClassVar[set[int]] = set()
    delay_s: ClassVar[float] = 0.0

    def execute(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        WatchedConnection.threads.add(threading.get_ident())
        time.sleep(WatchedConnection.delay_s)
        return super().execute(*args, **kwargs)


async def test_sqlite_never_runs_on_the_event_loop(
    monkeypatch: pytest.MonkeyPatch, db_path: str
) -> None:
    real_connect = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        return real_connect(*args, factory=WatchedConnection, **kwargs)

    monkeypatch.setattr(records.sqlite3, "connect", connect)
    monkeypatch.setattr(WatchedConnection, "threads", set())
    monkeypatch.setattr(WatchedConnection, "delay_s", 0.0)
    s = await open_store(db_path)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(0)
        WatchedConnection.delay_s = 0.05  # a save is several statements: >= 0.2 s in all
        await s.save(make_record())
        WatchedConnection.delay_s = 0.0
        assert await s.get("CA0001") == make_record()
    finally:
        task.cancel()
        await s.close()

    assert ticks >= 10, f"the loop stalled while saving ({ticks} ticks)"
    assert WatchedConnection.threads, "the store did not use the connection it was given"
    assert threading.get_ident() not in WatchedConnection.threads


async def test_after_close_every_call_fails_clearly(store: SQLiteCallStore) -> None:
    await store.close()
    await store.close()  # twice is fine

    with pytest.raises(RuntimeError, match="closed"):
        await store.save(make_record())
    with pytest.raises(RuntimeError, match="closed"):
        await store.get("CA0001")
    with pytest.raises(RuntimeError, match="closed"):
        await store.search("x")
    with pytest.raises(RuntimeError, match="closed"):
        await store.record_status("CA0001", "completed", 1)
    with pytest.raises(RuntimeError, match="closed"):
        await store.open()


async def test_using_a_store_before_open_fails_clearly() -> None:
    s = SQLiteCallStore(":memory:")
    with pytest.raises(RuntimeError, match="not open"):
        await s.save(make_record())
    await s.close()


async def test_saves_already_under_way_finish_before_close(db_path: str) -> None:
    # Shutdown closes the store while the last calls' teardowns are still saving.
    s = await open_store(db_path)
    saves = [asyncio.create_task(s.save(make_record(f"CA{i:02d}"))) for i in range(20)]
    await asyncio.sleep(0)
    await s.close()
    await asyncio.gather(*saves)

    reopened = await open_store(db_path)
    try:
        assert len(await reopened.search(limit=100)) == 20
    finally:
        await reopened.close()


async def test_old_recordings_and_timelines_expire_and_the_rest_of_the_record_stays(
    store: SQLiteCallStore,
) -> None:
    ours = Recording("bridge", "completed", url="CAold.wav", duration_s=60)
    old = make_record("CAold", started_at=T0 - 10 * 86400, recording=ours)
    twilios = make_record("CAtw", started_at=T0 - 10 * 86400, recording=COMPLETED)
    new = make_record("CAnew", started_at=T0, recording=ours)
    for r in (old, twilios, new):
        await store.save(r)
    assert await store.expire_recordings(T0 - 86400) == [("CAold", ours)]
    assert await store.expire_recordings(T0 - 86400) == []  # once
    kept = await store.get("CAold")
    assert kept is not None and kept.timeline == () and kept.transcript == old.transcript
    assert kept.recording == Recording("bridge", "deleted")
    # Twilio's recording is Twilio's to delete: the record keeps pointing at it.
    other = await store.get("CAtw")
    assert other is not None and other.recording == COMPLETED and other.timeline == ()
    assert await store.get("CAnew") == new


async def test_a_deleted_call_is_gone_with_its_pending_webhook(store: SQLiteCallStore) -> None:
    delivery = WebhookDelivery("msg_1", "CA0001", "{}", T0)
    await store.save(make_record(recording=COMPLETED), delivery)
    deleted = await store.delete("CA0001")
    assert deleted is not None and deleted.recording == COMPLETED
    assert await store.get("CA0001") is None
    assert await store.pending_deliveries() == 0
    assert await store.delete("CA0001") is None
