"""The media route's direct lane (bridge.twilio_socket) over real loopback sockets: the
plain-ASGI fallback still carries a call, frames that arrive together with (or right
after) the handshake are not lost, and pings and the close handshake stay uvicorn's."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import AsyncIterator

import pytest
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import Protocol, Side, State

import bridge.call_runner
import bridge.draining_server
from bridge.local_agent import AgentSession
from bridge.simulator import SimulatorOptions, simulate_call
from bridge.twilio_socket import AsgiTwilioLink, DirectTwilioLink
from bridge.ws_frames import ClientFrames, server_text_frames
from tests.helpers.heard_audio import heard_bytes_by_item, model_audio_by_item
from tests.helpers.running_bridge import (
    AUTH_TOKEN,
    RunningBridge,
    running_bridge,
    wait_until,
)
from tests.helpers.twilio_side import (
    STREAM_SID,
    answer_call,
    assert_call_fully_gone,
    bridged_session,
    open_stream,
    signed_headers,
    start_message,
)
from twiml.answer import stream_url

pytestmark = pytest.mark.integration

SILENCE = b"\xff" * 160  # 20 ms of mu-law silence
CONNECTED = json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def media(chunk: bytes = SILENCE) -> str:
    payload = base64.b64encode(chunk).decode()
    return json.dumps({"event": "media", "streamSid": STREAM_SID, "media": {"payload": payload}})


@pytest.fixture
def links(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The Twilio link each call's runner was given."""
    chosen: list[object] = []
    choose = bridge.call_runner.twilio_link

    def recording(websocket):  # type: ignore[no-untyped-def]
        link = choose(websocket)
        chosen.append(link)
        return link

    monkeypatch.setattr(bridge.call_runner, "twilio_link", recording)
    return chosen


def bridge_under_plain_uvicorn(ws: str) -> contextlib.AbstractAsyncContextManager[RunningBridge]:
    """As `running_bridge`, but uvicorn runs its own WebSocket implementation `ws`."""
    return running_bridge(server_options={"ws": ws})


async def test_a_call_over_plain_asgi_completes_a_turn(links: list[object]) -> None:
    async with bridge_under_plain_uvicorn("websockets-sansio") as running:
        report = await simulate_call(
            SimulatorOptions(
                webhook_url=running.webhook_url, auth_token=AUTH_TOKEN, turns=1, utterance_ms=600
            )
        )
        assert report.completed and report.turns[0].answer_complete
        session = next(s for s in running.agent.sessions if s.responses)
        heard, model = heard_bytes_by_item(report), model_audio_by_item(session)
        assert heard and all(model[item] == audio for item, audio in heard.items())
        assert await session.wait_closed(timeout=1.0)
        await assert_call_fully_gone(running)
    assert [type(link) for link in links] == [AsgiTwilioLink]


class RawTwilio:
    """Twilio's side of the media stream on a bare TCP socket: frames written by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.frames = ClientFrames()
        self.parser = Protocol(Side.CLIENT, max_size=None)
        self.received: list[Frame] = []

    @classmethod
    async def upgrade_request(cls, running: RunningBridge) -> tuple[RawTwilio, bytes]:
        host, port = running.base_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        key = base64.b64encode(os.urandom(16)).decode()
        headers = {
            "Host": f"{host}:{port}",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": key,
            "Sec-WebSocket-Version": "13",
            **signed_headers(stream_url(running.base_url)),
        }
        head = "GET /media-stream HTTP/1.1\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
        return cls(reader, writer), head.encode()

    async def read_101(self) -> None:
        response = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        assert response.startswith(b"HTTP/1.1 101"), response

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_until(self, opcode: Opcode, timeout: float = 5) -> Frame:
        """Read the server's frames until one with `opcode`; return it."""

        async def read() -> Frame:
            while True:
                for frame in self.received:
                    if frame.opcode is opcode:
                        self.received.remove(frame)
                        return frame
                data = await self.reader.read(65536)
                assert data, f"the bridge closed the socket without a {opcode.name} frame"
                self.parser.receive_data(data)
                assert self.parser.parser_exc is None, self.parser.parser_exc
                self.received += [e for e in self.parser.events_received() if isinstance(e, Frame)]

        return await asyncio.wait_for(read(), timeout)

    def close(self) -> None:
        self.writer.close()


@contextlib.asynccontextmanager
async def started_raw_call(running: RunningBridge) -> AsyncIterator[tuple[RawTwilio, AgentSession]]:
    """A call whose stream was opened on a bare socket, `connected` and `start` sent, and
    whose Realtime session is open: the raw socket and the agent's session."""
    parameters = await answer_call(running)
    twilio, request = await RawTwilio.upgrade_request(running)
    try:
        await twilio.write(request)
        await twilio.read_101()
        await twilio.write(twilio.frames.text_frames([CONNECTED, start_message(parameters)]))
        yield twilio, await bridged_session(running)
    finally:
        twilio.close()


def bridge_on(server: str) -> contextlib.AbstractAsyncContextManager[RunningBridge]:
    """The bridge under our server ("direct") or under plain uvicorn's `server`."""
    return running_bridge() if server == "direct" else bridge_under_plain_uvicorn(server)


async def appended(running: RunningBridge, count: int) -> None:
    session = await bridged_session(running)
    await wait_until(lambda: session.appends_received >= count, 5, f"{count} appends")
    assert session.appends_received == count
    assert bytes(session.input_audio) == SILENCE * count


@pytest.mark.parametrize("server", ["direct", "websockets-sansio"])
async def test_first_messages_in_one_write_start_the_call(links: list[object], server: str) -> None:
    """Twilio may send `connected`, `start` and its first media in one segment right after
    the 101: none may be lost. (Frames pipelined with the request itself are not tried:
    RFC 6455 4.1 has the client wait for the 101, and uvicorn's own implementation drops
    them too.)"""
    async with bridge_on(server) as running:
        parameters = await answer_call(running)
        twilio, request = await RawTwilio.upgrade_request(running)
        try:
            first = twilio.frames.text_frames([CONNECTED, start_message(parameters)])
            first += twilio.frames.text_frames([media()] * 5)
            await twilio.write(request)
            await twilio.read_101()
            await twilio.write(first)
            await appended(running, 5)
            split = twilio.frames.text_frames([media()])
            await twilio.write(split[:7])  # a frame across two writes
            # (apart, so the bridge reads the halves separately; the outcome is checked
            # below whether or not they were joined on the way)
            await asyncio.sleep(0.05)
            await twilio.write(split[7:] + twilio.frames.text_frames([media()]))
            await appended(running, 7)
            link = DirectTwilioLink if server == "direct" else AsgiTwilioLink
            assert [type(link) for link in links] == [link]
        finally:
            twilio.close()


async def test_ping_is_answered_and_a_close_frame_ends_the_call_raw() -> None:
    async with running_bridge() as running, started_raw_call(running) as (twilio, session):
        # a ping between two media frames, all in one write
        ping = Frame(Opcode.PING, b"are you there").serialize(mask=True)
        await twilio.write(
            twilio.frames.text_frames([media()]) + ping + twilio.frames.text_frames([media()])
        )
        pong = await twilio.read_until(Opcode.PONG, timeout=2)
        assert pong.data == b"are you there"
        await appended(running, 2)
        assert not await session.wait_closed(timeout=0.1)  # the call goes on
        close = Frame(Opcode.CLOSE, Close(1000, "hang up").serialize()).serialize(mask=True)
        await twilio.write(close)
        echoed = await twilio.read_until(Opcode.CLOSE, timeout=2)
        assert Close.parse(echoed.data).code == 1000
        assert await session.wait_closed(timeout=1.0)
        await assert_call_fully_gone(running)


async def test_ping_is_answered_and_close_ends_the_call_websockets_client() -> None:
    async with running_bridge() as running:
        ws = await open_stream(running)
        session = await bridged_session(running)
        for _ in range(3):
            await ws.send(media())
            latency = await asyncio.wait_for(await ws.ping(), 2)
            assert latency >= 0
        await appended(running, 3)
        await ws.close()
        assert ws.close_code == 1000
        assert await session.wait_closed(timeout=1.0)
        await assert_call_fully_gone(running)


@pytest.mark.parametrize(
    ("server", "ending"),
    [
        pytest.param(server, ending, id=f"{ending}-{server}")
        for server in ("direct", "websockets-sansio")
        for ending in ("close-frame", "unmasked-frame")
    ],
)
async def test_nothing_after_the_end_of_the_connection_reaches_the_call(
    server: str, ending: str
) -> None:
    async with bridge_on(server) as running, started_raw_call(running) as (twilio, session):
        await twilio.write(twilio.frames.text_frames([media()]))
        await appended(running, 1)
        if ending == "close-frame":
            close = Close(1000, "hang up").serialize()
            end = Frame(Opcode.CLOSE, close).serialize(mask=True)
        else:
            end = Frame(Opcode.TEXT, media().encode()).serialize(mask=False)
        await twilio.write(end + twilio.frames.text_frames([media()] * 3))
        echoed = await twilio.read_until(Opcode.CLOSE, timeout=2)
        assert Close.parse(echoed.data).code == (1000 if ending == "close-frame" else 1002)
        assert await session.wait_closed(timeout=1.0)
        assert session.appends_received == 1


@contextlib.asynccontextmanager
async def raw_realtime_server(frames: bytes) -> AsyncIterator[tuple[str, list[Frame]]]:
    """A Realtime endpoint that accepts the handshake and writes `frames` in the same
    segment as its 101; yields its URL and the frames the bridge then sent it."""
    from websockets.utils import accept_key

    received: list[Frame] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        response = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
        )
        writer.write(response.encode() + frames)
        parser = Protocol(Side.SERVER, max_size=None)
        while data := await reader.read(65536):
            parser.receive_data(data)
            received.extend(e for e in parser.events_received() if isinstance(e, Frame))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/v1/realtime", received
    finally:
        server.close()


async def test_realtime_side_delivers_whole_and_fragmented_messages_and_answers_pings() -> None:
    from bridge.realtime.endpoint import RealtimeEndpoint, open_realtime

    def unmasked(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
        return Frame(opcode, data, fin=fin).serialize(mask=False)

    frames = unmasked(Opcode.TEXT, b"one") + unmasked(Opcode.TEXT, b"tw", fin=False)
    frames += unmasked(Opcode.PING, b"p") + unmasked(Opcode.CONT, b"o")
    frames += unmasked(Opcode.TEXT, b"three" * 100)
    async with raw_realtime_server(frames) as (url, received):
        connection = await open_realtime(RealtimeEndpoint(url=url))
        got: list[bytes] = []
        connection.deliver_to(got.append)
        await wait_until(lambda: len(got) == 3, 2, "three messages")
        assert got == [b"one", b"two", b"three" * 100]
        await wait_until(lambda: received, 2, "the pong")
        assert [(f.opcode, f.data) for f in received] == [(Opcode.PONG, b"p")]
        assert connection.send_now(["hello", "world"])
        await wait_until(lambda: len(received) == 3, 2, "two messages at the server")
        assert [f.data for f in received[1:]] == [b"hello", b"world"]
        await connection.close()


async def test_realtime_side_delivers_nothing_after_the_servers_close() -> None:
    from bridge.realtime.endpoint import RealtimeEndpoint, open_realtime

    close = Frame(Opcode.CLOSE, Close(1000, "bye").serialize()).serialize(mask=False)
    frames = server_text_frames(["one"]) + close + server_text_frames(["after close"])
    async with raw_realtime_server(frames) as (url, _):
        connection = await open_realtime(RealtimeEndpoint(url=url))
        got: list[bytes] = []
        connection.deliver_to(got.append)
        # The close and what follows it came in one segment: once the close is read, all is.
        await wait_until(lambda: connection.state is not State.OPEN, 2, "the close")
        assert got == [b"one"]
        await connection.close()


@pytest.mark.parametrize(
    "server",
    [
        "direct",
        "websockets-sansio",
    ],
)
async def test_a_text_frame_that_is_not_utf8_fails_the_connection_with_1007(server: str) -> None:
    async with bridge_on(server) as running, started_raw_call(running) as (twilio, session):
        bad = Frame(Opcode.TEXT, b'{"event": "media", "x": "\xff\xfe"}').serialize(mask=True)
        await twilio.write(bad)
        echoed = await twilio.read_until(Opcode.CLOSE, timeout=2)
        assert Close.parse(echoed.data).code == 1007
        assert await session.wait_closed(timeout=1.0)


async def test_realtime_side_text_that_is_not_utf8_closes_the_session_at_once() -> None:
    """A session that sent invalid UTF-8 is failed with 1007 and dropped, so the call hears
    of it now; it must not linger half-closed until a ping times out (20 s)."""
    from bridge.realtime.endpoint import RealtimeEndpoint, open_realtime

    bad = Frame(Opcode.TEXT, b'{"type": "\xff\xfe"}').serialize(mask=False)
    async with raw_realtime_server(server_text_frames(["one"]) + bad) as (url, received):
        connection = await open_realtime(RealtimeEndpoint(url=url))
        got: list[bytes] = []
        connection.deliver_to(got.append)
        await asyncio.wait_for(connection.wait_closed(), 1.0)
        assert got == [b"one"]
        assert [Close.parse(f.data).code for f in received if f.opcode is Opcode.CLOSE] == [1007]


async def test_realtime_side_fragmented_binary_is_not_judged_as_text() -> None:
    from bridge.realtime.endpoint import RealtimeEndpoint, open_realtime

    frames = Frame(Opcode.BINARY, b"\xff", fin=False).serialize(mask=False)
    frames += Frame(Opcode.CONT, b"\xfe").serialize(mask=False)
    async with raw_realtime_server(frames + server_text_frames(["after"])) as (url, _):
        connection = await open_realtime(RealtimeEndpoint(url=url))
        got: list[bytes] = []
        connection.deliver_to(got.append)
        await wait_until(lambda: len(got) == 2, 2, "both messages")
        assert got == [b"\xff\xfe", b"after"]
        assert connection.state is State.OPEN
        await connection.close()


async def test_events_sent_with_the_handshake_reach_a_core_that_listens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """session.created comes right behind the 101: the core must already be bridging (its
    session.update sent) when it reads it, or it would drop it unread."""
    from bridge.core import events
    from bridge.core.call import Call

    seen: list[tuple[str, str]] = []
    handle = Call.handle

    def noting(self: Call, event: events.Event, now: float) -> list:
        if type(event) in (events.SessionCreated, events.SessionUpdated):
            seen.append((self.phase.name, type(event).__name__))
        return handle(self, event, now)

    monkeypatch.setattr(Call, "handle", noting)
    async with running_bridge() as running:
        ws = await open_stream(running)
        try:
            await bridged_session(running)
            await wait_until(lambda: len(seen) >= 2, 2, "the first events")
            assert seen[0] == ("BRIDGING", "SessionCreated")
        finally:
            await ws.close()
