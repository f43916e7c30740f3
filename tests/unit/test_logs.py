"""The lines an operator's log pipeline (json) or terminal (text) gets from the bridge."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from bridge.logs import configure_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging replaces the root handlers: give pytest's back afterwards."""
    root = logging.getLogger()
    websockets = logging.getLogger("websockets")
    saved = (root.handlers[:], root.level, websockets.level)
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    websockets.setLevel(saved[2])


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [orjson.loads(line) for line in text.splitlines()]


def test_json_lines_carry_the_call_level_logger_and_message() -> None:
    stream = io.StringIO()
    configure_logging("info", fmt="json", stream=stream)
    call_log = logging.LoggerAdapter(logging.getLogger("bridge.call"), {"call_sid": "CA123"})
    before = datetime.now(UTC)

    call_log.warning("Realtime error %s: %s", "server_error", "try again")
    logging.getLogger("bridge.app").info("listening on %s:%d", "0.0.0.0", 8080)

    in_call, outside = json_lines(stream)
    assert in_call["call_sid"] == "CA123"
    assert in_call["level"] == "WARNING"
    assert in_call["logger"] == "bridge.call"
    assert in_call["msg"] == "Realtime error server_error: try again"
    assert "args" not in in_call
    assert outside["call_sid"] == "-"
    assert outside["msg"] == "listening on 0.0.0.0:8080"
    assert outside["level"] == "INFO"
    assert "exc" not in outside
    # ISO-8601 in UTC to the millisecond, and the time the line was written.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", in_call["ts"])
    ts = datetime.fromisoformat(in_call["ts"].replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= ts <= datetime.now(UTC)


def test_json_line_holds_the_traceback_of_a_logged_exception() -> None:
    stream = io.StringIO()
    configure_logging("info", fmt="json", stream=stream)
    try:
        raise RuntimeError("tool exploded")
    except RuntimeError:
        logging.getLogger("bridge.tools").exception("tool %s failed", "lookup")

    (line,) = json_lines(stream)
    assert line["msg"] == "tool lookup failed"
    assert line["level"] == "ERROR"
    assert "Traceback (most recent call last)" in line["exc"]
    assert "RuntimeError: tool exploded" in line["exc"]


def test_json_line_keeps_extra_fields_json_can_carry_and_drops_the_rest() -> None:
    stream = io.StringIO()
    configure_logging("info", fmt="json", stream=stream)
    logging.getLogger("bridge.tools").warning(
        "tool %s timed out",
        "lookup",
        extra={"call_sid": "CA9", "tool": "lookup", "timeout_s": 2.5, "handle": object()},
    )

    (line,) = json_lines(stream)
    assert line["call_sid"] == "CA9"
    assert line["tool"] == "lookup"
    assert line["timeout_s"] == 2.5
    assert "handle" not in line
    assert line["msg"] == "tool lookup timed out"


def test_an_extra_field_cannot_overwrite_the_line_s_own_fields() -> None:
    stream = io.StringIO()
    configure_logging("info", fmt="json", stream=stream)
    logging.getLogger("bridge.x").info("hello", extra={"level": "FAKE", "ts": "then"})

    (line,) = json_lines(stream)
    assert line["level"] == "INFO"
    assert line["ts"] != "then"


def test_a_multi_line_message_is_still_one_json_line() -> None:
    stream = io.StringIO()
    configure_logging("info", fmt="json", stream=stream)
    logging.getLogger("bridge.x").info("first\nsecond")

    (line,) = json_lines(stream)
    assert line["msg"] == "first\nsecond"


def test_text_format_is_unchanged() -> None:
    stream = io.StringIO()
    configure_logging("info", fmt="text", stream=stream)
    call_log = logging.LoggerAdapter(logging.getLogger("bridge.call"), {"call_sid": "CA123"})
    call_log.info("call ended: %s", "the caller hung up")
    logging.getLogger("bridge.app").warning("draining")

    first, second = stream.getvalue().splitlines()
    timestamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert re.fullmatch(
        timestamp + r" INFO    bridge\.call \[CA123\] call ended: the caller hung up", first
    )
    assert re.fullmatch(timestamp + r" WARNING bridge\.app \[-\] draining", second)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_writes_json_when_not_on_a_terminal() -> None:
    stream = io.StringIO()
    configure_logging("info", stream=stream)
    logging.getLogger("bridge.x").info("hello")

    (line,) = json_lines(stream)
    assert line["msg"] == "hello"


def test_auto_writes_text_on_a_terminal() -> None:
    stream = _Terminal()
    configure_logging("info", fmt="auto", stream=stream)
    logging.getLogger("bridge.x").info("hello")

    assert stream.getvalue().rstrip("\n").endswith(" INFO    bridge.x [-] hello")


def test_default_stream_is_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", fmt="text")
    logging.getLogger("bridge.x").info("to stderr")

    captured = capsys.readouterr()
    assert "to stderr" in captured.err
    assert captured.out == ""


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_websockets_debug_lines_never_appear(fmt: str) -> None:
    """At DEBUG websockets logs handshake headers: the API key, tokens, signatures."""
    stream = io.StringIO()
    configure_logging("debug", fmt=fmt, stream=stream)
    logging.getLogger("websockets.client").debug("> Authorization: Bearer sk-secret")
    logging.getLogger("websockets.client").info("connection open")
    logging.getLogger("bridge.call").debug("bridge debug")

    out = stream.getvalue()
    assert "sk-secret" not in out
    assert "connection open" in out
    assert "bridge debug" in out


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="json"):
        configure_logging("info", fmt="yaml")


def test_uvicorns_coloured_copy_of_the_message_is_left_out() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]", 7, extra={"color_message": "Started [\x1b[36m%d\x1b[0m]"}
    )
    line = orjson.loads(stream.getvalue().splitlines()[-1])
    assert line["msg"] == "Started server process [7]" and "color_message" not in line
