"""Log setup: one line per event, each naming its call.

Two shapes. "json" is one object per line for a log pipeline to index (every line has
call_sid, so one call's lines are one query). "text" is for a person at a terminal. By
default ("auto") a terminal gets text and anything else (a container, systemd, a file)
gets JSON.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

import orjson

LOG_FORMATS = ("auto", "json", "text")

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(call_sid)s] %(message)s"

# What every LogRecord carries; anything else on a record came in through `extra=`.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's copy of msg with terminal colour codes
}


class _CallIdDefault(logging.Filter):
    """Lines outside a call still fill the call column, so every line has one shape."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "call_sid"):
            record.call_sid = "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, call_sid, msg, then exc when there
    is a traceback and any `extra=` fields JSON can carry.

    The raw `args` never appear: the message is formatted once, as the text format would
    show it, so a field that holds what the caller said cannot leak through a side door.
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "call_sid": str(getattr(record, "call_sid", "-")),
            "msg": record.getMessage(),
        }
        # Cached like logging.Formatter does, so a second handler does not redo it.
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        extras = {
            k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS and k not in line
        }
        try:
            return orjson.dumps(line | extras).decode()
        except TypeError:  # orjson.JSONEncodeError: an extra it cannot carry
            pass
        for key, value in extras.items():
            try:
                orjson.dumps(value)
            except TypeError:
                continue
            line[key] = value
        try:
            return orjson.dumps(line).decode()
        except TypeError:
            # A message with a lone surrogate (undecodable bytes): the stdlib escapes it
            # where orjson refuses, and the line still gets written.
            return json.dumps(line, ensure_ascii=True, separators=(",", ":"), default=str)


def configure_logging(
    level: str = "info", fmt: str = "auto", stream: IO[str] | None = None
) -> None:
    """Send every log line to `stream` (stderr by default) as `fmt`: "json", "text", or
    "auto" (text on a terminal, json otherwise)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    if stream is None:
        stream = sys.stderr
    if fmt == "auto":
        fmt = "text" if _is_terminal(stream) else "json"
    handler = logging.StreamHandler(stream)
    handler.addFilter(_CallIdDefault())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # At DEBUG the websockets library logs every handshake header: the Realtime API key,
    # a gateway ?token=, Twilio's signatures; botocore (RECORDINGS_URL) every request's
    # headers and what it signed, a role's session token among them. Those lines never
    # leave them.
    for library in ("websockets", "botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(library).setLevel(max(logging.INFO, root.level))


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
