"""Recordings in object storage (RECORDINGS_URL=s3://bucket/prefix): any service that speaks
S3's protocol (AWS S3, MinIO, Cloudflare R2, Google Cloud Storage's XML API).

The client is boto3: the AWS SDK, kept by AWS, whose S3 client every S3-compatible service
tests against, with the standard credential chain (environment, shared files, web identity,
instance and container roles). It is synchronous, which fits: a recording's bytes are
written by the recorder's own thread already (`bridge.call_recording`), so uploads run
there, one call's at a time and off every call's audio path, and the console's reads run
in a small pool of their own. Every request has a connect and a read timeout and a bounded
number of attempts; on top of that each caller sets its own deadline.

A recording is written to a local spool and uploaded in parts as it grows (`UploadingFile`):
the first part and the part in progress stay on disk (10 MiB a call at most), each part is
uploaded once full (5 MiB, S3's least but for the last), and the part in progress is uploaded
again, under its number, at least every `PART_EVERY_S`: so a bridge that dies mid-call
leaves the call's audio in the bucket but for its last minute, as an unfinished multipart
upload that `complete_abandoned` (run by every bridge at start and hourly) makes an object.
The header a format writes at its close (WAV's lengths, FLAC's STREAMINFO) lies in the first
part, which the close uploads again before completing the object; a WAV's first header says
"to the end of the file", so what a dead bridge left reads whole too.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

log = logging.getLogger("bridge.object_storage")

MIB = 1024 * 1024
PART_SIZE = 5 * MIB  # S3's least part size (the last part may be smaller)
# The part in progress is uploaded (again, under its number) at least this often: what a
# bridge that dies mid-call loses at most (a full part is uploaded as soon as it is full).
PART_EVERY_S = 60.0
# An upload of a part, or the object's completion, not done within this: the store is
# failing (the recording gives up; the call never notices). A 5 MiB part needs ~4 s at 10 Mbit/s.
UPLOAD_DEADLINE_S = 30.0
# What one request may take before botocore gives up on it (it tries ATTEMPTS times).
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 10.0
ATTEMPTS = 3
# Parts uploaded at once by the whole process: each holds its part in memory while it goes.
_UPLOADING = threading.BoundedSemaphore(8)
# A multipart upload with no part uploaded for this long belongs to a bridge that stopped
# mid-call (a live call's part in progress goes up every PART_EVERY_S).
ABANDONED_AFTER_S = 15 * 60.0
# The console's reads (a recording streamed, a waveform read) and the small writes at a
# call's end: their own threads, so a slow store never starves the event loop's default pool.
_OBJECT_IO = ThreadPoolExecutor(max_workers=4, thread_name_prefix="object-storage")
READ_BLOCK = 2 * MIB  # a ranged read's size, for libsndfile's reads of an object
STREAM_CHUNK = 64 * 1024  # what a streamed recording is sent in

_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]")
_REGION = re.compile(r"[a-z0-9-]{1,40}")


@dataclass(frozen=True, slots=True)
class BucketPlace:
    """Where RECORDINGS_URL puts recordings: a bucket, and a prefix ('' or ending in /)."""

    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def parse_recordings_url(url: str) -> BucketPlace:
    """s3://bucket or s3://bucket/some/prefix; ValueError saying what is wrong."""
    parts = urlsplit(url.strip())
    if parts.scheme != "s3":
        raise ValueError("must be s3://bucket/prefix (any S3-compatible service)")
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise ValueError(
            "must be s3://bucket/prefix alone: credentials come from the AWS credential "
            "chain (AWS_ACCESS_KEY_ID, a role), never the URL"
        )
    bucket = parts.netloc
    if not _BUCKET.fullmatch(bucket):
        raise ValueError(f"{bucket!r} is not a bucket name (3-63 of a-z 0-9 . - _)")
    segments = [s for s in parts.path.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise ValueError("the prefix must not hold . or .. segments")
    return BucketPlace(bucket, "".join(f"{s}/" for s in segments))


def check_endpoint(url: str) -> str:
    """RECORDINGS_S3_ENDPOINT: an http(s) URL with nothing that may carry a credential."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(
            "must be an http(s) URL such as https://<account>.r2.cloudflarestorage.com"
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("must have no user:password@, query or fragment")
    return url.rstrip("/")


def check_region(region: str) -> str:
    if not _REGION.fullmatch(region):
        raise ValueError("must be a region name such as eu-west-1 (auto for R2)")
    return region


def described(exc: BaseException) -> str:
    """An error of the store, in one line: S3's own code and message where it gave one.
    (Neither botocore's errors nor S3's answers carry a secret key; a presigned URL is never
    made here.)"""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        code, message = error.get("Code"), error.get("Message")
        if code:
            return f"{code}: {message}" if message else str(code)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Bucket:
    """The recordings' bucket and prefix, and the S3 client that reaches them."""

    def __init__(
        self,
        place: BucketPlace,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        path_style: bool = False,
    ) -> None:
        import boto3  # (only when recordings go to object storage: it takes a while to load)
        from botocore.config import Config

        self.place = place
        self.endpoint = endpoint
        config = Config(
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
            retries={"max_attempts": ATTEMPTS, "mode": "standard"},
            # Path-style (endpoint/bucket/key) for MinIO and most self-hosted stores;
            # virtual-hosted (bucket.endpoint/key) otherwise, as AWS wants.
            s3={"addressing_style": "path" if path_style else "auto"},
            # Checksums only where S3 requires them: several S3-compatible services (MinIO
            # versions, Backblaze B2, ...) refuse the x-amz-checksum headers botocore sends
            # by default since 1.36.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=32,
        )
        # A session of its own: boto3's default one is shared, and not thread-safe to build.
        self.client: S3Client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name=region, config=config
        )

    @property
    def url(self) -> str:
        return self.place.url

    def key(self, name: str) -> str:
        return self.place.prefix + name

    def url_of(self, name: str) -> str:
        """How a record names an object: s3://bucket/prefix/name."""
        return f"s3://{self.place.bucket}/{self.key(name)}"

    def name_in(self, url: str) -> str | None:
        """The object's name, if `url` is one of this bucket and prefix's (else None: a
        record's address is never followed elsewhere)."""
        base = f"s3://{self.place.bucket}/{self.place.prefix}"
        if not url.startswith(base):
            return None
        name = url[len(base) :]
        return name if name and "/" not in name and not name.startswith(".") else None

    # --- whole objects ---------------------------------------------------------------------

    def check(self) -> None:
        """The bucket answers, with the credentials found (raises why not)."""
        self.client.head_bucket(Bucket=self.place.bucket)

    def size_and_version(self, name: str) -> tuple[int, str] | None:
        """The object's length and ETag; None if there is none."""
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.place.bucket, Key=self.key(name))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return int(head["ContentLength"]), str(head.get("ETag", ""))

    def get_range(self, name: str, start: int, end: int) -> Any:
        """Bytes `start` to `end` (inclusive) of the object: a stream to read."""
        answer = self.client.get_object(
            Bucket=self.place.bucket, Key=self.key(name), Range=f"bytes={start}-{end}"
        )
        return answer["Body"]

    def put(self, name: str, body: bytes, content_type: str) -> None:
        self.client.put_object(
            Bucket=self.place.bucket, Key=self.key(name), Body=body, ContentType=content_type
        )

    def delete(self, names: list[str]) -> None:
        # One request an object: the batch delete (DeleteObjects) must carry a checksum
        # header, which several S3-compatible services refuse or want as Content-MD5.
        for name in names:
            self.client.delete_object(Bucket=self.place.bucket, Key=self.key(name))

    def reader(self, name: str) -> io.BufferedReader:
        """The object as a seekable file for libsndfile (read in READ_BLOCK ranges)."""
        found = self.size_and_version(name)
        if found is None:
            raise FileNotFoundError(f"no object {self.url_of(name)}")
        return io.BufferedReader(_RangedObject(self, name, found[0]), READ_BLOCK)

    # --- multipart -------------------------------------------------------------------------

    def start_upload(self, name: str, content_type: str) -> str:
        answer = self.client.create_multipart_upload(
            Bucket=self.place.bucket, Key=self.key(name), ContentType=content_type
        )
        return answer["UploadId"]

    def upload_part(self, name: str, upload_id: str, number: int, data: bytes) -> str:
        with _UPLOADING:
            answer = self.client.upload_part(
                Bucket=self.place.bucket,
                Key=self.key(name),
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
            )
        return answer["ETag"]

    def complete_upload(self, name: str, upload_id: str, etags: dict[int, str]) -> None:
        self.client.complete_multipart_upload(
            Bucket=self.place.bucket,
            Key=self.key(name),
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]},
        )

    def abort_upload(self, name: str, upload_id: str) -> None:
        self.client.abort_multipart_upload(
            Bucket=self.place.bucket, Key=self.key(name), UploadId=upload_id
        )

    def complete_abandoned(
        self, is_recording: Callable[[str], bool], idle_s: float = ABANDONED_AFTER_S
    ) -> int:
        """Make objects of the uploads that bridges left unfinished (they stopped mid-call):
        every part they uploaded, so a call loses at most its last minute. Uploads with no
        part are aborted. Only uploads of names `is_recording` accepts are touched (the
        prefix may be shared). How many were completed."""
        completed = 0
        now = time.time()
        for upload in self._uploads():
            key, upload_id = upload["Key"], upload["UploadId"]
            name = key[len(self.place.prefix) :]
            if "/" in name or not is_recording(name):
                continue
            parts = self._parts(key, upload_id)
            last = max([p["LastModified"] for p in parts] + [upload["Initiated"]])
            if now - _unix(last) < idle_s:
                continue  # a live call's, most likely: it uploads a part every minute
            try:
                if parts:
                    etags = {int(p["PartNumber"]): str(p["ETag"]) for p in parts}
                    self.complete_upload(name, upload_id, etags)
                    completed += 1
                    log.warning(
                        "completed %s, left unfinished by a bridge that stopped mid-call "
                        "(its last part is lost)",
                        self.url_of(name),
                    )
                else:
                    self.abort_upload(name, upload_id)
            except Exception as exc:  # another bridge did it first, or the store is away
                log.info("could not finish the upload of %s: %s", self.url_of(name), described(exc))
        return completed

    def _uploads(self) -> Iterator[dict[str, Any]]:
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.place.bucket, Prefix=self.place.prefix
        )
        for page in pages:
            yield from page.get("Uploads", [])  # type: ignore[misc]

    def _parts(self, key: str, upload_id: str) -> list[dict[str, Any]]:
        pages = self.client.get_paginator("list_parts").paginate(
            Bucket=self.place.bucket, Key=key, UploadId=upload_id
        )
        return [dict(part) for page in pages for part in page.get("Parts", [])]


def _unix(moment: datetime | float) -> float:
    return moment.timestamp() if isinstance(moment, datetime) else float(moment)


async def in_object_io(work: Callable[..., Any], *args: object) -> Any:
    """Run a blocking call of the store in its own threads (not the event loop's pool)."""
    return await asyncio.get_running_loop().run_in_executor(_OBJECT_IO, work, *args)


class _RangedObject(io.RawIOBase):
    """An object read by ranged GETs where libsndfile seeks and reads."""

    def __init__(self, bucket: Bucket, name: str, size: int) -> None:
        super().__init__()
        self._bucket, self._name, self._size = bucket, name, size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._size - self._position)
        if want <= 0:
            return 0
        body = self._bucket.get_range(self._name, self._position, self._position + want - 1)
        try:
            data = body.read()
        finally:
            body.close()
        view[: len(data)] = data
        self._position += len(data)
        return len(data)


class UploadingFile:
    """The file a recording's writer (the stdlib's wave, or libsndfile) writes, uploaded to
    the bucket as it grows. Its bytes go to a local spool that holds the first part and the
    part in progress only: a middle part, once uploaded, is never written again (no format
    here rewrites anything but its header, in the first part; a write there is refused).

    Offsets: bytes [0, PART_SIZE) are the spool's first part; the part in progress, which
    starts at `_start`, sits right after it. Not thread-safe: the recorder's thread alone
    uses it."""

    def __init__(
        self,
        bucket: Bucket,
        name: str,
        content_type: str,
        spool: Path,
        *,
        part_size: int = PART_SIZE,
        part_every_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bucket, self._name, self._type = bucket, name, content_type
        self._part_size = part_size
        self._part_every_s = PART_EVERY_S if part_every_s is None else part_every_s
        self._clock = clock
        spool.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # What callers said is personal data: readable by this user only, from the start.
        fd = os.open(spool, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._spool = os.fdopen(fd, "r+b")
        self._spool_path = spool
        self._position = 0  # where the next write goes, in the recording
        self._length = 0  # the recording's length so far
        self._start = 0  # where the part in progress begins (a multiple of the part size)
        self._upload_id: str | None = None
        self._etags: dict[int, str] = {}
        self._sent_at = clock()  # when the part in progress was last uploaded (or begun)
        self._unsent = False  # the part in progress has bytes not uploaded yet
        self._head_unsent = False  # the first part was written since it was uploaded
        self._done = False  # closed or abandoned: what is written now is dropped

    # --- what the writers call -------------------------------------------------------------

    def write(self, data: bytes) -> int:
        data = bytes(data)
        if self._done:
            return len(data)  # (a writer let go of after a failure, closing itself)
        end = self._position + len(data)
        if self._position < self._start and end > self._part_size and self._start > self._part_size:
            raise OSError(f"{self._name}: rewrote bytes already uploaded (offset {self._position})")
        if self._position < self._part_size and self._start > 0:
            self._head_unsent = True  # (the header, at the close)
        self._spool.seek(self._spooled_at(self._position))
        self._spool.write(data)
        self._position = end
        if end > self._start:
            self._unsent = True
        self._length = max(self._length, end)
        self._ship()
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._length}[whence]
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        """(The upload is what keeps it: see `_ship`.)"""

    def close(self) -> None:
        """The recording is complete: upload what is not, and make the object."""
        if self._done:
            return
        self._done = True
        try:
            self._finish()
        except BaseException:
            # An upload left open would be completed by the hourly tidy into an object
            # for a recording its record calls failed: it goes instead.
            if self._upload_id is not None:
                with contextlib.suppress(Exception):
                    self._bucket.abort_upload(self._name, self._upload_id)
            raise
        finally:
            self._drop_spool()

    def abandon(self) -> None:
        """The recording failed: drop what was uploaded (best effort: the store may be the
        reason), and the spool. Whatever is written after is dropped."""
        self._done = True
        try:
            if self._upload_id is not None:
                with contextlib.suppress(Exception):
                    self._bucket.abort_upload(self._name, self._upload_id)
        finally:
            self._drop_spool()

    @property
    def length(self) -> int:
        return self._length

    # --- the parts -------------------------------------------------------------------------

    def _spooled_at(self, offset: int) -> int:
        if offset < self._part_size:
            return offset
        return self._part_size + (offset - self._start)

    def _ship(self) -> None:
        """Upload each part that is full; and the part in progress if its last upload is
        older than the bound on what a dying bridge may lose."""
        while self._length - self._start >= self._part_size:
            self._send(self._start, self._part_size)
            self._next_part()
        if self._unsent and self._clock() - self._sent_at >= self._part_every_s:
            self._send(self._start, self._length - self._start)

    def _send(self, start: int, size: int) -> None:
        self._spool.seek(self._spooled_at(start))
        data = self._spool.read(size)
        if self._upload_id is None:
            self._upload_id = self._bucket.start_upload(self._name, self._type)
        number = start // self._part_size + 1
        self._etags[number] = self._bucket.upload_part(self._name, self._upload_id, number, data)
        if start == self._start:
            self._unsent = False
            self._sent_at = self._clock()
        if start == 0:
            self._head_unsent = False

    def _next_part(self) -> None:
        """The part in progress is uploaded and full: the next one begins. Its bytes so far
        move to where the part in progress is spooled (the first part stays for the close)."""
        old_start = self._start
        self._start += self._part_size
        if old_start > 0:  # (from the first part to the second, nothing moves)
            self._spool.seek(self._part_size + self._part_size)
            rest = self._spool.read()
            self._spool.seek(self._part_size)
            self._spool.write(rest)
            self._spool.truncate(self._part_size + len(rest))
        self._unsent = self._length > self._start
        self._sent_at = self._clock()

    def _finish(self) -> None:
        if self._upload_id is None:  # never uploaded a part: the object in one request
            self._spool.seek(0)
            self._bucket.put(self._name, self._spool.read(), self._type)
            return
        if self._length > self._start and self._unsent:
            self._send(self._start, self._length - self._start)  # the last part
        elif self._length == self._start:
            self._etags.pop(self._start // self._part_size + 1, None)  # (no last part)
        if self._head_unsent and self._start > 0:
            self._send(0, self._part_size)  # the first part again, with the final header
        self._bucket.complete_upload(self._name, self._upload_id, self._etags)

    def _drop_spool(self) -> None:
        with contextlib.suppress(OSError):
            self._spool.close()
        with contextlib.suppress(OSError):
            self._spool_path.unlink(missing_ok=True)
