"""A write-behind queue in front of a call store, so that a database that is away (down,
restarting, failing over, unreachable) costs no call anything and loses no record.

The writes a call makes (its record at the end, Twilio's status and recording callbacks)
are queued in memory and written by one task, in order, with retries and backoff for as
long as the database is away. A caller waits at most `ACK_WAIT_S` to learn the outcome
(the answer of a healthy database); past that the write is queued and the caller goes on.
Meanwhile `has` and `get` see the queued records, so the replay guard and this replica's
console know about calls the database has not got yet.

Memory is bounded: past `max_queued` writes, new ones go to a spill file on local disk
instead. At shutdown, what is still queued after `FLUSH_AT_CLOSE_S` goes to the spill
file too. A store opening (this replica's next start, or any replica sharing the
directory) imports every spill file nobody else holds (`flock`), and deletes each once all
its writes are in. Every write is one the store takes twice without harm (a record is kept
once; a status or recording merges into the same result), so a file imported again after
a crash only repeats what is there.

Reads, and the post-call webhook's bookkeeping, go straight to the store: they fail while
it is away, and their callers already say so and try again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import logging
import os
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from bridge.records.model import CallListing, CallRecord, LiveCallRow, Recording, WebhookDelivery
from bridge.records.rows import (
    delivery_from_json,
    delivery_to_json,
    record_from_json,
    record_to_json,
    recording_fields,
    recording_of_fields,
)
from bridge.records.store import CallStore, StoreUnavailable

log = logging.getLogger("bridge.records")

MAX_QUEUED = 5000  # writes held in memory; a record is a few KiB to a few tens of KiB
ACK_WAIT_S = 2.0
RETRY_FIRST_S = 0.25
RETRY_MAX_S = 5.0
FLUSH_AT_CLOSE_S = 3.0
# How long open() waits for the database before the bridge starts without it (calls first;
# the records wait in the queue and the store keeps trying).
OPEN_WAIT_S = 3.0
SPILL_PREFIX = "phone-bridge-spill-"
REFUSED_PREFIX = "phone-bridge-refused-"
IMPORT_CHUNK = 200  # lines read from a spill file at a time, off the event loop
SPILL_SUFFIX = ".jsonl"
# While the database is away, one failure a minute is logged, not one per retry.
LOG_EVERY_S = 60.0


class RecordsObserver(Protocol):
    """Where the queue reports what it does (the bridge's metrics)."""

    def record_written(self, seconds: float) -> None:
        """A queued write reached the database; it took `seconds` there."""

    def record_write_failed(self) -> None:
        """An attempt failed: the database is away."""

    def records_spilled(self, count: int) -> None:
        """`count` writes went to the spill file."""


@dataclass(eq=False)
class _Write:
    """One write a call made, as the spill file keeps it."""

    kind: str  # "save", "status" or "recording"
    call_sid: str
    record: CallRecord | None = None
    delivery: WebhookDelivery | None = None
    status: str = ""
    duration_s: int | None = None
    recording: Recording | None = None
    origin: _SpillFile | None = None  # the spill file it was imported from
    outcome: asyncio.Future[bool] | None = None
    tries: int = 0

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"v": 1, "kind": self.kind, "call_sid": self.call_sid}
        if self.record is not None:
            entry["record"] = record_to_json(self.record)
            entry["delivery"] = delivery_to_json(self.delivery) if self.delivery else None
        if self.kind == "status":
            entry["status"], entry["duration_s"] = self.status, self.duration_s
        if self.recording is not None:
            entry["recording"] = recording_fields(self.recording)
        return entry

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> _Write:
        kind = entry["kind"]
        if kind == "save":
            delivery = entry.get("delivery")
            record = record_from_json(entry["record"])
            return cls(
                kind,
                record.call_sid,
                record=record,
                delivery=delivery_from_json(delivery) if delivery else None,
            )
        if kind == "status":
            return cls(
                kind, entry["call_sid"], status=entry["status"], duration_s=entry["duration_s"]
            )
        if kind == "recording":
            return cls(kind, entry["call_sid"], recording=recording_of_fields(entry["recording"]))
        raise ValueError(f"unknown write {kind!r}")

    async def apply(self, store: CallStore) -> bool:
        if self.kind == "save":
            assert self.record is not None
            return await store.save(self.record, self.delivery)
        if self.kind == "status":
            await store.record_status(self.call_sid, self.status, self.duration_s)
        else:
            assert self.recording is not None
            await store.record_recording(self.call_sid, self.recording)
        return True


@dataclass(eq=False)
class _SpillFile:
    """A spill file this process holds (its flock): being imported, or being written."""

    path: Path
    handle: IO[str]
    outstanding: int = 0  # imported writes not yet in the database
    loaded: bool = False  # every line read

    def release(self, delete: bool) -> None:
        if delete:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.handle.close()  # (and with it the lock)


@dataclass
class _Failures:
    """A database that is away: when that began, and when it was last said."""

    since: float | None = None
    said_at: float = 0.0
    count: int = 0
    delay_s: float = RETRY_FIRST_S
    last_error: str = field(default="")


class WriteBehindStore:
    """A `CallStore` whose call-time writes are queued in front of another store."""

    def __init__(
        self,
        inner: CallStore,
        spill_dir: Path,
        *,
        replica: str = "",
        max_queued: int = MAX_QUEUED,
        observer: RecordsObserver | None = None,
        concurrency: int = 4,
        ack_wait_s: float = ACK_WAIT_S,
        open_wait_s: float = OPEN_WAIT_S,
    ) -> None:
        self.inner = inner
        self.ack_wait_s = ack_wait_s
        self.open_wait_s = open_wait_s
        self.spill_dir = spill_dir
        self.max_queued = max_queued
        self._replica = "".join(c for c in replica if c.isalnum() or c in "-_.")[:64] or "bridge"
        self._observer = observer
        self._concurrency = max(1, concurrency)
        self._queue: deque[_Write] = deque()
        self._in_flight: set[_Write] = set()
        self._queued_records: dict[str, CallRecord] = {}
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._room = asyncio.Event()
        self._room.set()
        self._opened = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._importing: asyncio.Task[None] | None = None
        self._import_again = False
        self._imported: list[_SpillFile] = []
        self._overflow: _SpillFile | None = None
        self._spill_lock = asyncio.Lock()
        self._failures = _Failures()
        self._closed = False
        # Called after a queued save is in (the post-call webhook: deliver it now).
        self.on_saved: Callable[[], None] | None = None

    def __str__(self) -> str:
        return str(self.inner)

    @property
    def queued(self) -> int:
        """Writes waiting for the database (in memory; not those spilled to disk)."""
        return len(self._queue) + len(self._in_flight)

    @property
    def available(self) -> bool:
        """The database took the last write tried (or none has failed yet)."""
        return self._opened.is_set() and self._failures.since is None

    # -- lifecycle

    async def open(self) -> None:
        """Open the store, waiting up to OPEN_WAIT_S; a database that is away by then is
        opened in the background while writes queue. Errors other than its absence (a
        file that is no database, a newer schema) are raised."""
        opening = asyncio.create_task(self._open_inner(), name="call-store-open")
        done, _ = await asyncio.wait({opening}, timeout=self.open_wait_s)
        if done:
            opening.result()
        else:
            self._keep(opening)
        self._keep(asyncio.create_task(self._write_queued(), name="call-store-writer"))
        self._start_import()

    async def _open_inner(self) -> None:
        while True:
            try:
                await self.inner.open()
            except StoreUnavailable as exc:
                self._failed(exc, "cannot reach the call records")
                await self._back_off()
                continue
            break
        self._recovered()
        self._opened.set()
        self._wake.set()

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Write what the database takes within FLUSH_AT_CLOSE_S, spill the rest to local
        disk for the next start, and close the store."""
        if self._closed:
            return
        self._closed = True
        if self.queued and self._opened.is_set() and self._failures.since is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), FLUSH_AT_CLOSE_S)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Writes imported from a spill file are still in it (kept, not deleted): only this
        # run's own go to a new one.
        left = [w for w in (*self._in_flight, *self._queue) if w.origin is None]
        self._in_flight.clear()
        self._queue.clear()
        if left:
            await self._spill(left)
            log.warning(
                "call records: %d write(s) the database did not take before shutdown are in "
                "%s; the next start imports them",
                len(left),
                self._overflow.path if self._overflow else self.spill_dir,
            )
        for write in left:
            _settle(write, True)
        for spill in self._imported:
            spill.release(delete=spill.loaded and spill.outstanding == 0)
        self._imported.clear()
        if self._overflow is not None:
            self._overflow.release(delete=False)
            self._overflow = None
        await self.inner.close()

    # -- the writes a call makes

    async def save(self, record: CallRecord, delivery: WebhookDelivery | None = None) -> bool:
        if not record.call_sid:
            raise ValueError("a call record needs a call_sid")
        return await self._submit(_Write("save", record.call_sid, record=record, delivery=delivery))

    async def record_status(self, call_sid: str, status: str, duration_s: int | None) -> None:
        if not call_sid or not status:
            raise ValueError("a call status needs a call_sid and a status")
        await self._submit(_Write("status", call_sid, status=status, duration_s=duration_s))

    async def record_recording(self, call_sid: str, update: Recording) -> None:
        if not call_sid:
            raise ValueError("a recording status needs a call_sid")
        await self._submit(_Write("recording", call_sid, recording=update))

    async def _submit(self, write: _Write) -> bool:
        """Queue `write`; its outcome if the database gives it within ACK_WAIT_S, else
        True (queued, or spilled: it will be written)."""
        if self._closed:
            raise RuntimeError("call store is closed")
        if self.queued >= self.max_queued:
            await self._spill([write])
            return True
        write.outcome = asyncio.get_running_loop().create_future()
        self._enqueue(write)
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(write.outcome), self.ack_wait_s)
        return True

    def _enqueue(self, write: _Write, front: bool = False) -> None:
        if front:
            self._queue.appendleft(write)
        else:
            self._queue.append(write)
        if write.record is not None:
            self._queued_records.setdefault(write.call_sid, write.record)
        self._drained.clear()
        if self.queued >= self.max_queued:
            self._room.clear()
        self._wake.set()

    # -- the writer

    async def _write_queued(self) -> None:
        while True:
            if not self._queue or not self._opened.is_set():
                if not self._queue:
                    self._drained.set()
                    self._after_drain()
                self._wake.clear()
                await self._wake.wait()
                continue
            # While the database is away, one write probes it; once back, several at once.
            width = 1 if self._failures.since is not None else self._concurrency
            batch = [self._queue.popleft() for _ in range(min(width, len(self._queue)))]
            self._in_flight.update(batch)
            results = await asyncio.gather(*(self._attempt(w) for w in batch))
            self._in_flight.difference_update(batch)
            retry = [w for w, written in zip(batch, results, strict=True) if not written]
            for write in reversed(retry):
                self._enqueue(write, front=True)
            if self.queued < self.max_queued:
                self._room.set()
            if retry:
                await self._back_off()

    async def _attempt(self, write: _Write) -> bool:
        """One try at `write`: whether it is done with (written, or refused for good)."""
        started = time.monotonic()
        write.tries += 1
        try:
            result = await write.apply(self.inner)
        except StoreUnavailable as exc:
            self._failed(exc, "the call records are unreachable")
            if self._observer is not None:
                self._observer.record_write_failed()
            return False
        except Exception as exc:
            # The database refuses this write itself (not an outage): retrying cannot
            # change that, and it must not hold up the others. Kept on disk, not lost, in
            # a file of its own that no start imports (it would be refused again).
            refused = self.spill_dir / f"{REFUSED_PREFIX}{self._replica}{SPILL_SUFFIX}"
            log.error(
                "call records: the database refused the %s of call %s (%s); kept in %s",
                write.kind,
                write.call_sid,
                exc,
                refused,
            )
            try:
                await asyncio.to_thread(_append_lines, refused, [write.to_json()])
            except OSError as error:
                log.error(
                    "call records: LOST the %s of call %s: %s", write.kind, write.call_sid, error
                )
            self._done(write, True)
            return True
        if self._observer is not None:
            self._observer.record_written(time.monotonic() - started)
        self._recovered()
        # A retry finding the record finds its own earlier try, which did commit after all;
        # an import finds what it wrote before a crash.
        self._done(write, result or write.tries > 1 or write.origin is not None)
        if write.kind == "save" and self.on_saved is not None:
            self.on_saved()
        return True

    def _forget_queued(self, write: _Write) -> None:
        if write.record is not None and self._queued_records.get(write.call_sid) is write.record:
            del self._queued_records[write.call_sid]

    def _done(self, write: _Write, result: bool) -> None:
        self._forget_queued(write)
        _settle(write, result)
        origin = write.origin
        if origin is not None:
            origin.outstanding -= 1
            if origin.loaded and origin.outstanding == 0:
                self._imported.remove(origin)
                origin.release(delete=True)
                log.info("call records: imported %s", origin.path.name)

    def _failed(self, exc: BaseException, doing: str) -> None:
        f = self._failures
        now = time.monotonic()
        f.count += 1
        f.last_error = str(exc)
        if f.since is None:
            f.since = now
        if now - f.said_at >= LOG_EVERY_S:
            f.said_at = now
            log.error(
                "%s (%s): calls go on; %d write(s) wait in memory (at most %d, then on "
                "disk in %s) and are written once it is back",
                doing,
                exc,
                self.queued,
                self.max_queued,
                self.spill_dir,
            )

    def _recovered(self) -> None:
        f = self._failures
        if f.since is not None:
            log.warning(
                "call records are reachable again after %.0f s (%d failed attempts); "
                "writing the %d queued",
                time.monotonic() - f.since,
                f.count,
                self.queued,
            )
        self._failures = _Failures()

    async def _back_off(self) -> None:
        f = self._failures
        delay = f.delay_s * random.uniform(0.8, 1.2)  # replicas out of step with each other
        f.delay_s = min(RETRY_MAX_S, f.delay_s * 2)
        await asyncio.sleep(delay)

    def _after_drain(self) -> None:
        """The queue is empty with the database taking writes: what overflowed to disk
        meanwhile can go in now."""
        if self._overflow is not None and self._failures.since is None and self._opened.is_set():
            self._overflow.release(delete=False)
            self._overflow = None
            self._start_import()

    # -- the spill files

    async def _spill(self, writes: Sequence[_Write]) -> None:
        async with self._spill_lock:
            try:
                await asyncio.to_thread(self._append_to_spill_file, writes)
            except OSError as exc:
                log.error(
                    "call records: LOST %d write(s) (calls %s): the database is away and "
                    "the spill directory %s cannot be written (%s)",
                    len(writes),
                    ", ".join(sorted({w.call_sid for w in writes})),
                    self.spill_dir,
                    exc,
                )
                return
        if self._observer is not None:
            self._observer.records_spilled(len(writes))
        for write in writes:
            if (
                write.record is not None
                and self._queued_records.get(write.call_sid) is write.record
            ):
                del self._queued_records[write.call_sid]

    def _append_to_spill_file(self, writes: Sequence[_Write]) -> None:
        if self._overflow is None:
            self.spill_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            name = f"{SPILL_PREFIX}{self._replica}-{os.getpid()}-{stamp}-{os.urandom(3).hex()}"
            path = self.spill_dir / f"{name}{SPILL_SUFFIX}"
            # The records hold callers' numbers and words: this user's only.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o600)
            opened = os.fdopen(fd, "a", encoding="utf-8")
            fcntl.flock(opened, fcntl.LOCK_EX)  # nobody imports it while it is written
            self._overflow = _SpillFile(path, opened)
        handle = self._overflow.handle
        handle.write("".join(json.dumps(w.to_json(), ensure_ascii=False) + "\n" for w in writes))
        handle.flush()
        os.fsync(handle.fileno())

    async def imports_done(self) -> None:
        """Until the spill files found so far are imported, or left to the process that
        holds them."""
        while self._importing is not None and not self._importing.done():
            await asyncio.shield(self._importing)

    def _start_import(self) -> None:
        if self._importing is not None and not self._importing.done():
            self._import_again = True
            return
        self._importing = asyncio.create_task(self._import_spilled(), name="call-store-import")
        self._keep(self._importing)

    async def _import_spilled(self) -> None:
        while True:
            self._import_again = False
            for path in await asyncio.to_thread(self._spill_files):
                spill = await asyncio.to_thread(_claim, path)
                if spill is None:
                    continue  # another process holds it (writing, or importing it)
                self._imported.append(spill)
                await self._load(spill)
            if not self._import_again:
                return

    def _spill_files(self) -> list[Path]:
        own = self._overflow.path if self._overflow is not None else None
        try:
            found = sorted(self.spill_dir.glob(f"{SPILL_PREFIX}*{SPILL_SUFFIX}"))
        except OSError:
            return []
        held = {s.path for s in self._imported}
        return [p for p in found if p != own and p not in held]

    async def _load(self, spill: _SpillFile) -> None:
        count = bad = number = 0
        while lines := await asyncio.to_thread(_read_lines, spill.handle, IMPORT_CHUNK):
            for line in lines:
                number += 1
                if not line.strip():
                    continue
                write = self._imported_write(spill, number, line)
                if write is None:
                    bad += 1
                    continue
                count += 1
                await self._room.wait()
                self._enqueue(write)
        spill.loaded = True
        log.warning(
            "call records: importing %d write(s) from %s%s",
            count,
            spill.path.name,
            f" ({bad} unreadable line(s) skipped)" if bad else "",
        )
        if spill.outstanding == 0:
            self._imported.remove(spill)
            spill.release(delete=True)

    @staticmethod
    def _imported_write(spill: _SpillFile, number: int, line: str) -> _Write | None:
        try:
            write = _Write.from_json(json.loads(line))
        except (ValueError, KeyError, TypeError) as exc:  # (a line cut short by a crash)
            log.error(
                "call records: %s line %d is not a write (%s): skipped",
                spill.path.name,
                number,
                exc,
            )
            return None
        write.origin = spill
        spill.outstanding += 1
        return write

    # -- reads, straight to the store (has and get see the queue too)

    async def has(self, call_sid: str) -> bool:
        if call_sid in self._queued_records:
            return True
        return await self.inner.has(call_sid)

    async def get(self, call_sid: str) -> CallRecord | None:
        queued = self._queued_records.get(call_sid)
        if queued is not None:
            return queued
        return await self.inner.get(call_sid)

    async def search(
        self, text: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[CallListing]:
        return await self.inner.search(text, limit, offset)

    async def due_deliveries(self, now: float, limit: int) -> list[WebhookDelivery]:
        return await self.inner.due_deliveries(now, limit)

    async def next_delivery_at(self) -> float | None:
        return await self.inner.next_delivery_at()

    async def pending_deliveries(self) -> int:
        return await self.inner.pending_deliveries()

    async def delivery_done(self, message_id: str) -> None:
        await self.inner.delivery_done(message_id)

    async def delivery_failed(
        self, message_id: str, attempts: int, next_attempt_at: float, error: str
    ) -> None:
        await self.inner.delivery_failed(message_id, attempts, next_attempt_at, error)

    async def delete(self, call_sid: str) -> CallRecord | None:
        return await self.inner.delete(call_sid)

    async def expire_recordings(self, before: float) -> list[tuple[str, Recording]]:
        return await self.inner.expire_recordings(before)

    async def publish_live_calls(
        self, replica: str, calls: Sequence[LiveCallRow], now: float, stale_before: float
    ) -> None:
        await self.inner.publish_live_calls(replica, calls, now, stale_before)

    async def live_calls(self, fresh_since: float) -> list[LiveCallRow]:
        return await self.inner.live_calls(fresh_since)

    async def live_replica(self, call_sid: str, fresh_since: float) -> str | None:
        return await self.inner.live_replica(call_sid, fresh_since)


def _settle(write: _Write, result: bool) -> None:
    if write.outcome is not None and not write.outcome.done():
        write.outcome.set_result(result)


def _append_lines(path: Path, entries: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
        handle.flush()
        os.fsync(handle.fileno())


def _read_lines(handle: IO[str], count: int) -> list[str]:
    return list(itertools.islice(handle, count))


def _claim(path: Path) -> _SpillFile | None:
    """Open and lock a spill file to import it; None if another process holds it."""
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115 (held until imported)
    except OSError:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    if not path.exists():  # imported and deleted by its holder just before
        handle.close()
        return None
    return _SpillFile(path, handle)
