"""Call records, kept in SQLite or PostgreSQL: what the console lists, finds and reads back
after a call. Every test taking `store` or `backend` runs against both stores, the
PostgreSQL one on a real server (skipped, saying why, where its binaries are missing)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bridge.core.summary import TranscriptLine
from bridge.core.timeline import Moment, TimelineEntry
from bridge.records import store as records
from bridge.records.model import (
    CallRecord,
    LiveCallRow,
    Recording,
    TurnTiming,
    WebhookDelivery,
)
from bridge.records.postgres import PostgresCallStore
from bridge.records.store import CallStore, SchemaTooNew, SQLiteCallStore, apply_migrations
from tests.helpers.postgres_server import PostgresServer

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


@dataclass
class Backend:
    """One kind of store on one database: new stores on it, and its schema's version."""

    name: str
    new_store: Callable[[], CallStore]
    schema_version: Callable[[], int]
    set_schema_version: Callable[[int], None]


def sqlite_backend(path: str) -> Backend:
    def set_version(version: int) -> None:
        conn = sqlite3.connect(path)
        conn.execute(f"PRAGMA user_version = {version:d}")
        conn.close()

    return Backend("sqlite", lambda: SQLiteCallStore(path), lambda: user_version(path), set_version)


def postgres_backend(server: PostgresServer, url: str) -> Backend:
    import psycopg

    def version() -> int:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT version FROM phone_bridge_schema").fetchone()
            return int(row[0]) if row else 0

    def set_version(version: int) -> None:
        with psycopg.connect(url) as conn:
            conn.execute("UPDATE phone_bridge_schema SET version = %s", (version,))

    return Backend("postgres", lambda: PostgresCallStore(url), version, set_version)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, db_path: str) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield sqlite_backend(db_path)
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    yield postgres_backend(server, url)
    server.drop_database(url)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[CallStore]:
    s = backend.new_store()
    await s.open()
    yield s
    await s.close()


async def open_store(where: Backend | str) -> CallStore:
    """A new store, open: on the backend's database, or the SQLite file at a path."""
    s = where.new_store() if isinstance(where, Backend) else SQLiteCallStore(where)
    await s.open()
    return s


# ------------------------------------------------------------------ save and get


async def test_a_full_record_reads_back_equal(backend: Backend) -> None:
    await full_record_reads_back_equal(await open_store(backend))


async def test_a_memory_database_keeps_records_too() -> None:
    await full_record_reads_back_equal(await open_store(":memory:"))


async def full_record_reads_back_equal(s: CallStore) -> None:
    record = make_record(final_status="completed", duration_s=94)
    await s.save(record)
    got = await s.get("CA0001")
    await s.close()

    assert got == record
    assert got is not None
    assert got.duration_ms == pytest.approx(93_250.0)


async def test_records_survive_a_restart(backend: Backend) -> None:
    first = await open_store(backend)
    await first.save(make_record())
    await first.close()

    second = await open_store(backend)
    try:
        assert await second.get("CA0001") == make_record()
    finally:
        await second.close()


async def test_awkward_strings_are_stored_verbatim(store: CallStore) -> None:
    nasty = "O'Brien said \"hi\"\nthen: Robert'); DROP TABLE calls;-- 👋 Zürich \\ % _ \t"
    record = make_record(
        profile=nasty,
        end_reason=nasty,
        transcript=(TranscriptLine("caller", nasty), TranscriptLine("assistant", "")),
    )
    await store.save(record)

    assert await store.get("CA0001") == record
    assert [s.call_sid for s in await store.search()] == ["CA0001"]


async def test_an_empty_call_round_trips(store: CallStore) -> None:
    # A call refused before the model spoke: nothing but ids and the outcome.
    record = make_record(
        profile=None, outcome="refused", turns=(), barge_ins=0, tokens={}, cost_usd=None,
        transcript=(),
    )  # fmt: skip
    await store.save(record)

    assert await store.get("CA0001") == record


async def test_an_unknown_call_is_none(store: CallStore) -> None:
    await store.save(make_record())
    assert await store.get("CA9999") is None
    assert await store.get("") is None


async def test_a_call_is_recorded_once_and_a_second_record_never_replaces_it(
    store: CallStore,
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


async def test_concurrent_saves_are_all_kept(store: CallStore) -> None:
    sids = [f"CA{i:04d}" for i in range(40)]
    await asyncio.gather(
        *(store.save(make_record(sid, started_at=T0 + i)) for i, sid in enumerate(sids))
    )

    assert [s.call_sid for s in await store.search(limit=100)] == sids[::-1]


# ------------------------------------------------------------------------ search


@pytest.fixture
async def three_calls(store: CallStore) -> CallStore:
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


async def sids(store: CallStore, text: str | None = None, **kw: int) -> list[str]:
    return [s.call_sid for s in await store.search(text, **kw)]


async def test_the_list_is_newest_first(three_calls: CallStore) -> None:
    assert await sids(three_calls) == ["CAbbb222", "CAccc333", "CAaaa111"]
    assert await sids(three_calls, "") == await sids(three_calls, "   ")
    assert await sids(three_calls, "   ") == ["CAbbb222", "CAccc333", "CAaaa111"]


async def test_summaries_carry_what_the_list_shows(three_calls: CallStore) -> None:
    newest, middle, _ = await three_calls.search()
    assert newest.from_number == "+15105550199"
    assert newest.profile == "after-hours"
    assert newest.outcome == "time_limit"
    assert newest.cost_usd is None
    assert (newest.started_at, newest.ended_at) == (T0 + 3600, T0 + 3700)
    assert (middle.direction, middle.to_number) == ("outbound", "+12125550100")
    assert (middle.turns, middle.barge_ins, middle.cost_usd) == (3, 1, 0.0421)


async def test_search_by_number(three_calls: CallStore) -> None:
    assert await sids(three_calls, "5105550199") == ["CAbbb222"]
    assert await sids(three_calls, "+1212555") == ["CAccc333"]
    assert await sids(three_calls, "+14155550123") == ["CAccc333", "CAaaa111"]


async def test_search_by_transcript_word_ignores_case(three_calls: CallStore) -> None:
    assert await sids(three_calls, "PARCEL") == ["CAccc333"]
    assert await sids(three_calls, "pizza palace") == ["CAaaa111"]
    # Not only ASCII: SQLite's own LIKE would miss this one.
    assert await sids(three_calls, "zürich") == ["CAbbb222"]


async def test_search_by_sid_profile_and_outcome(three_calls: CallStore) -> None:
    assert await sids(three_calls, "CAccc") == ["CAccc333"]
    assert await sids(three_calls, "caccc3") == ["CAccc333"]
    assert await sids(three_calls, "after-hours") == ["CAbbb222"]
    assert await sids(three_calls, "time_limit") == ["CAbbb222"]
    assert await sids(three_calls, "no such thing") == []


async def test_wildcards_in_the_search_text_are_literal(store: CallStore) -> None:
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


async def test_limit_and_offset_page_through_everything(store: CallStore) -> None:
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


async def test_negative_paging_is_refused(store: CallStore) -> None:
    with pytest.raises(ValueError, match="negative"):
        await store.search(limit=-1)
    with pytest.raises(ValueError, match="negative"):
        await store.search(offset=-5)


# ------------------------------------------------------------ Twilio's status callback


async def test_a_status_that_arrives_before_the_record_is_kept(store: CallStore) -> None:
    await store.record_status("CA0001", "completed", 94)
    assert await store.search() == []  # no half-made call in the list meanwhile

    await store.save(make_record())

    got = await store.get("CA0001")
    assert got is not None
    assert (got.final_status, got.duration_s) == ("completed", 94)


async def test_a_status_that_arrives_after_the_record_is_kept(store: CallStore) -> None:
    await store.save(make_record())
    await store.record_status("CA0001", "completed", 94)

    got = await store.get("CA0001")
    assert got is not None
    assert (got.final_status, got.duration_s) == ("completed", 94)


RECORDING = Recording("twilio", "in-progress", "RE1", "https://api.twilio.com/RE1")
COMPLETED = Recording("twilio", "completed", "RE1", "https://api.twilio.com/RE1", 42)


@pytest.mark.parametrize("callback_first", [False, True], ids=["after", "before"])
async def test_a_recordings_status_is_kept_whether_it_comes_before_or_after_the_record(
    store: CallStore, callback_first: bool
) -> None:
    if callback_first:  # Twilio's callback beat the call's teardown
        await store.record_recording("CA0001", COMPLETED)
    await store.save(make_record(recording=RECORDING))
    if not callback_first:
        await store.record_recording("CA0001", COMPLETED)
    got = await store.get("CA0001")
    assert got is not None and got.recording == COMPLETED


async def test_a_recording_that_could_not_start_round_trips(store: CallStore) -> None:
    failed = Recording("twilio", "failed", error="HTTP 400: Call is not in-progress")
    await store.save(make_record(recording=failed))
    got = await store.get("CA0001")
    assert got is not None and got.recording == failed


async def test_a_second_record_of_a_call_changes_neither_it_nor_its_status(
    store: CallStore,
) -> None:
    await store.record_status("CA0001", "completed", 94)
    assert await store.save(make_record())
    assert not await store.save(make_record(outcome="assistant_ended"))

    got = await store.get("CA0001")
    assert got is not None
    assert (got.outcome, got.final_status, got.duration_s) == ("caller_hung_up", "completed", 94)


async def test_a_late_progress_callback_does_not_undo_the_final_one(
    store: CallStore,
) -> None:
    await store.record_status("CA0001", "in-progress", None)
    await store.record_status("CA0001", "completed", 94)
    await store.record_status("CA0001", "ringing", None)  # delivered out of order
    await store.save(make_record())
    await store.record_status("CA0001", "in-progress", None)

    got = await store.get("CA0001")
    assert got is not None
    assert (got.final_status, got.duration_s) == ("completed", 94)


async def test_a_status_alone_survives_a_restart(backend: Backend) -> None:
    first = await open_store(backend)
    await first.record_status("CA0001", "busy", 0)
    await first.close()

    second = await open_store(backend)
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

    assert user_version(db_path) == SQLiteCallStore.SCHEMA_VERSION == 6
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


async def test_opening_an_up_to_date_database_again_changes_nothing(backend: Backend) -> None:
    first = await open_store(backend)
    await first.save(make_record())
    await first.close()

    version = backend.schema_version()
    again = await open_store(backend)  # would fail if a migration ran twice
    try:
        assert await again.get("CA0001") == make_record()
    finally:
        await again.close()
    assert backend.schema_version() == version == type(again).SCHEMA_VERSION


async def test_a_database_from_a_newer_version_is_refused(backend: Backend) -> None:
    s = await open_store(backend)
    await s.save(make_record())
    await s.close()
    newer = type(s).SCHEMA_VERSION + 1
    backend.set_schema_version(newer)

    refused = backend.new_store()
    with pytest.raises(SchemaTooNew, match=rf"schema version {newer}, newer than .*upgrade") as exc:
        await refused.open()
    assert str(refused) in str(exc.value)  # which database, said without its password
    assert "pw-" not in str(exc.value) and len(str(exc.value).splitlines()) == 1
    await refused.close()
    assert backend.schema_version() == newer


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


async def test_a_file_database_lets_other_readers_in_while_open(db_path: str) -> None:
    store = await open_store(db_path)
    await store.save(make_record())
    reader = sqlite3.connect(db_path)
    try:
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert reader.execute("SELECT call_sid FROM calls").fetchall() == [("CA0001",)]
    finally:
        reader.close()
        await store.close()


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


async def test_after_close_every_call_fails_clearly(store: CallStore) -> None:
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


async def test_using_a_store_before_open_fails_clearly(backend: Backend) -> None:
    s = backend.new_store()
    with pytest.raises(RuntimeError, match="not open"):
        await s.save(make_record())
    await s.close()


async def test_saves_already_under_way_finish_before_close(backend: Backend) -> None:
    # Shutdown closes the store while the last calls' teardowns are still saving.
    s = await open_store(backend)
    saves = [asyncio.create_task(s.save(make_record(f"CA{i:02d}"))) for i in range(20)]
    await asyncio.sleep(0)
    await s.close()
    await asyncio.gather(*saves)

    reopened = await open_store(backend)
    try:
        assert len(await reopened.search(limit=100)) == 20
    finally:
        await reopened.close()


async def test_old_recordings_and_timelines_expire_and_the_rest_of_the_record_stays(
    store: CallStore,
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


async def test_a_deleted_call_is_gone_with_its_pending_webhook(store: CallStore) -> None:
    delivery = WebhookDelivery("msg_1", "CA0001", "{}", T0)
    await store.save(make_record(recording=COMPLETED), delivery)
    deleted = await store.delete("CA0001")
    assert deleted is not None and deleted.recording == COMPLETED
    assert await store.get("CA0001") is None
    assert await store.pending_deliveries() == 0
    assert await store.delete("CA0001") is None


# ------------------------------------------------------------ post-call webhooks


async def test_a_due_delivery_is_handed_to_one_reader_at_a_time(backend: Backend) -> None:
    # Two replicas' webhook workers on one database: each delivery is attempted by one.
    first, second = await open_store(backend), await open_store(backend)
    try:
        for i in range(3):
            delivery = WebhookDelivery(f"msg_{i}", f"CA{i}", "{}", T0, next_attempt_at=T0 + i)
            await first.save(make_record(f"CA{i}"), delivery)
        taken = await first.due_deliveries(T0 + 10, limit=2)
        assert [d.message_id for d in taken] == ["msg_0", "msg_1"]  # soonest first
        assert [d.message_id for d in await second.due_deliveries(T0 + 10, 10)] == ["msg_2"]
        assert await second.due_deliveries(T0 + 10, 10) == []
        # A reader that died with its deliveries: they come round again after the hold.
        later = T0 + 10 + records.DELIVERY_HOLD_S
        assert len(await second.due_deliveries(later, 10)) == 3
        await first.delivery_done("msg_0")
        assert await second.pending_deliveries() == 2
    finally:
        await first.close()
        await second.close()


# ------------------------------------------------------------------ live calls


def live(call_sid: str, started_at: float = T0, phase: str = "bridging") -> LiveCallRow:
    return LiveCallRow(call_sid, "", started_at, "+14155550123", "+442079460000", "desk", phase,
                       2, 1)  # fmt: skip


async def test_every_replicas_live_calls_are_listed_with_their_replica(store: CallStore) -> None:
    await store.publish_live_calls("pod-a", [live("CA1", T0 + 5), live("CA2")], T0 + 10, T0)
    await store.publish_live_calls("pod-b", [live("CA3", T0 + 1)], T0 + 11, T0)

    listed = await store.live_calls(fresh_since=T0)
    assert [(c.call_sid, c.replica) for c in listed] == [
        ("CA2", "pod-a"), ("CA3", "pod-b"), ("CA1", "pod-a"),  # longest first
    ]  # fmt: skip
    assert listed[0] == replace(live("CA2"), replica="pod-a", updated_at=T0 + 10)
    assert await store.live_replica("CA3", fresh_since=T0) == "pod-b"
    assert await store.live_replica("CA9", fresh_since=T0) is None


async def test_a_heartbeat_replaces_its_replicas_calls_and_stale_ones_vanish(
    store: CallStore,
) -> None:
    await store.publish_live_calls("pod-a", [live("CA1"), live("CA2")], T0, T0 - 30)
    await store.publish_live_calls("pod-b", [live("CA3")], T0, T0 - 30)
    # pod-a's next heartbeat: CA1 has ended, CA4 began.
    await store.publish_live_calls("pod-a", [live("CA2"), live("CA4")], T0 + 5, T0 - 25)
    assert sorted(c.call_sid for c in await store.live_calls(T0 - 30)) == ["CA2", "CA3", "CA4"]

    # pod-b died without a word: past the staleness bound its call is not listed, and the
    # next heartbeat of anyone clears it away.
    assert sorted(c.call_sid for c in await store.live_calls(T0 + 1)) == ["CA2", "CA4"]
    assert await store.live_replica("CA3", fresh_since=T0 + 1) is None
    await store.publish_live_calls("pod-a", [], T0 + 40, T0 + 1)
    assert await store.live_calls(0) == []
