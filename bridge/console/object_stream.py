"""A recording in object storage streamed to the console's player through the bridge, with
range requests (the player seeks by asking for the bytes from a point on), as a file's would
be: the console's Content-Security-Policy keeps media to its own origin, and the bucket
never needs to be reachable from the operator's browser."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import Response
from fastapi.responses import StreamingResponse

from bridge.object_storage import STREAM_CHUNK, described, in_object_io
from bridge.recording_storage import ObjectRecording

log = logging.getLogger("bridge.console")

READ_DEADLINE_S = 10.0  # the object's first bytes (each later read: botocore's read timeout)
_SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeNotSatisfiable(Exception):
    pass


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The bytes a Range header asks for, first and last (inclusive); None for the whole
    object (no header, one that is not a single byte range: several ranges, which a server
    may answer whole, or a malformed one, which it ignores). Raises RangeNotSatisfiable
    when the range lies past the end."""
    if not header:
        return None
    match = _SINGLE_RANGE.fullmatch(header.strip().replace(" ", ""))
    if match is None or not (match[1] or match[2]):
        return None
    if not match[1]:  # the last N bytes
        count = int(match[2])
        if count == 0:
            raise RangeNotSatisfiable
        return max(0, size - count), size - 1
    start = int(match[1])
    end = int(match[2]) if match[2] else size - 1
    if match[2] and end < start:
        return None  # (malformed: ignored)
    if start >= size:
        raise RangeNotSatisfiable
    return start, min(end, size - 1)


async def object_response(
    found: ObjectRecording,
    size: int,
    etag: str,
    range_header: str | None,
    headers: Mapping[str, str],
) -> Response:
    """The object, or the range of it asked for (206), streamed as the store sends it."""
    common = {
        **headers,
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'inline; filename="{found.name}"',
        "ETag": etag,
    }
    try:
        span = byte_range(range_header, size)
    except RangeNotSatisfiable:
        return Response(status_code=416, headers={**common, "Content-Range": f"bytes */{size}"})
    if size == 0:
        return Response(b"", media_type=found.media_type, headers=common)
    start, end = span if span is not None else (0, size - 1)
    body = await asyncio.wait_for(
        in_object_io(found.bucket.get_range, found.name, start, end), READ_DEADLINE_S
    )
    length = end - start + 1
    if span is not None:
        common["Content-Range"] = f"bytes {start}-{end}/{size}"
    return StreamingResponse(
        _chunks(body, found),
        status_code=206 if span is not None else 200,
        media_type=found.media_type,
        headers={**common, "Content-Length": str(length)},
    )


async def _chunks(body: Any, found: ObjectRecording) -> AsyncIterator[bytes]:
    try:
        while chunk := await in_object_io(body.read, STREAM_CHUNK):
            yield chunk
    except Exception as exc:  # (the player asks again from where it stopped)
        log.error("console: streaming %s stopped: %s", found.url, described(exc))
    finally:
        # Not awaited: a player that went away cancels this stream, and a cancelled scope
        # would refuse the await; closing drops the connection without waiting on it.
        body.close()
