"""Where call records are kept: the store's interface, and the SQLite store.

The bridge hands a finished `CallRecord` to a `CallStore` from the call's teardown; the web
console lists and reads them back. Two stores implement it and behave the same (one set of
tests runs against both): `SQLiteCallStore`, one file for a single instance, and
`PostgresCallStore` (`bridge.records.postgres`), one database shared by every replica.
`WriteBehindStore` (`bridge.records.write_behind`) stands in front of either, so that a
database that is away never costs a call anything and loses no record.

SQLite is synchronous, and a slow disk must never stall the audio of the calls still
running: every query runs on one worker thread that owns the only connection, and the
coroutines only wait for it.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

from bridge.records.model import (
    CallListing,
    CallRecord,
    LiveCallRow,
    Recording,
    WebhookDelivery,
)
from bridge.records.rows import (
    DELIVERY_COLUMNS,
    RECORD_COLUMNS,
    SUMMARY_COLUMNS,
    delivery_values,
    fold,
    like_pattern,
    merge_recording,
    merge_status,
    record_from_row,
    record_values,
    recording_from_json,
    recording_to_json,
    transcript_from_json,
    transcript_text,
)

_T = TypeVar("_T")

# Long enough to ride out another instance's write on a shared file, short enough that a
# wedged lock surfaces as an error rather than a teardown that never finishes.
BUSY_TIMEOUT_S = 5.0
_SQLITE_HEADER = b"SQLite format 3\x00"
# A post-call webhook handed out to be attempted is held from every other reader this long
# (well past an attempt's 10 s deadline): with several replicas on one database, one of
# them attempts it; if that replica dies mid-attempt, another takes it up after this.
DELIVERY_HOLD_S = 120.0


class StoreUnavailable(Exception):
    """The database is away (unreachable, restarting, locked past its timeout): the same
    request may work later. Any other error from a store is a refusal that retrying will
    not change."""


class SchemaTooNew(ValueError):
    """The database was migrated by a newer phone-bridge than this one: writing to it with
    an older idea of the schema could drop what the newer code relies on."""


class CallStore(Protocol):
    async def open(self) -> None:
        """Connect, and create or upgrade the schema. StoreUnavailable if the database
        cannot be reached (open may be called again then); SchemaTooNew, or ValueError for
        a database that cannot be used."""

    async def save(self, record: CallRecord, delivery: WebhookDelivery | None = None) -> bool:
        """Insert the record, and with it (in the same transaction) its post-call webhook
        delivery if there is one; False if its call_sid has one already, which is kept (a
        call is recorded once: a second stream for it can only be a replay)."""

    async def due_deliveries(self, now: float, limit: int) -> list[WebhookDelivery]:
        """Post-call webhooks whose next attempt is due by `now`, soonest first, each held
        from every other reader for DELIVERY_HOLD_S (another replica's webhook worker)."""

    async def next_delivery_at(self) -> float | None:
        """When the soonest post-call webhook is due, if any is pending."""

    async def pending_deliveries(self) -> int:
        """How many post-call webhooks wait to be delivered."""

    async def delivery_done(self, message_id: str) -> None:
        """Delivered, or given up: forget it."""

    async def delivery_failed(
        self, message_id: str, attempts: int, next_attempt_at: float, error: str
    ) -> None:
        """An attempt failed: when to try again, and why it failed."""

    async def has(self, call_sid: str) -> bool:
        """A record of `call_sid` is stored."""

    async def get(self, call_sid: str) -> CallRecord | None: ...

    async def search(
        self, text: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[CallListing]:
        """Newest first. `text` is a case-insensitive substring of the call sid, either
        number, the profile, the outcome or the transcript; None or blank lists all."""

    async def record_status(self, call_sid: str, status: str, duration_s: int | None) -> None:
        """Twilio's status callback, which may arrive before or after `save`; kept either way."""

    async def record_recording(self, call_sid: str, update: Recording) -> None:
        """Twilio's recording status callback, which may arrive before or after `save`;
        kept either way."""

    async def delete(self, call_sid: str) -> CallRecord | None:
        """Forget the call (record, timeline, pending webhook); the record it had, so its
        files can go too."""

    async def expire_recordings(self, before: float) -> list[tuple[str, Recording]]:
        """Calls started before `before` (unix time) lose their recording and timeline
        (kept: the rest of the record, which says the recording was deleted); the
        recordings they had, so their files can go too."""

    async def publish_live_calls(
        self, replica: str, calls: Sequence[LiveCallRow], now: float, stale_before: float
    ) -> None:
        """`replica`'s heartbeat: its live calls are now exactly `calls` (each marked
        updated at `now`; its others have ended). Rows of any replica not updated since
        `stale_before` go too: their replica died without saying so."""

    async def live_calls(self, fresh_since: float) -> list[LiveCallRow]:
        """The calls in progress on every replica, updated since `fresh_since`, longest
        first."""

    async def live_replica(self, call_sid: str, fresh_since: float) -> str | None:
        """Which replica has `call_sid` in progress (updated since `fresh_since`), if any."""

    async def close(self) -> None: ...


# ---------------------------------------------------------------------------- schema


def _migration_1(conn: sqlite3.Connection) -> None:
    # Scalars are columns because the console lists, sorts and searches by them; the nested
    # parts are only ever read back whole, so JSON keeps them from needing tables of their own.
    conn.execute(
        """
        CREATE TABLE calls (
            call_sid        TEXT PRIMARY KEY,
            stream_sid      TEXT NOT NULL,
            from_number     TEXT NOT NULL,
            to_number       TEXT NOT NULL,
            profile         TEXT,
            direction       TEXT NOT NULL,
            started_at      REAL NOT NULL,
            ended_at        REAL NOT NULL,
            outcome         TEXT NOT NULL,
            end_reason      TEXT NOT NULL,
            model           TEXT NOT NULL,
            turn_count      INTEGER NOT NULL,
            barge_ins       INTEGER NOT NULL,
            reconnects      INTEGER NOT NULL,
            cost_usd        REAL,
            final_status    TEXT,
            duration_s      INTEGER,
            turns_json      TEXT NOT NULL,
            tokens_json     TEXT NOT NULL,
            transcript_json TEXT NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX calls_started_at ON calls (started_at)")
    conn.execute("CREATE INDEX calls_from_number ON calls (from_number)")
    conn.execute("CREATE INDEX calls_to_number ON calls (to_number)")
    # Status callbacks for calls with no record yet: the callback often beats the teardown's
    # save, and calls that never connect (busy, no-answer) never get a record at all.
    conn.execute(
        """
        CREATE TABLE call_status_pending (
            call_sid     TEXT PRIMARY KEY,
            final_status TEXT NOT NULL,
            duration_s   INTEGER,
            updated_at   REAL NOT NULL
        )
        """
    )


def _migration_2(conn: sqlite3.Connection) -> None:
    # The transcript as plain text, so search reads one column instead of parsing JSON per row.
    conn.execute("ALTER TABLE calls ADD COLUMN transcript_text TEXT NOT NULL DEFAULT ''")
    rows = conn.execute("SELECT call_sid, transcript_json FROM calls").fetchall()
    for call_sid, transcript_json in rows:
        text = transcript_text(transcript_from_json(transcript_json))
        conn.execute("UPDATE calls SET transcript_text = ? WHERE call_sid = ?", (text, call_sid))


def _migration_3(conn: sqlite3.Connection) -> None:
    # The call's timeline (bridge.core.timeline); calls recorded before it have none.
    conn.execute("ALTER TABLE calls ADD COLUMN timeline_json TEXT NOT NULL DEFAULT '[]'")
    conn.execute("ALTER TABLE calls ADD COLUMN timeline_dropped INTEGER NOT NULL DEFAULT 0")


def _migration_4(conn: sqlite3.Connection) -> None:
    # Post-call webhooks not yet delivered: kept with the records, so none is lost to a
    # restart, and written with the record they carry.
    conn.execute(
        """
        CREATE TABLE webhook_deliveries (
            message_id      TEXT PRIMARY KEY,
            call_sid        TEXT NOT NULL,
            body            TEXT NOT NULL,
            created_at      REAL NOT NULL,
            attempts        INTEGER NOT NULL,
            next_attempt_at REAL NOT NULL,
            last_error      TEXT NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)")


def _migration_5(conn: sqlite3.Connection) -> None:
    # The call's recording (JSON: kind, status, sid, url, duration_s, error), and recording
    # status callbacks that came before the call's record.
    conn.execute("ALTER TABLE calls ADD COLUMN recording_json TEXT")
    conn.execute(
        """
        CREATE TABLE recording_status_pending (
            call_sid       TEXT PRIMARY KEY,
            recording_json TEXT NOT NULL,
            updated_at     REAL NOT NULL
        )
        """
    )


def _migration_6(conn: sqlite3.Connection) -> None:
    # A heartbeat row per call in progress, so the console of every instance sharing the
    # records lists every instance's live calls.
    conn.execute(
        """
        CREATE TABLE live_calls (
            call_sid    TEXT PRIMARY KEY,
            replica     TEXT NOT NULL,
            started_at  REAL NOT NULL,
            from_number TEXT NOT NULL,
            to_number   TEXT NOT NULL,
            profile     TEXT NOT NULL,
            phase       TEXT NOT NULL,
            turns       INTEGER NOT NULL,
            barge_ins   INTEGER NOT NULL,
            updated_at  REAL NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX live_calls_replica ON live_calls (replica)")


# Append only: a database at version N has had exactly the first N steps applied.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
    _migration_5,
    _migration_6,
)


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front, so reads made inside to decide what to write
    # cannot be invalidated by another process before the write.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def apply_migrations(conn: sqlite3.Connection, target: int | None = None) -> int:
    """Bring an autocommit connection's schema up to `target` (default: all); its version.

    Each step runs in its own transaction together with the version bump, so a failed step
    leaves the database at the previous version, and a second instance opening the same file
    at the same time waits on the lock and then skips the steps already done.
    """
    target = len(MIGRATIONS) if target is None else target
    while True:
        with _transaction(conn):
            version = _user_version(conn)
            if version >= target:
                return version
            MIGRATIONS[version](conn)
            # PRAGMA takes no parameters; the value is our own integer, not outside input.
            conn.execute(f"PRAGMA user_version = {version + 1:d}")


# ---------------------------------------------------------------------------- checks


def records_file_problem(path: str) -> str | None:
    """Why the records file at `path` cannot be used, or None if it can.

    Checked with the settings, before the server starts, so that a records file that cannot
    work stops the start with one line rather than a log line an operator may miss. Creates
    and changes nothing: an existing file is only opened read-only.
    """
    if path == ":memory:":
        return None
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        return f"the directory {directory} does not exist"
    if os.path.isdir(path):
        return f"{path} is a directory, not a file"
    # SQLite writes its journal (-wal, -shm) next to the database: the directory must be
    # writable even when the file exists.
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"this user cannot create files in {directory}"
    if not os.path.exists(path):
        return None
    if not os.path.isfile(path):
        return f"{path} is not a regular file"
    if not os.access(path, os.R_OK | os.W_OK):
        return f"{path} is not readable and writable by this user"
    with open(path, "rb") as f:
        head = f.read(len(_SQLITE_HEADER))
    if head and head != _SQLITE_HEADER:
        return f"{path} is not a SQLite database"
    try:
        conn = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True)
        try:
            version = _user_version(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return f"{path} cannot be read as a SQLite database ({exc})"
    if version > len(MIGRATIONS):
        return (
            f"{path} has schema version {version}, newer than this version of phone-bridge "
            f"understands ({len(MIGRATIONS)})"
        )
    return None


def call_db_problems(path: str | None) -> list[str]:
    """`serve`'s check of CALL_DB_PATH: the operator asked for records, so a file that
    cannot hold them stops the start rather than a call going unrecorded with only a log
    line to say so."""
    problem = records_file_problem(path) if path is not None else None
    if problem is None:
        return []
    return [
        f"CALL_DB_PATH: {problem}; fix that, or set CALL_DB_PATH= (empty) to run without "
        "call records"
    ]


# ---------------------------------------------------------------------------- store


_SEARCHED_COLUMNS = (
    "call_sid",
    "from_number",
    "to_number",
    "profile",
    "outcome",
    "transcript_text",
)
_SEARCH_WHERE = " OR ".join(
    f"bridge_fold({column}) LIKE :pattern ESCAPE '\\'" for column in _SEARCHED_COLUMNS
)
LIVE_COLUMNS = (
    "call_sid, replica, started_at, from_number, to_number, profile, phase, turns, barge_ins,"
    " updated_at"
)


class SQLiteCallStore:
    """A `CallStore` in one SQLite file (or ":memory:"), for a single instance."""

    SCHEMA_VERSION: int = len(MIGRATIONS)

    def __init__(self, path: str) -> None:
        self.path = path
        # One thread, so the connection is only ever touched from the thread that made it
        # (sqlite3 checks this) and writes are serialised without a lock of our own.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="call-store")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    def __str__(self) -> str:
        return self.path

    # -- lifecycle

    async def open(self) -> None:
        """Create or upgrade the schema. ValueError if the file cannot be used."""
        if self._closed:
            raise RuntimeError("call store is closed")
        if self._conn is not None:
            raise RuntimeError("call store is already open")
        self._conn = await self._in_worker(self._open_sync)

    def _refuse_non_database(self) -> None:
        # SQLite takes a 1-byte file for an empty database and would write over it; any
        # non-empty database file starts with this header.
        if self.path in ("", ":memory:") or not os.path.isfile(self.path):
            return
        with open(self.path, "rb") as f:
            head = f.read(len(_SQLITE_HEADER))
        if head and head != _SQLITE_HEADER:
            raise self._not_a_database()

    def _not_a_database(self) -> ValueError:
        return ValueError(
            f"call store {self.path!r} is not a SQLite database; "
            "point the call records at another file"
        )

    def _open_sync(self) -> sqlite3.Connection:
        self._refuse_non_database()
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=True
        )
        try:
            try:
                version = _user_version(conn)
            except sqlite3.DatabaseError as exc:
                if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_NOTADB:
                    raise self._not_a_database() from exc
                raise
            if version > self.SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"call store {self.path!r} has schema version {version}, newer than this "
                    f"version of phone-bridge understands ({self.SCHEMA_VERSION}); "
                    "upgrade phone-bridge or use another file"
                )
            if self.path not in ("", ":memory:"):
                # Lets the console (or another process) read while a call's record is written.
                conn.execute("PRAGMA journal_mode = WAL")
            conn.create_function("bridge_fold", 1, fold, deterministic=True)
            apply_migrations(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        """Finish the queued writes and close. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._conn is not None:
                # Queued behind any saves still in flight, which therefore complete first.
                await self._in_worker(self._close_sync)
        finally:
            self._executor.shutdown(wait=False)

    def _close_sync(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- the interface

    async def save(self, record: CallRecord, delivery: WebhookDelivery | None = None) -> bool:
        if not record.call_sid:
            raise ValueError("a call record needs a call_sid")
        return await self._run(self._save_sync, record, delivery)

    async def due_deliveries(self, now: float, limit: int) -> list[WebhookDelivery]:
        return await self._run(self._due_deliveries_sync, now, limit)

    async def next_delivery_at(self) -> float | None:
        return await self._run(self._next_delivery_at_sync)

    async def pending_deliveries(self) -> int:
        return await self._run(self._pending_deliveries_sync)

    async def delivery_done(self, message_id: str) -> None:
        await self._run(self._delivery_done_sync, message_id)

    async def delivery_failed(
        self, message_id: str, attempts: int, next_attempt_at: float, error: str
    ) -> None:
        await self._run(self._delivery_failed_sync, message_id, attempts, next_attempt_at, error)

    async def has(self, call_sid: str) -> bool:
        return await self._run(self._has_sync, call_sid)

    async def get(self, call_sid: str) -> CallRecord | None:
        return await self._run(self._get_sync, call_sid)

    async def search(
        self, text: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[CallListing]:
        needle = search_needle(text, limit, offset)
        return await self._run(self._search_sync, needle, limit, offset)

    async def record_status(self, call_sid: str, status: str, duration_s: int | None) -> None:
        if not call_sid or not status:
            raise ValueError("a call status needs a call_sid and a status")
        await self._run(self._record_status_sync, call_sid, status, duration_s)

    async def delete(self, call_sid: str) -> CallRecord | None:
        return await self._run(self._delete_sync, call_sid)

    async def expire_recordings(self, before: float) -> list[tuple[str, Recording]]:
        return await self._run(self._expire_recordings_sync, before)

    async def record_recording(self, call_sid: str, update: Recording) -> None:
        if not call_sid:
            raise ValueError("a recording status needs a call_sid")
        await self._run(self._record_recording_sync, call_sid, update)

    async def publish_live_calls(
        self, replica: str, calls: Sequence[LiveCallRow], now: float, stale_before: float
    ) -> None:
        await self._run(self._publish_live_calls_sync, replica, list(calls), now, stale_before)

    async def live_calls(self, fresh_since: float) -> list[LiveCallRow]:
        return await self._run(self._live_calls_sync, fresh_since)

    async def live_replica(self, call_sid: str, fresh_since: float) -> str | None:
        return await self._run(self._live_replica_sync, call_sid, fresh_since)

    # -- worker-thread side

    async def _in_worker(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._closed:
            raise RuntimeError("call store is closed")
        if self._conn is None:
            raise RuntimeError("call store is not open; await open() first")
        try:
            return await self._in_worker(fn, *args)
        except sqlite3.OperationalError as exc:
            # Locked past the busy timeout, a disk error, a full disk: may pass.
            raise StoreUnavailable(f"{self.path}: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:  # only close() clears it, and it refuses new jobs first
            raise RuntimeError("call store is closed")
        return conn

    def _has_sync(self, call_sid: str) -> bool:
        conn = self._connection()
        return (
            conn.execute("SELECT 1 FROM calls WHERE call_sid = ?", (call_sid,)).fetchone()
            is not None
        )

    def _due_deliveries_sync(self, now: float, limit: int) -> list[WebhookDelivery]:
        conn = self._connection()
        with _transaction(conn):
            rows = conn.execute(
                f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE next_attempt_at <= ?"
                " ORDER BY next_attempt_at, message_id LIMIT ?",
                (now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE webhook_deliveries SET next_attempt_at = ? WHERE message_id = ?",
                [(now + DELIVERY_HOLD_S, row[0]) for row in rows],
            )
        return [WebhookDelivery(*row) for row in rows]

    def _next_delivery_at_sync(self) -> float | None:
        row = (
            self._connection()
            .execute("SELECT MIN(next_attempt_at) FROM webhook_deliveries")
            .fetchone()
        )
        return None if row is None or row[0] is None else float(row[0])

    def _pending_deliveries_sync(self) -> int:
        row = self._connection().execute("SELECT COUNT(*) FROM webhook_deliveries").fetchone()
        return int(row[0])

    def _delivery_done_sync(self, message_id: str) -> None:
        conn = self._connection()
        with _transaction(conn):
            conn.execute("DELETE FROM webhook_deliveries WHERE message_id = ?", (message_id,))

    def _delivery_failed_sync(
        self, message_id: str, attempts: int, next_attempt_at: float, error: str
    ) -> None:
        conn = self._connection()
        with _transaction(conn):
            conn.execute(
                "UPDATE webhook_deliveries SET attempts = ?, next_attempt_at = ?, last_error = ?"
                " WHERE message_id = ?",
                (attempts, next_attempt_at, error[:500], message_id),
            )

    def _save_sync(self, r: CallRecord, delivery: WebhookDelivery | None = None) -> bool:
        conn = self._connection()
        with _transaction(conn):
            if _status_row(conn, "calls", r.call_sid) is not None:
                return False  # recorded already: the first record stands
            stored = _status_row(conn, "call_status_pending", r.call_sid)
            # A status callback that beat this save is Twilio's word on the call; the
            # record, built before it, would otherwise erase it.
            final_status, duration_s = merge_status(stored, r.final_status, r.duration_s)
            recording = r.recording
            early = conn.execute(
                "SELECT recording_json FROM recording_status_pending WHERE call_sid = ?",
                (r.call_sid,),
            ).fetchone()
            if early is not None:  # Twilio's word on the recording came first
                update = recording_from_json(early[0])
                if update is not None:
                    recording = merge_recording(recording, update)
                conn.execute(
                    "DELETE FROM recording_status_pending WHERE call_sid = ?", (r.call_sid,)
                )
            values = record_values(r, final_status, duration_s, recording)
            conn.execute(
                f"INSERT INTO calls ({RECORD_COLUMNS}) VALUES ({', '.join('?' * len(values))})",
                values,
            )
            conn.execute("DELETE FROM call_status_pending WHERE call_sid = ?", (r.call_sid,))
            if delivery is not None:
                conn.execute(
                    f"INSERT INTO webhook_deliveries ({DELIVERY_COLUMNS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    delivery_values(delivery),
                )
        return True

    def _get_sync(self, call_sid: str) -> CallRecord | None:
        row = (
            self._connection()
            .execute(f"SELECT {RECORD_COLUMNS} FROM calls WHERE call_sid = ?", (call_sid,))
            .fetchone()
        )
        return None if row is None else record_from_row(row)

    def _search_sync(self, needle: str, limit: int, offset: int) -> list[CallListing]:
        where = f"WHERE {_SEARCH_WHERE}" if needle else ""
        # call_sid breaks ties in started_at so pages neither repeat nor skip a call.
        rows = (
            self._connection()
            .execute(
                f"SELECT {SUMMARY_COLUMNS} FROM calls {where}"
                " ORDER BY started_at DESC, call_sid DESC LIMIT :limit OFFSET :offset",
                {"pattern": like_pattern(needle.casefold()), "limit": limit, "offset": offset},
            )
            .fetchall()
        )
        return [CallListing(*row) for row in rows]

    def _delete_sync(self, call_sid: str) -> CallRecord | None:
        record = self._get_sync(call_sid)
        conn = self._connection()
        with _transaction(conn):
            for table in ("calls", "call_status_pending", "recording_status_pending"):
                conn.execute(f"DELETE FROM {table} WHERE call_sid = ?", (call_sid,))
            conn.execute("DELETE FROM webhook_deliveries WHERE call_sid = ?", (call_sid,))
        return record

    def _expire_recordings_sync(self, before: float) -> list[tuple[str, Recording]]:
        conn = self._connection()
        expired = []
        with _transaction(conn):
            expiring = EXPIRING_CALLS.replace("%s", "?").replace("%%", "%")
            rows = conn.execute(expiring, (before,)).fetchall()
            for call_sid, recording_json in rows:
                recording, kept = expired_recording(recording_json)
                if recording is not None:
                    expired.append((call_sid, recording))
                conn.execute(
                    "UPDATE calls SET recording_json = ?, timeline_json = '[]',"
                    " timeline_dropped = 0 WHERE call_sid = ?",
                    (recording_to_json(kept), call_sid),
                )
        return expired

    def _record_recording_sync(self, call_sid: str, update: Recording) -> None:
        conn = self._connection()
        with _transaction(conn):
            row = conn.execute(
                "SELECT recording_json FROM calls WHERE call_sid = ?", (call_sid,)
            ).fetchone()
            if row is not None:
                merged = merge_recording(recording_from_json(row[0]), update)
                conn.execute(
                    "UPDATE calls SET recording_json = ? WHERE call_sid = ?",
                    (recording_to_json(merged), call_sid),
                )
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO recording_status_pending"
                    " (call_sid, recording_json, updated_at) VALUES (?, ?, ?)",
                    (call_sid, recording_to_json(update), time.time()),
                )

    def _record_status_sync(self, call_sid: str, status: str, duration_s: int | None) -> None:
        conn = self._connection()
        with _transaction(conn):
            stored = _status_row(conn, "calls", call_sid)
            if stored is not None:
                merged = merge_status(stored, status, duration_s)
                conn.execute(
                    "UPDATE calls SET final_status = ?, duration_s = ? WHERE call_sid = ?",
                    (*merged, call_sid),
                )
            else:
                pending = _status_row(conn, "call_status_pending", call_sid)
                merged = merge_status(pending, status, duration_s)
                conn.execute(
                    "INSERT OR REPLACE INTO call_status_pending"
                    " (call_sid, final_status, duration_s, updated_at) VALUES (?, ?, ?, ?)",
                    (call_sid, *merged, time.time()),
                )

    def _publish_live_calls_sync(
        self, replica: str, calls: list[LiveCallRow], now: float, stale_before: float
    ) -> None:
        conn = self._connection()
        with _transaction(conn):
            conn.execute(
                "DELETE FROM live_calls WHERE replica = ? OR updated_at < ?",
                (replica, stale_before),
            )
            conn.executemany(
                f"INSERT OR REPLACE INTO live_calls ({LIVE_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [live_values(replica, call, now) for call in calls],
            )

    def _live_calls_sync(self, fresh_since: float) -> list[LiveCallRow]:
        rows = (
            self._connection()
            .execute(
                f"SELECT {LIVE_COLUMNS} FROM live_calls WHERE updated_at >= ?"
                " ORDER BY started_at, call_sid",
                (fresh_since,),
            )
            .fetchall()
        )
        return [LiveCallRow(*row) for row in rows]

    def _live_replica_sync(self, call_sid: str, fresh_since: float) -> str | None:
        row = (
            self._connection()
            .execute(
                "SELECT replica FROM live_calls WHERE call_sid = ? AND updated_at >= ?",
                (call_sid, fresh_since),
            )
            .fetchone()
        )
        return None if row is None else str(row[0])


def _status_row(
    conn: sqlite3.Connection, table: str, call_sid: str
) -> tuple[str | None, int | None] | None:
    # `table` is always one of ours, never outside input.
    return conn.execute(
        f"SELECT final_status, duration_s FROM {table} WHERE call_sid = ?", (call_sid,)
    ).fetchone()


# ------------------------------------------------------------ shared by both stores


def search_needle(text: str | None, limit: int, offset: int) -> str:
    """What `search` looks for ("" lists all), once its paging is known to be sane."""
    if limit < 0 or offset < 0:
        raise ValueError(f"limit and offset must not be negative (got {limit}, {offset})")
    return text.strip() if text else ""


# Calls whose recording (by the bridge, not yet deleted) or timeline is to expire; one
# parameter, the time before which they started.
EXPIRING_CALLS = (
    "SELECT call_sid, recording_json FROM calls WHERE started_at < %s AND"
    " (timeline_json != '[]' OR (recording_json LIKE '%%\"kind\":\"bridge\"%%'"
    ' AND recording_json NOT LIKE \'%%"status":"deleted"%%\'))'
)


def expired_recording(recording_json: str | None) -> tuple[Recording | None, Recording | None]:
    """An expiring call's recording: the one whose file is to go (the bridge's own), and
    what its record keeps in its place."""
    recording = kept = recording_from_json(recording_json)
    if recording is None or recording.kind != "bridge":
        return None, kept
    return recording, replace(recording, status="deleted", url=None, duration_s=None)


def live_values(replica: str, call: LiveCallRow, now: float) -> tuple[Any, ...]:
    return (
        call.call_sid,
        replica,
        call.started_at,
        call.from_number,
        call.to_number,
        call.profile,
        call.phase,
        call.turns,
        call.barge_ins,
        now,
    )
