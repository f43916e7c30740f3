"""The write-behind queue in front of the records: a database that goes away (stopped, as
a failover or a restart does) costs the calls nothing and loses no record. A real
PostgreSQL server, really stopped and started."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from pathlib import Path

import pytest

from bridge.records.postgres import PostgresCallStore
from bridge.records.store import SQLiteCallStore
from bridge.records.write_behind import SPILL_PREFIX, WriteBehindStore, _Write
from tests.helpers.postgres_server import PostgresServer
from tests.helpers.running_bridge import wait_until
from tests.unit.records.test_record_store import T0, make_record


class Counts:
    """What the queue told the metrics."""

    def __init__(self) -> None:
        self.written: list[float] = []
        self.failed = 0
        self.spilled = 0

    def record_written(self, seconds: float) -> None:
        self.written.append(seconds)

    def record_write_failed(self) -> None:
        self.failed += 1

    def records_spilled(self, count: int) -> None:
        self.spilled += count


def queue_for(
    url: str, spill_dir: Path, counts: Counts | None = None, **options: object
) -> WriteBehindStore:
    return WriteBehindStore(
        PostgresCallStore(url, statement_timeout_ms=1000),
        spill_dir,
        replica="pod-a",
        observer=counts,
        ack_wait_s=0.3,
        open_wait_s=0.5,
        **options,  # type: ignore[arg-type]
    )


async def stored_sids(url: str) -> list[str]:
    direct = PostgresCallStore(url)
    await direct.open()
    try:
        return sorted(c.call_sid for c in await direct.search(limit=1000))
    finally:
        await direct.close()


async def opened_queue(
    server: PostgresServer, spill_dir: Path, counts: Counts | None = None, **options: object
) -> tuple[str, WriteBehindStore]:
    """A new database on `server`, and a queue in front of it, open."""
    url = server.create_database()
    store = queue_for(url, spill_dir, counts, **options)
    await store.open()
    return url, store


def spill_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{SPILL_PREFIX}*"))


async def test_records_made_while_the_database_is_down_are_written_once_it_is_back(
    private_postgres: PostgresServer, tmp_path: Path
) -> None:
    counts = Counts()
    url, store = await opened_queue(private_postgres, tmp_path, counts)
    await store.save(make_record("CA-before"))
    private_postgres.stop()

    started = time.monotonic()
    saved = await asyncio.gather(*(store.save(make_record(f"CA{i}")) for i in range(5)))
    await store.record_status("CA1", "completed", 61)
    assert time.monotonic() - started < 2, "a call's teardown waited on a database that is away"
    assert saved == [True] * 5  # taken: written later
    await wait_until(lambda: not store.available, 15, "the outage to be noticed")
    assert store.queued == 6 and counts.failed >= 1
    # The replay guard and this replica's console know the queued calls meanwhile.
    assert await store.has("CA3")
    assert await store.get("CA3") == make_record("CA3")

    private_postgres.start()
    await wait_until(lambda: store.queued == 0, 30, "the queue to drain")
    await store.close()
    assert await stored_sids(url) == ["CA-before", "CA0", "CA1", "CA2", "CA3", "CA4"]
    check = PostgresCallStore(url)
    await check.open()
    got = await check.get("CA1")
    await check.close()
    assert got is not None and (got.final_status, got.duration_s) == ("completed", 61)
    assert len(counts.written) == 7 and counts.spilled == 0
    assert spill_files(tmp_path) == []


async def test_a_bridge_starting_while_the_database_is_down_starts_and_catches_up(
    private_postgres: PostgresServer, tmp_path: Path
) -> None:
    url = private_postgres.create_database()
    private_postgres.stop()
    store = queue_for(url, tmp_path)
    started = time.monotonic()
    await store.open()  # calls first: the start is not held up
    assert time.monotonic() - started < 2 and not store.available
    await store.save(make_record("CA1", started_at=T0))

    private_postgres.start()
    await wait_until(lambda: store.available and store.queued == 0, 30, "the records to be in")
    await store.close()
    assert await stored_sids(url) == ["CA1"]


async def test_what_is_queued_at_shutdown_is_spilled_and_the_next_start_imports_it(
    private_postgres: PostgresServer, tmp_path: Path
) -> None:
    counts = Counts()
    url, store = await opened_queue(private_postgres, tmp_path, counts)
    private_postgres.stop()
    for i in range(3):
        await store.save(make_record(f"CA{i}", started_at=T0 + i))
    await store.record_status("CA0", "busy", 0)
    await store.close()  # SIGTERM with the database still away

    [spilled] = spill_files(tmp_path)
    assert stat.S_IMODE(spilled.stat().st_mode) == 0o600  # callers' numbers and words
    assert [json.loads(line)["kind"] for line in spilled.read_text().splitlines()] == [
        "save", "save", "save", "status",
    ]  # fmt: skip
    assert counts.spilled == 4

    private_postgres.start()
    next_start = queue_for(url, tmp_path)
    await next_start.open()
    await wait_until(lambda: not spill_files(tmp_path), 30, "the spill file to be imported")
    await next_start.close()
    assert await stored_sids(url) == ["CA0", "CA1", "CA2"]
    check = PostgresCallStore(url)
    await check.open()
    got = await check.get("CA0")
    await check.close()
    assert got is not None and got.final_status == "busy"


async def test_past_its_bound_the_queue_spills_to_disk_and_nothing_is_lost(
    private_postgres: PostgresServer, tmp_path: Path
) -> None:
    counts = Counts()
    url, store = await opened_queue(private_postgres, tmp_path, counts, max_queued=3)
    private_postgres.stop()
    for i in range(8):
        await store.save(make_record(f"CA{i}"))
    assert store.queued == 3 and counts.spilled == 5  # memory stays bounded
    assert len(spill_files(tmp_path)) == 1

    private_postgres.start()
    # Once the queue is empty again, what went to disk meanwhile goes in too.
    await wait_until(
        lambda: store.queued == 0 and not spill_files(tmp_path), 30, "everything to be written"
    )
    await store.close()
    assert await stored_sids(url) == [f"CA{i}" for i in range(8)]


async def test_a_spill_file_another_process_holds_is_left_to_it(
    private_postgres: PostgresServer, tmp_path: Path
) -> None:
    import fcntl

    url = private_postgres.create_database()
    held = tmp_path / f"{SPILL_PREFIX}other-1.jsonl"
    held.write_text(json.dumps(_Write("save", "CA1", record=make_record("CA1")).to_json()) + "\n")
    with open(held) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # another replica, importing it right now
        store = queue_for(url, tmp_path)
        await store.open()
        await asyncio.wait_for(store.imports_done(), 5)
        assert held.exists() and store.queued == 0
        await store.close()
    assert await stored_sids(url) == []


async def test_a_spill_file_is_imported_into_a_sqlite_store_too(tmp_path: Path) -> None:
    # The spill file is the same whatever the store: a single instance on SQLite keeps
    # what its disk refused (full, failing) the same way.
    spill = tmp_path / f"{SPILL_PREFIX}pod-a-1.jsonl"
    writes = [
        _Write("save", "CA1", record=make_record("CA1")),
        _Write("status", "CA1", status="completed", duration_s=9),
        _Write("save", "CA2", record=make_record("CA2", started_at=T0 + 1)),
    ]
    lines = [json.dumps(w.to_json()) for w in writes]
    spill.write_text("\n".join([*lines, '{"kind": "save", "rec'])  # cut short by a crash
                     + "\n")  # fmt: skip
    os.chmod(spill, 0o600)
    store = WriteBehindStore(SQLiteCallStore(str(tmp_path / "calls.db")), tmp_path)
    await store.open()
    await wait_until(lambda: not spill.exists(), 10, "the spill file to be imported")
    got = await store.get("CA1")
    assert got is not None and got.final_status == "completed" and got.duration_s == 9
    assert [c.call_sid for c in await store.search()] == ["CA2", "CA1"]
    await store.close()


@pytest.mark.parametrize("kind", ["save", "status", "recording"])
def test_every_write_reads_back_from_the_spill_file_as_it_was(kind: str) -> None:
    from bridge.records.model import Recording, WebhookDelivery

    write = {
        "save": _Write(
            "save",
            "CA1",
            record=make_record("CA1", recording=Recording("twilio", "completed", "RE1", "u", 4)),
            delivery=WebhookDelivery("msg_1", "CA1", '{"a": 1}', T0, 2, T0 + 5, "HTTP 500"),
        ),
        "status": _Write("status", "CA1", status="no-answer", duration_s=None),
        "recording": _Write("recording", "CA1", recording=Recording("twilio", "absent")),
    }[kind]
    again = _Write.from_json(json.loads(json.dumps(write.to_json())))
    assert (again.kind, again.call_sid, again.record, again.delivery) == (
        write.kind, write.call_sid, write.record, write.delivery,
    )  # fmt: skip
    assert (again.status, again.duration_s, again.recording) == (
        write.status, write.duration_s, write.recording,
    )  # fmt: skip


async def test_a_write_the_database_refuses_is_set_aside_and_holds_up_nothing(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url, store = await opened_queue(postgres_server, tmp_path)
    # A duration no BIGINT holds: refused for good, not an outage to wait out.
    await store.record_status("CA1", "completed", 10**20)
    assert await store.save(make_record("CA2"))
    await wait_until(lambda: store.queued == 0, 10, "the queue to move on")
    await store.close()
    assert await stored_sids(url) == ["CA2"]
    [refused] = tmp_path.glob("phone-bridge-refused-*.jsonl")
    assert json.loads(refused.read_text())["call_sid"] == "CA1"
    assert stat.S_IMODE(refused.stat().st_mode) == 0o600
    assert spill_files(tmp_path) == []  # not imported again (it would be refused again)
