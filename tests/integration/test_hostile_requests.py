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
import json
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.helpers.running_bridge import RunningBridge, running_bridge, stored_record
from tests.helpers.twilio_side import (
    CALL_SID,
    STREAM_SID,
    bridged_session,
    open_stream,
    signed_headers,
    start_stream,
)
from twiml import request_body
from twiml.answer import stream_url

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
    status, headers = await answer_to_unsent_body(bridge, "/console/login", {})
    assert (status, headers["connection"]) == (413, "close")
    status, headers = await answer_to_unsent_body(bridge, "/console/api/softphone", {})
    assert (status, headers["connection"]) == (401, "close")  # no login: body never read


async def test_a_query_string_too_long_for_a_webhook_is_refused(bridge: RunningBridge) -> None:
    async with raw_connection(bridge) as (reader, writer):
        query = "a=" + "b" * request_body.MAX_QUERY_BYTES
        writer.write(f"GET /voice?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        status, _ = await answer_of(reader)
    assert status == 414


# --- replays and upgrades that never start -------------------------------------------------


async def post_webhook(bridge: RunningBridge, form: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            bridge.webhook_url, data=form, headers=signed_headers(bridge.webhook_url, form)
        )


def stream_parameters(twiml: str) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in ET.fromstring(twiml).iter("Parameter")}


async def test_a_replayed_webhook_gets_the_same_answer_holds_one_line_and_opens_one_session() -> (
    None
):
    async with running_bridge(max_concurrent_calls=2) as bridge:
        form = {"CallSid": CALL_SID, "From": "+15550001111", "To": "+15550002222"}
        answers = [await post_webhook(bridge, form) for _ in range(5)]
        assert {a.status_code for a in answers} == {200}
        assert len({a.text for a in answers}) == 1  # one answer, one single-use token
        assert bridge.app.state.calls.reserved == 1  # five replays, one line held
        # A real caller still gets through.
        other = await post_webhook(bridge, {**form, "CallSid": "CA" + "2" * 32})
        assert "<Stream" in other.text

        parameters = stream_parameters(answers[0].text)
        first = await start_stream(bridge, parameters)
        await bridged_session(bridge)
        second = await start_stream(bridge, parameters)  # the same answer's token, again
        with pytest.raises(ConnectionClosed) as refused:
            await asyncio.wait_for(second.recv(), 5)
        assert refused.value.rcvd is not None and refused.value.rcvd.code == 1008
        assert len(bridge.agent.sessions) == 1  # one paid session for the one call

        # Its stream came: the webhook again is a replay, live call or not.
        assert (await post_webhook(bridge, form)).status_code == 409
        await first.send(json.dumps({"event": "stop", "streamSid": STREAM_SID}))
        record = await stored_record(bridge, CALL_SID)
        assert (await post_webhook(bridge, form)).status_code == 409
        assert await stored_record(bridge, CALL_SID) == record
        assert len(bridge.agent.sessions) == 1


async def test_a_webhook_replayed_to_a_fresh_instance_is_refused_by_the_stored_record() -> None:
    async with running_bridge() as bridge:
        form = {"CallSid": CALL_SID, "From": "+15550001111", "To": "+15550002222"}
        ws = await start_stream(bridge, stream_parameters((await post_webhook(bridge, form)).text))
        await bridged_session(bridge)
        await ws.send(json.dumps({"event": "stop", "streamSid": STREAM_SID}))
        await stored_record(bridge, CALL_SID)
        # What this instance remembers is gone (a restart, another replica): the record
        # still says the call was served.
        bridge.app.state.calls._answered.clear()
        assert (await post_webhook(bridge, form)).status_code == 409


async def test_upgrades_that_never_start_hold_no_line_and_are_closed_at_the_deadline() -> None:
    async with running_bridge(max_concurrent_calls=2) as bridge:
        headers = signed_headers(stream_url(bridge.base_url))  # the deployment's constant
        idle = [await connect(bridge.stream_url, additional_headers=headers) for _ in range(5)]
        opened_at = time.monotonic()
        # A real call still gets a line and its session while they sit there.
        ws = await open_stream(bridge)
        await bridged_session(bridge)
        assert len(bridge.app.state.calls) == 1
        for socket_ in idle:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(socket_.recv(), 10)
        assert 5.0 <= time.monotonic() - opened_at < 7.0  # Call's start deadline
        assert len(bridge.agent.sessions) == 1
        await ws.close()


async def test_a_caller_id_with_control_characters_still_gets_well_formed_twiml() -> None:
    async with running_bridge() as bridge:
        form = {"CallSid": CALL_SID, "From": "\x00\x01\x1b+15550001111\ufffe", "To": "+1555"}
        answer = await post_webhook(bridge, form)
    assert answer.status_code == 200
    root = ET.fromstring(answer.content)  # strict XML 1.0: Twilio would fail the call otherwise
    parameters = {p.get("name"): p.get("value") for p in root.iter("Parameter")}
    assert parameters["From"] == "+15550001111"


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"])
async def test_no_api_schema_or_docs_are_served(bridge: RunningBridge, path: str) -> None:
    async with httpx.AsyncClient() as http:
        assert (await http.get(bridge.base_url + path)).status_code == 404


async def test_copies_of_a_webhook_sent_at_once_get_one_answer_and_one_session() -> None:
    async with running_bridge(max_concurrent_calls=5) as bridge:
        form = {"CallSid": CALL_SID, "From": "+15550001111", "To": "+15550002222"}
        answers = await asyncio.gather(*(post_webhook(bridge, form) for _ in range(5)))
        assert {a.status_code for a in answers} == {200}
        assert len({a.text for a in answers}) == 1  # one token for them all
        assert bridge.app.state.calls.reserved == 1
        streams = [await start_stream(bridge, stream_parameters(a.text)) for a in answers]
        await bridged_session(bridge)
        for ws in streams[1:]:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
        assert len(bridge.agent.sessions) == 1
        await streams[0].send(json.dumps({"event": "stop", "streamSid": STREAM_SID}))
        await stored_record(bridge, CALL_SID)
        # Even a genuine, fresh token for that CallSid admits no second stream, ever.
        fresh = {**stream_parameters(answers[0].text)}
        fresh["token"] = bridge.app.state.console.tokens.issue(CALL_SID)
        again = await start_stream(bridge, fresh)
        with pytest.raises(ConnectionClosed) as refused:
            await asyncio.wait_for(again.recv(), 5)
        assert refused.value.rcvd is not None and refused.value.rcvd.code == 1013
        assert len(bridge.agent.sessions) == 1


async def test_a_call_answered_busy_is_busy_again_when_its_webhook_is_replayed() -> None:
    async with running_bridge(max_concurrent_calls=1, busy_message="All busy.") as bridge:
        first = await open_stream(bridge)
        await bridged_session(bridge)
        other = {"CallSid": "CA" + "3" * 32, "From": "+15550001111", "To": "+15550002222"}
        busy = await post_webhook(bridge, other)
        assert "<Stream" not in busy.text and "All busy." in busy.text
        await first.send(json.dumps({"event": "stop", "streamSid": STREAM_SID}))
        await stored_record(bridge, CALL_SID)
        assert bridge.app.state.calls.accepting  # the line is free again...
        replayed = await post_webhook(bridge, other)
        assert replayed.text == busy.text  # ...but that caller heard busy and hung up long ago
        assert len(bridge.agent.sessions) == 1
