"""The PostgreSQL call store: one database shared by every replica.

It behaves as `SQLiteCallStore` does (the same tests run against both), with what several
processes writing at once need on top:

- the schema is migrated at open under an advisory lock, in one transaction (PostgreSQL's
  DDL is transactional), so replicas starting together migrate once; a database migrated by
  a newer phone-bridge is refused (`SchemaTooNew`).
- the writes about one call (its record, Twilio's status and recording callbacks, which may
  reach different replicas at the same moment) take a per-call advisory lock, so each
  sees what the other wrote: a callback that lands as the record is saved is never lost.
- a post-call webhook is handed to one replica's worker at a time (`FOR UPDATE SKIP LOCKED`).

psycopg 3 with its async pool: libpq underneath, so the URL takes everything libpq knows
(`sslmode`, `sslrootcert`, `connect_timeout`, `options`, PGPASSWORD and ~/.pgpass), and
connections are checked before use, so a restarted server costs no write.

Search folds case in Python (as SQLite's store does) into a column of its own, so both
stores find the same calls whatever the server's locale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import psycopg
from psycopg import AsyncConnection, conninfo
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from bridge.records.model import CallListing, CallRecord, LiveCallRow, Recording, WebhookDelivery
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
    searched_values,
)
from bridge.records.store import (
    DELIVERY_HOLD_S,
    EXPIRING_CALLS,
    LIVE_COLUMNS,
    SchemaTooNew,
    StoreUnavailable,
    expired_recording,
    live_values,
    search_needle,
)

# pg_advisory_xact_lock keys: one for migrations (the bigint form), and a class for the
# per-call locks (the two-int form: a space of its own).
MIGRATION_LOCK = 0x7068_6F6E_6562_7267  # "phonebrg"
CALL_LOCK_CLASS = 0x7062_6331  # "pbc1"
# How long an operation waits for a free connection from the pool, and for a new one.
POOL_WAIT_S = 3.0
CONNECT_TIMEOUT_S = 5
# A migration may wait on another replica's; the lock and the steps together get this long.
MIGRATION_TIMEOUT_S = 60.0
# Beyond the statement timeout (which the server enforces): a server that went silent
# mid-query is given up by the client after this much more.
CLIENT_SLACK_S = 2.0


def _migration_1() -> str:
    return """
    CREATE TABLE calls (
        call_sid         TEXT COLLATE "C" PRIMARY KEY,
        stream_sid       TEXT NOT NULL,
        from_number      TEXT NOT NULL,
        to_number        TEXT NOT NULL,
        profile          TEXT,
        direction        TEXT NOT NULL,
        started_at       DOUBLE PRECISION NOT NULL,
        ended_at         DOUBLE PRECISION NOT NULL,
        outcome          TEXT NOT NULL,
        end_reason       TEXT NOT NULL,
        model            TEXT NOT NULL,
        turn_count       INTEGER NOT NULL,
        barge_ins        INTEGER NOT NULL,
        reconnects       INTEGER NOT NULL,
        cost_usd         DOUBLE PRECISION,
        final_status     TEXT,
        duration_s       BIGINT,
        turns_json       TEXT NOT NULL,
        tokens_json      TEXT NOT NULL,
        transcript_json  TEXT NOT NULL,
        transcript_text  TEXT NOT NULL,
        timeline_json    TEXT NOT NULL DEFAULT '[]',
        timeline_dropped INTEGER NOT NULL DEFAULT 0,
        recording_json   TEXT,
        -- what search looks in, case-folded by the bridge (rows.fold)
        searched         TEXT[] NOT NULL
    );
    CREATE INDEX calls_newest ON calls (started_at DESC, call_sid DESC);
    CREATE INDEX calls_from_number ON calls (from_number);
    CREATE INDEX calls_to_number ON calls (to_number);
    CREATE TABLE call_status_pending (
        call_sid     TEXT COLLATE "C" PRIMARY KEY,
        final_status TEXT NOT NULL,
        duration_s   BIGINT,
        updated_at   DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE recording_status_pending (
        call_sid       TEXT COLLATE "C" PRIMARY KEY,
        recording_json TEXT NOT NULL,
        updated_at     DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE webhook_deliveries (
        message_id      TEXT COLLATE "C" PRIMARY KEY,
        call_sid        TEXT COLLATE "C" NOT NULL,
        body            TEXT NOT NULL,
        created_at      DOUBLE PRECISION NOT NULL,
        attempts        INTEGER NOT NULL,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        last_error      TEXT NOT NULL
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at);
    CREATE TABLE live_calls (
        call_sid    TEXT COLLATE "C" PRIMARY KEY,
        replica     TEXT NOT NULL,
        started_at  DOUBLE PRECISION NOT NULL,
        from_number TEXT NOT NULL,
        to_number   TEXT NOT NULL,
        profile     TEXT NOT NULL,
        phase       TEXT NOT NULL,
        turns       INTEGER NOT NULL,
        barge_ins   INTEGER NOT NULL,
        updated_at  DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX live_calls_replica ON live_calls (replica);
    """


# Append only, and only what an older replica still running can live with (new tables, new
# columns with defaults): during a rolling update, old and new replicas share the database.
MIGRATIONS: tuple[str, ...] = (_migration_1(),)
SCHEMA_TABLE = "phone_bridge_schema"

_SEARCH_WHERE = (
    "EXISTS (SELECT 1 FROM unnest(searched) AS s(value) WHERE s.value LIKE %(pattern)s ESCAPE '\\')"
)
# The pool warns of every failed reconnection (several a second while the database is
# away); the write-behind queue says it once a minute, with what waits meanwhile.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

# Errors that say the database is away, not that it refused the request.
_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, TimeoutError)


def safe_url(url: str) -> str:
    """The URL as logs may show it: rebuilt from what libpq reads in it, without the
    password (libpq takes characters in a password that a URL parser stops at, such as an
    unencoded # or ?, so no part of the URL as written is shown)."""
    try:
        fields = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(a URL libpq cannot read, not shown)"
    user = str(fields.pop("user", ""))
    secret = fields.pop("password", None)
    auth = quote(user, safe="") + (":***" if secret is not None else "")
    hosts = str(fields.pop("host", ""))
    port = fields.pop("port", None)
    if "@" in hosts:  # (a password's @, unencoded: the host libpq reads holds its rest)
        hosts, port = "(host not shown)", None
    elif "/" in hosts:  # a socket's directory is a parameter, not a host
        fields["host"], hosts = hosts, ""
    where = hosts + (f":{port}" if port else "")
    dbname = quote(str(fields.pop("dbname", "")), safe="")
    query = urlencode(sorted((k, str(v)) for k, v in fields.items()), safe="*/:")
    shown = f"postgresql://{auth + '@' if auth else ''}{where}/{dbname}"
    return shown + (f"?{query}" if query else "")


def url_problem(url: str) -> str | None:
    """Why `url` cannot be a PostgreSQL URL, without connecting (and without quoting it)."""
    if urlsplit(url).scheme not in ("postgresql", "postgres"):
        return "must be a postgresql:// URL, e.g. postgresql://bridge@db.example.com/calls"
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "is not a URL libpq understands (postgresql://user:password@host:port/db)"
    return None


def _no_nul(value: Any) -> Any:
    # PostgreSQL's text cannot hold NUL, which a caller ID or a model could still send.
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


class PostgresCallStore:
    """A `CallStore` in a PostgreSQL database, shared by any number of replicas."""

    SCHEMA_VERSION: int = len(MIGRATIONS)

    def __init__(self, url: str, *, pool_size: int = 5, statement_timeout_ms: int = 5000) -> None:
        self.url = url
        self.safe_url = safe_url(url)
        self._secrets = [s for s in _url_secrets(url) if len(s) >= 4]
        self.pool_size = pool_size
        self.statement_timeout_ms = statement_timeout_ms
        self._deadline_s = statement_timeout_ms / 1000 + CLIENT_SLACK_S
        self._pool: AsyncConnectionPool[AsyncConnection[Any]] | None = None
        self._ready = False
        self._closed = False
        self._in_use = 0  # operations under way, which close() lets finish
        self._idle = asyncio.Event()
        self._idle.set()

    def __str__(self) -> str:
        return self.safe_url

    # -- lifecycle

    async def open(self) -> None:
        """Connect and migrate. StoreUnavailable while the server cannot be reached (call
        open again later: the pool keeps trying meanwhile); SchemaTooNew for a database a
        newer phone-bridge migrated."""
        if self._closed:
            raise RuntimeError("call store is closed")
        if self._ready:
            raise RuntimeError("call store is already open")
        if self._pool is None:
            kwargs: dict[str, Any] = {"autocommit": True}
            if "connect_timeout" not in conninfo_to_dict(self.url):
                kwargs["connect_timeout"] = CONNECT_TIMEOUT_S
            self._pool = AsyncConnectionPool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                kwargs=kwargs,
                configure=self._configure,
                check=AsyncConnectionPool.check_connection,
                timeout=POOL_WAIT_S,
                name="call-store",
                open=False,
            )
            await self._pool.open(wait=False)
        try:
            async with asyncio.timeout(MIGRATION_TIMEOUT_S), self._pool.connection() as conn:
                await self._migrate(conn)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(self._describe(exc)) from exc
        self._ready = True

    async def _configure(self, conn: AsyncConnection[Any]) -> None:
        # A statement the server cannot finish in time fails rather than hold a
        # connection (and the writes queued behind it) for ever.
        await conn.execute(f"SET statement_timeout = {int(self.statement_timeout_ms):d}")

    async def _migrate(self, conn: AsyncConnection[Any]) -> None:
        async with conn.transaction():
            # Replicas starting together wait here; each then finds the steps done.
            await conn.execute(f"SET LOCAL statement_timeout = {int(MIGRATION_TIMEOUT_S * 1000)}")
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (version INTEGER NOT NULL)"
            )
            row = await (await conn.execute(f"SELECT version FROM {SCHEMA_TABLE}")).fetchone()
            if row is None:
                await conn.execute(f"INSERT INTO {SCHEMA_TABLE} (version) VALUES (0)")
            version = 0 if row is None else int(row[0])
            if version > self.SCHEMA_VERSION:
                raise SchemaTooNew(self.newer_schema(version))
            for step in MIGRATIONS[version:]:
                await conn.execute(step)
            if version < self.SCHEMA_VERSION:
                await conn.execute(
                    f"UPDATE {SCHEMA_TABLE} SET version = %s", (self.SCHEMA_VERSION,)
                )

    def newer_schema(self, version: int) -> str:
        return (
            f"the database {self.safe_url} has schema version {version}, newer than this "
            f"version of phone-bridge understands ({self.SCHEMA_VERSION}); upgrade phone-bridge"
        )

    async def close(self) -> None:
        """Close the pool once the operations under way are done. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._pool is None:
            return
        # Saves already under way (the last calls' teardowns, at shutdown) finish first;
        # each has its own deadline, so this wait has one too.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self._deadline_s + POOL_WAIT_S)
        await self._pool.close(timeout=self._deadline_s)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        if self._closed:
            raise RuntimeError("call store is closed")
        if self._pool is None:
            raise RuntimeError("call store is not open; await open() first")
        if not self._ready:
            raise StoreUnavailable(f"{self.safe_url} has not been reached yet")
        self._in_use += 1
        self._idle.clear()
        try:
            deadline = self._deadline_s + POOL_WAIT_S  # (waiting for a connection, then using it)
            async with asyncio.timeout(deadline), self._pool.connection() as conn:
                yield conn
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(self._describe(exc)) from exc
        finally:
            self._in_use -= 1
            if not self._in_use:
                self._idle.set()

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            text = f"no answer within {self._deadline_s:g} s"
        else:
            text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
        text = text.replace(self.url, self.safe_url)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return f"{self.safe_url}: {text}"

    @staticmethod
    async def _lock_call(conn: AsyncConnection[Any], call_sid: str) -> None:
        """Serialise the writes about one call, across replicas, until the transaction ends."""
        await conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (CALL_LOCK_CLASS, _no_nul(call_sid))
        )

    # -- the interface

    async def save(self, record: CallRecord, delivery: WebhookDelivery | None = None) -> bool:
        if not record.call_sid:
            raise ValueError("a call record needs a call_sid")
        sid = _no_nul(record.call_sid)
        async with self._connection() as conn, conn.transaction():
            await self._lock_call(conn, sid)
            if await _one(conn, "SELECT 1 FROM calls WHERE call_sid = %s", sid) is not None:
                return False  # recorded already: the first record stands
            stored = await _one(
                conn, "SELECT final_status, duration_s FROM call_status_pending"
                " WHERE call_sid = %s", sid,
            )  # fmt: skip
            # A status callback that beat this save is Twilio's word on the call.
            final_status, duration_s = merge_status(
                (stored[0], stored[1]) if stored else None, record.final_status, record.duration_s
            )
            recording = record.recording
            early = await _one(
                conn, "DELETE FROM recording_status_pending WHERE call_sid = %s"
                " RETURNING recording_json", sid,
            )  # fmt: skip
            if early is not None:  # Twilio's word on the recording came first
                update = recording_from_json(early[0])
                if update is not None:
                    recording = merge_recording(recording, update)
            values = [
                _no_nul(v) for v in record_values(record, final_status, duration_s, recording)
            ]
            searched = [_no_nul(fold(v)) for v in searched_values(record) if v is not None]
            await conn.execute(
                f"INSERT INTO calls ({RECORD_COLUMNS}, searched)"
                f" VALUES ({', '.join(['%s'] * (len(values) + 1))})",
                (*values, searched),
            )
            await conn.execute("DELETE FROM call_status_pending WHERE call_sid = %s", (sid,))
            if delivery is not None:
                await conn.execute(
                    f"INSERT INTO webhook_deliveries ({DELIVERY_COLUMNS})"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [_no_nul(v) for v in delivery_values(delivery)],
                )
        return True

    async def due_deliveries(self, now: float, limit: int) -> list[WebhookDelivery]:
        async with self._connection() as conn:
            cursor = await conn.execute(
                """
                WITH due AS (
                    SELECT message_id, next_attempt_at AS was FROM webhook_deliveries
                    WHERE next_attempt_at <= %s ORDER BY next_attempt_at, message_id
                    LIMIT %s FOR UPDATE SKIP LOCKED
                )
                UPDATE webhook_deliveries AS w SET next_attempt_at = %s FROM due
                WHERE w.message_id = due.message_id
                RETURNING w.message_id, w.call_sid, w.body, w.created_at, w.attempts, due.was,
                    w.last_error
                """,
                (now, limit, now + DELIVERY_HOLD_S),
            )
            rows = await cursor.fetchall()
        rows.sort(key=lambda row: (row[5], row[0]))
        return [WebhookDelivery(*row) for row in rows]

    async def next_delivery_at(self) -> float | None:
        async with self._connection() as conn:
            row = await _one(conn, "SELECT MIN(next_attempt_at) FROM webhook_deliveries")
        return None if row is None or row[0] is None else float(row[0])

    async def pending_deliveries(self) -> int:
        async with self._connection() as conn:
            row = await _one(conn, "SELECT COUNT(*) FROM webhook_deliveries")
        return int(row[0]) if row is not None else 0

    async def delivery_done(self, message_id: str) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "DELETE FROM webhook_deliveries WHERE message_id = %s", (_no_nul(message_id),)
            )

    async def delivery_failed(
        self, message_id: str, attempts: int, next_attempt_at: float, error: str
    ) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE webhook_deliveries SET attempts = %s, next_attempt_at = %s,"
                " last_error = %s WHERE message_id = %s",
                (attempts, next_attempt_at, _no_nul(error[:500]), _no_nul(message_id)),
            )

    async def has(self, call_sid: str) -> bool:
        async with self._connection() as conn:
            row = await _one(conn, "SELECT 1 FROM calls WHERE call_sid = %s", _no_nul(call_sid))
        return row is not None

    async def get(self, call_sid: str) -> CallRecord | None:
        async with self._connection() as conn:
            row = await _one(
                conn, f"SELECT {RECORD_COLUMNS} FROM calls WHERE call_sid = %s", _no_nul(call_sid)
            )
        return None if row is None else record_from_row(row)

    async def search(
        self, text: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[CallListing]:
        needle = search_needle(text, limit, offset)
        where = f"WHERE {_SEARCH_WHERE}" if needle else ""
        params = {"pattern": _no_nul(like_pattern(needle.casefold())), "limit": limit}
        async with self._connection() as conn:
            cursor = await conn.execute(
                f"SELECT {SUMMARY_COLUMNS} FROM calls {where}"
                # call_sid breaks ties in started_at so pages neither repeat nor skip a call.
                " ORDER BY started_at DESC, call_sid DESC LIMIT %(limit)s OFFSET %(offset)s",
                {**params, "offset": offset},
            )
            rows = await cursor.fetchall()
        return [CallListing(*row) for row in rows]

    async def record_status(self, call_sid: str, status: str, duration_s: int | None) -> None:
        if not call_sid or not status:
            raise ValueError("a call status needs a call_sid and a status")
        sid = _no_nul(call_sid)
        async with self._connection() as conn, conn.transaction():
            await self._lock_call(conn, sid)
            stored = await _one(
                conn, "SELECT final_status, duration_s FROM calls WHERE call_sid = %s", sid
            )
            if stored is not None:
                merged = merge_status((stored[0], stored[1]), status, duration_s)
                await conn.execute(
                    "UPDATE calls SET final_status = %s, duration_s = %s WHERE call_sid = %s",
                    (*merged, sid),
                )
                return
            pending = await _one(
                conn, "SELECT final_status, duration_s FROM call_status_pending"
                " WHERE call_sid = %s", sid,
            )  # fmt: skip
            status_kept, duration_kept = merge_status(
                (pending[0], pending[1]) if pending else None, _no_nul(status), duration_s
            )
            await conn.execute(
                "INSERT INTO call_status_pending (call_sid, final_status, duration_s, updated_at)"
                " VALUES (%s, %s, %s, extract(epoch FROM now())) ON CONFLICT (call_sid) DO UPDATE"
                " SET final_status = EXCLUDED.final_status, duration_s = EXCLUDED.duration_s,"
                " updated_at = EXCLUDED.updated_at",
                (sid, status_kept, duration_kept),
            )

    async def record_recording(self, call_sid: str, update: Recording) -> None:
        if not call_sid:
            raise ValueError("a recording status needs a call_sid")
        sid = _no_nul(call_sid)
        async with self._connection() as conn, conn.transaction():
            await self._lock_call(conn, sid)
            row = await _one(conn, "SELECT recording_json FROM calls WHERE call_sid = %s", sid)
            if row is not None:
                merged = merge_recording(recording_from_json(row[0]), update)
                await conn.execute(
                    "UPDATE calls SET recording_json = %s WHERE call_sid = %s",
                    (_no_nul(recording_to_json(merged)), sid),
                )
                return
            await conn.execute(
                "INSERT INTO recording_status_pending (call_sid, recording_json, updated_at)"
                " VALUES (%s, %s, extract(epoch FROM now())) ON CONFLICT (call_sid) DO UPDATE"
                " SET recording_json = EXCLUDED.recording_json, updated_at = EXCLUDED.updated_at",
                (sid, _no_nul(recording_to_json(update))),
            )

    async def delete(self, call_sid: str) -> CallRecord | None:
        sid = _no_nul(call_sid)
        record = await self.get(sid)
        async with self._connection() as conn, conn.transaction():
            await self._lock_call(conn, sid)
            for table in (
                "calls",
                "call_status_pending",
                "recording_status_pending",
                "webhook_deliveries",
            ):
                await conn.execute(f"DELETE FROM {table} WHERE call_sid = %s", (sid,))
        return record

    async def expire_recordings(self, before: float) -> list[tuple[str, Recording]]:
        expired = []
        async with self._connection() as conn, conn.transaction():
            cursor = await conn.execute(EXPIRING_CALLS + " FOR UPDATE", (before,))
            for call_sid, recording_json in await cursor.fetchall():
                recording, kept = expired_recording(recording_json)
                if recording is not None:
                    expired.append((call_sid, recording))
                await conn.execute(
                    "UPDATE calls SET recording_json = %s, timeline_json = '[]',"
                    " timeline_dropped = 0 WHERE call_sid = %s",
                    (recording_to_json(kept), call_sid),
                )
        return expired

    async def publish_live_calls(
        self, replica: str, calls: Sequence[LiveCallRow], now: float, stale_before: float
    ) -> None:
        rows = [[_no_nul(v) for v in live_values(replica, call, now)] for call in calls]
        async with self._connection() as conn:
            async with conn.transaction():
                await conn.execute("DELETE FROM live_calls WHERE replica = %s", (replica,))
                if rows:
                    async with conn.cursor() as cursor:
                        await cursor.executemany(
                            f"INSERT INTO live_calls ({LIVE_COLUMNS}) VALUES"
                            " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (call_sid)"
                            " DO UPDATE SET replica = EXCLUDED.replica,"
                            " phase = EXCLUDED.phase, turns = EXCLUDED.turns,"
                            " barge_ins = EXCLUDED.barge_ins, updated_at = EXCLUDED.updated_at",
                            rows,
                        )
            # Apart from the heartbeat's own transaction: two replicas clearing the same
            # dead one's rows at once must not hold each other's locks.
            await conn.execute("DELETE FROM live_calls WHERE updated_at < %s", (stale_before,))

    async def live_calls(self, fresh_since: float) -> list[LiveCallRow]:
        async with self._connection() as conn:
            cursor = await conn.execute(
                f"SELECT {LIVE_COLUMNS} FROM live_calls WHERE updated_at >= %s"
                " ORDER BY started_at, call_sid",
                (fresh_since,),
            )
            rows = await cursor.fetchall()
        return [LiveCallRow(*row) for row in rows]

    async def live_replica(self, call_sid: str, fresh_since: float) -> str | None:
        async with self._connection() as conn:
            row = await _one(
                conn,
                "SELECT replica FROM live_calls WHERE call_sid = %s AND updated_at >= %s",
                _no_nul(call_sid),
                fresh_since,
            )
        return None if row is None else str(row[0])


async def _one(conn: AsyncConnection[Any], query: str, *params: Any) -> tuple[Any, ...] | None:
    cursor = await conn.execute(query, params or None)
    return await cursor.fetchone()


def _url_secrets(url: str) -> list[str]:
    parts = urlsplit(url)
    found = [parts.password] if parts.password else []
    found += [v for k, v in parse_qsl(parts.query) if k == "password"]
    return found


async def schema_problem(url: str, timeout_s: float = 10.0) -> str | None:
    """`serve`'s check: why this phone-bridge cannot use the database (a newer schema),
    or None. A database that cannot be reached now is no reason to refuse calls: the
    records queue until it is back."""
    store = PostgresCallStore(url)
    try:
        async with asyncio.timeout(timeout_s):
            conn = await psycopg.AsyncConnection.connect(
                url, autocommit=True, connect_timeout=min(CONNECT_TIMEOUT_S, int(timeout_s))
            )
            async with conn:
                exists = await _one(conn, "SELECT to_regclass(%s)", SCHEMA_TABLE)
                if exists is None or exists[0] is None:
                    return None
                row = await _one(conn, f"SELECT version FROM {SCHEMA_TABLE}")
    except (psycopg.Error, TimeoutError, OSError):
        return None
    if row is not None and int(row[0]) > store.SCHEMA_VERSION:
        return store.newer_schema(int(row[0]))
    return None
