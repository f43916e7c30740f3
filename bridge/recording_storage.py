"""Where the bridge's recordings are (RECORDING=bridge): files in RECORDINGS_DIR, or, with
RECORDINGS_URL, objects in an S3-compatible bucket, each call's timeline beside its audio.

A record names its recording (`Recording.url`): a plain file name is a file in
RECORDINGS_DIR (every record from before object storage), an s3:// address an object. Only
names of a recording's format, in RECORDINGS_DIR or under RECORDINGS_URL's bucket and
prefix, are ever followed: never a path or another bucket, whatever a record holds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

import orjson

from bridge.call_recording import (
    SPOOL_SUFFIX,
    CallRecorder,
    RecordingFormat,
    format_of,
    media_type_of,
    recording_file,
)
from bridge.object_storage import (
    ABANDONED_AFTER_S,
    UPLOAD_DEADLINE_S,
    Bucket,
    described,
    in_object_io,
    parse_recordings_url,
)

if TYPE_CHECKING:
    from bridge.records.model import CallRecord, Recording
    from bridge.records.store import CallStore
    from bridge.settings import Settings

log = logging.getLogger("bridge.recording_storage")

TIMELINE_SUFFIX = ".timeline.json"  # a call's timeline beside its audio: CallSid.timeline.json


class StoredRecording(Protocol):
    """A recording the bridge made, wherever it is kept. Its methods block (disk, network):
    run them off the event loop."""

    @property
    def name(self) -> str:
        """Its file name, CallSid and its format's suffix."""

    @property
    def media_type(self) -> str: ...

    def version(self) -> tuple[str, int, str] | None:
        """Where it is, its length, and what changes when it is written again; None if it
        is not there."""

    def open(self) -> Path | BinaryIO:
        """Something libsndfile reads it from."""


@dataclass(frozen=True, slots=True)
class LocalRecording:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def media_type(self) -> str:
        return media_type_of(self.path)

    def version(self) -> tuple[str, int, str] | None:
        try:
            stat = self.path.stat()
        except OSError:  # gone, or not ours to read: no recording to offer
            return None
        if not self.path.is_file():
            return None
        return str(self.path), stat.st_size, str(stat.st_mtime_ns)

    def open(self) -> Path:
        return self.path


@dataclass(frozen=True, slots=True)
class ObjectRecording:
    bucket: Bucket
    name: str

    @property
    def media_type(self) -> str:
        return media_type_of(Path(self.name))

    @property
    def url(self) -> str:
        return self.bucket.url_of(self.name)

    def version(self) -> tuple[str, int, str] | None:
        found = self.bucket.size_and_version(self.name)
        return None if found is None else (self.url, found[0], found[1])

    def open(self) -> BinaryIO:
        return self.bucket.reader(self.name)


def timeline_name(recording_name: str) -> str:
    return recording_name.split(".", 1)[0] + TIMELINE_SUFFIX


def timeline_document(record: CallRecord) -> bytes:
    """A call's timeline as JSON: {call_sid, started_at, dropped, timeline: [{at, moment,
    detail}]} (`at` in s since the stream started), as the console offers it and as it is
    kept beside the recording in object storage."""
    from bridge.records.rows import timeline_rows

    return orjson.dumps(
        {
            "call_sid": record.call_sid,
            "started_at": record.started_at,
            "dropped": record.timeline_dropped,
            "timeline": timeline_rows(record.timeline),
        }
    )


class RecordingStorage:
    """The bridge's recordings: the local directory (files, and the spools of recordings
    being uploaded), and the bucket when RECORDINGS_URL names one."""

    def __init__(self, directory: Path, bucket: Bucket | None = None) -> None:
        self.directory = directory
        self.bucket = bucket

    @classmethod
    def from_settings(cls, settings: Settings) -> RecordingStorage:
        bucket = None
        if settings.recordings_url:
            bucket = Bucket(
                parse_recordings_url(settings.recordings_url),
                endpoint=settings.recordings_s3_endpoint,
                region=settings.recordings_s3_region,
                path_style=settings.recordings_s3_path_style,
            )
        return cls(Path(settings.recordings_path), bucket)

    @property
    def where(self) -> str:
        """Where new recordings go, for the log (never a credential: none is in either)."""
        if self.bucket is None:
            return str(self.directory)
        endpoint = f" at {self.bucket.endpoint}" if self.bucket.endpoint else ""
        return f"{self.bucket.url}{endpoint}"

    def recorder(
        self, call_sid: str, recording_format: RecordingFormat, started_at: float
    ) -> CallRecorder:
        name = "".join(c for c in call_sid if c.isascii() and c.isalnum()) or "call"
        path = self.directory / f"{name}{recording_format.suffix}"
        return CallRecorder(path, started_at, self.bucket)

    def find(self, recording: Recording | None) -> LocalRecording | ObjectRecording | None:
        """Where a record's recording by the bridge is, if it is anywhere the bridge keeps
        recordings."""
        if recording is None or recording.kind != "bridge" or not recording.url:
            return None
        if recording.url.startswith("s3://"):
            if self.bucket is None:
                return None
            name = self.bucket.name_in(recording.url)
            if name is None or format_of(Path(name)) is None:
                return None
            return ObjectRecording(self.bucket, name)
        path = recording_file(self.directory, recording)
        return LocalRecording(path) if path is not None else None

    async def check(self) -> str | None:
        """Why recordings cannot be stored (the bucket does not answer), or None."""
        if self.bucket is None:
            return None
        try:
            await asyncio.wait_for(in_object_io(self.bucket.check), UPLOAD_DEADLINE_S)
        except TimeoutError:
            return f"no answer within {UPLOAD_DEADLINE_S:g} s"
        except Exception as exc:
            return described(exc)
        return None

    async def keep_timeline(self, recording: Recording, document: bytes) -> None:
        """Put the call's timeline beside its recording in the bucket (a file's timeline
        stays in the call's record alone)."""
        found = self.find(recording)
        if not isinstance(found, ObjectRecording):
            return
        name = timeline_name(found.name)
        try:
            await asyncio.wait_for(
                in_object_io(found.bucket.put, name, document, "application/json"),
                UPLOAD_DEADLINE_S,
            )
        except Exception as exc:  # the audio is there: the timeline is in the record too
            why = "no answer in time" if isinstance(exc, TimeoutError) else described(exc)
            log.error("could not store the timeline %s: %s", found.bucket.url_of(name), why)

    async def delete(self, recording: Recording | None) -> None:
        """Delete a recording (and, in the bucket, its timeline). A failure is logged."""
        found = self.find(recording)
        if found is None:
            return
        try:
            if isinstance(found, ObjectRecording):
                names = [found.name, timeline_name(found.name)]
                await asyncio.wait_for(in_object_io(found.bucket.delete, names), UPLOAD_DEADLINE_S)
            else:
                await in_object_io(lambda: found.path.unlink(missing_ok=True))
        except Exception as exc:
            why = "no answer in time" if isinstance(exc, TimeoutError) else described(exc)
            log.error("could not delete the recording %s: %s", recording and recording.url, why)

    async def purge(self, store: CallStore, older_than_days: float) -> int:
        """One pass of RECORDING_RETENTION_DAYS: recordings (their files and objects too)
        and timelines of calls older than that are deleted. How many recordings went."""
        expired = await store.expire_recordings(time.time() - older_than_days * 86400)
        for _, recording in expired:
            await self.delete(recording)
        if expired:
            log.info("deleted %d recordings older than %g days", len(expired), older_than_days)
        return len(expired)

    async def tidy(self, idle_s: float = ABANDONED_AFTER_S) -> int:
        """What bridges that stopped mid-call left (at start, then hourly): their unfinished
        uploads made objects (all but the last minute of each call) and their spools
        deleted. How many uploads were completed."""
        if self.bucket is None:
            return 0
        await in_object_io(_remove_stale_spools, self.directory, idle_s)
        try:
            return int(
                await asyncio.wait_for(
                    in_object_io(self.bucket.complete_abandoned, _is_recording_name, idle_s),
                    UPLOAD_DEADLINE_S * 4,
                )
            )
        except Exception as exc:
            why = "no answer in time" if isinstance(exc, TimeoutError) else described(exc)
            log.error("could not look for unfinished uploads in %s: %s", self.bucket.url, why)
            return 0


def _is_recording_name(name: str) -> bool:
    return not name.startswith(".") and format_of(Path(name)) is not None


def _remove_stale_spools(directory: Path, idle_s: float) -> None:
    """Spools no recording has written to for `idle_s`: a stopped bridge's."""
    try:
        spools = list(directory.glob(f"*{SPOOL_SUFFIX}"))
    except OSError:
        return
    now = time.time()
    for spool in spools:
        try:
            if now - spool.stat().st_mtime >= idle_s:
                os.unlink(spool)
        except OSError:
            continue
