"""Reading what an outsider posts: capped before it is read, with a deadline, and parsed
in slices small enough that the audio of calls in progress never waits on it.

A request that breaks a limit is answered at once, with `Connection: close`, so the rest
of a body nobody will read is not received either (the server drops the connection
instead of parsing the remainder). Twilio's own webhooks are a few KiB with 20-60 fields:
every limit below leaves them room many times over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from urllib.parse import unquote

from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response

# A webhook body beyond this is not one of Twilio's (theirs are 1-4 KiB).
MAX_WEBHOOK_BYTES = 64 * 1024
# A query string beyond this is not a webhook's either (GET webhooks, ?profile=...).
MAX_QUERY_BYTES = 8 * 1024
MAX_FORM_FIELDS = 200
# The longest field Twilio sends (CallToken, StirPassportToken) is ~2 KiB.
MAX_FIELD_BYTES = 8 * 1024
# The whole body must have arrived by then: a sender trickling bytes holds nothing longer.
BODY_DEADLINE_S = 10.0
# Decoding this much input takes ~0.2 ms; the event loop runs in between.
SLICE_BYTES = 4 * 1024


class RequestRefused(Exception):
    """A request broke one of the limits: answer `status` with `reason` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def response(self) -> Response:
        return refusal(self.status, self.reason)


def refusal(status: int, reason: str) -> Response:
    """An answer to a request whose body is not read: the connection closes after it."""
    return PlainTextResponse(reason, status_code=status, headers={"Connection": "close"})


def check_query(request: Request, limit: int = MAX_QUERY_BYTES) -> None:
    """Refuse an over-long query string before anything parses it."""
    if len(request.scope.get("query_string", b"")) > limit:
        raise RequestRefused(414, "the query string is too long")


async def read_body(
    request: Request, limit: int = MAX_WEBHOOK_BYTES, deadline_s: float | None = None
) -> bytes:
    """The request's body, at most `limit` bytes, all of it within `deadline_s`
    (BODY_DEADLINE_S by default).

    A declared Content-Length over the limit is refused before a byte is read; a body sent
    in chunks is refused as soon as it passes the limit, so at most `limit` bytes are ever
    held."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise RequestRefused(413, f"the body is over {limit} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_DEADLINE_S if deadline_s is None else deadline_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise RequestRefused(413, f"the body is over {limit} bytes")
    except TimeoutError:
        raise RequestRefused(408, "the body took too long to arrive") from None
    except ClientDisconnect:
        raise RequestRefused(400, "the client went away mid-body") from None
    return bytes(body)


async def parse_form(
    body: bytes,
    max_fields: int = MAX_FORM_FIELDS,
    max_field_bytes: int = MAX_FIELD_BYTES,
) -> dict[str, str]:
    """An application/x-www-form-urlencoded body as `dict(parse_qsl(body.decode("utf-8",
    "replace"), keep_blank_values=True))` would give it, decoded a slice at a time with
    the event loop running in between: a 64 KiB body of escapes costs ~3 ms to decode,
    which in one piece would delay every call's audio by that much."""
    if body.count(b"&") >= max_fields:
        raise RequestRefused(413, f"the form has more than {max_fields} fields")
    text = body.decode("utf-8", "replace")
    fields: dict[str, str] = {}
    since_pause = 0
    for pair in text.split("&"):
        if not pair:
            continue
        if len(pair) > max_field_bytes:
            raise RequestRefused(413, f"a form field is over {max_field_bytes} bytes")
        name, _, value = pair.partition("=")
        fields[unquote(name.replace("+", " "))] = unquote(value.replace("+", " "))
        since_pause += len(pair)
        if since_pause >= SLICE_BYTES:
            since_pause = 0
            await asyncio.sleep(0)
    return fields


class RefusalLog:
    """Says that requests were refused without a line per request: an attacker posting at
    full speed must not turn into thousands of log lines a second (each costs the event
    loop, and the log drowns). A refusal after a quiet `interval_s` is logged at once;
    those that follow within the interval are counted, and logged together as it ends."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._counts: Counter[str] = Counter()
        self._quiet_until = float("-inf")
        self._flush: asyncio.TimerHandle | None = None

    def refused(self, what: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._counts[what] += 1
        if now >= self._quiet_until:
            self._log_counts(now)
        elif self._flush is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop: the next refusal after the interval says it
                return
            self._flush = loop.call_at(
                loop.time() + self._quiet_until - now, lambda: self._log_counts(None)
            )

    def _log_counts(self, now: float | None) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if not self._counts:
            return
        summary = "; ".join(f"{n} × {reason}" for reason, n in self._counts.most_common())
        self._counts.clear()
        self._quiet_until = (time.monotonic() if now is None else now) + self._interval_s
        self._logger.warning("refused requests: %s", summary)
