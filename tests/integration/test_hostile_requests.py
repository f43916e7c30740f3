"""What an outsider posts costs the bridge almost nothing: requests that cannot be genuine
are answered before their bodies are read, bodies are capped as they arrive, and a body
that trickles in is given up at a deadline.

Requests are written by hand over a raw socket, so a test can declare a body it never
sends: a server that read bodies before checking them would wait for it, and the test
would time out instead of getting its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from tests.integration.harness import RunningBridge, running_bridge
from tests.integration.twilio_side import signed_headers
from twiml import request_body

pytestmark = pytest.mark.integration

OPERATOR_TOKEN = "operator-token-for-hostile-request-tests"
CONSOLE_PASSWORD = "console-password-for-tests"
HUGE = 48 * 1024 * 1024
# The answer must come while the body is still unsent: well before any body deadline.
ANSWER_WITHIN_S = 2.0


@contextlib.asynccontextmanager
async def raw_connection(
    bridge: RunningBridge,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    parts = urlsplit(bridge.base_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def request_head(path: str, headers: dict[str, str], length: int | None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append("Content-Type: application/x-www-form-urlencoded")
    lines.append(
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    )
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def answer_of(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The status and headers of the answer, which must come within ANSWER_WITHIN_S."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ANSWER_WITHIN_S)
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


async def answer_to_unsent_body(
    bridge: RunningBridge, path: str, headers: dict[str, str], length: int = HUGE
) -> tuple[int, dict[str, str]]:
    """Declare a body of `length` bytes, send none of it, and read the answer."""
    async with raw_connection(bridge) as (reader, writer):
        writer.write(request_head(path, headers, length))
        return await answer_of(reader)


@pytest.fixture
async def bridge() -> AsyncIterator[RunningBridge]:
    async with running_bridge(
        operator_token=OPERATOR_TOKEN, console_password=CONSOLE_PASSWORD
    ) as running:
        yield running


@pytest.mark.parametrize("path", ["/voice", "/call-status"])
async def test_a_webhook_without_a_signature_is_refused_before_its_body_is_read(
    bridge: RunningBridge, path: str
) -> None:
    status, headers = await answer_to_unsent_body(bridge, path, {})
    assert status == 403
    assert headers["connection"] == "close"  # the unread body is not received either


@pytest.mark.parametrize("path", ["/voice", "/call-status"])
async def test_a_signed_webhook_body_over_the_cap_is_refused_before_it_is_read(
    bridge: RunningBridge, path: str
) -> None:
    headers = signed_headers(bridge.base_url + path, {"CallSid": "CA1"})
    length = request_body.MAX_WEBHOOK_BYTES + 1
    status, answer_headers = await answer_to_unsent_body(bridge, path, headers, length)
    assert status == 413
    assert answer_headers["connection"] == "close"


async def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_cap(
    bridge: RunningBridge,
) -> None:
    headers = signed_headers(bridge.webhook_url, {"CallSid": "CA1"})
    chunk = b"a" * 16 * 1024
    async with raw_connection(bridge) as (reader, writer):
        writer.write(request_head("/voice", headers, None))
        sent = 0
        answer = asyncio.ensure_future(answer_of(reader))
        # Chunks keep coming, as from a sender with no end: the answer must not wait for one.
        while not answer.done() and sent <= 4 * request_body.MAX_WEBHOOK_BYTES:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
            sent += len(chunk)
            await asyncio.sleep(0.01)
        status, _ = await answer
    assert status == 413
    assert sent <= 2 * request_body.MAX_WEBHOOK_BYTES  # answered soon after the cap


async def test_a_body_that_trickles_in_is_given_up_at_the_deadline(
    bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(request_body, "BODY_DEADLINE_S", 0.5)
    headers = signed_headers(bridge.webhook_url, {"CallSid": "CA1"})
    async with raw_connection(bridge) as (reader, writer):
        writer.write(request_head("/voice", headers, 1000))
        writer.write(b"CallSid=CA1")  # and nothing more
        status, headers = await answer_of(reader)
    assert status == 408
    assert headers["connection"] == "close"


async def test_a_form_of_too_many_fields_is_refused(bridge: RunningBridge) -> None:
    form = {f"f{i}": "v" for i in range(request_body.MAX_FORM_FIELDS + 1)}
    body = "&".join(f"{name}={value}" for name, value in form.items()).encode()
    headers = signed_headers(bridge.webhook_url, form)  # even a genuine signature
    async with raw_connection(bridge) as (reader, writer):
        writer.write(request_head("/voice", headers, len(body)) + body)
        status, _ = await answer_of(reader)
    assert status == 413


async def test_placing_a_call_needs_the_token_before_the_body_is_read(
    bridge: RunningBridge,
) -> None:
    status, headers = await answer_to_unsent_body(
        bridge, "/calls", {"Authorization": "Bearer wrong"}
    )
    assert status == 401
    assert headers["connection"] == "close"
    authorized = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    status, _ = await answer_to_unsent_body(bridge, "/calls", authorized)
    assert status == 413  # even for an operator: a call request is a few hundred bytes


async def test_console_forms_are_capped_or_need_the_login_before_they_are_read(
    bridge: RunningBridge,
) -> None:
    status, _ = await answer_to_unsent_body(bridge, "/console/login", {})
    assert status == 413
    status, _ = await answer_to_unsent_body(bridge, "/console/api/softphone", {})
    assert status == 401  # no login: its body is never looked at


async def test_a_query_string_too_long_for_a_webhook_is_refused(bridge: RunningBridge) -> None:
    async with raw_connection(bridge) as (reader, writer):
        query = "a=" + "b" * request_body.MAX_QUERY_BYTES
        writer.write(f"GET /voice?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        status, _ = await answer_of(reader)
    assert status == 414
