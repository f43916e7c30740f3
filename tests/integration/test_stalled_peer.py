"""A Twilio peer that stops reading costs its call and nothing more: the connection is
dropped once writes to it cannot complete, the line is freed, the record is written with
its own outcome, and a shutdown is not held up by it."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

import pytest
from websockets.asyncio.client import ClientConnection, connect

from bridge import twilio_socket as media_socket
from bridge.local_agent import session as agent_session
from tests.helpers.running_bridge import RunningBridge, running_bridge, stored_record, wait_until
from tests.helpers.twilio_side import CALL_SID, answer_call, signed_headers, start_message
from twiml.answer import stream_url

pytestmark = pytest.mark.integration

# ~3 s of the local agent's synthetic speech: far more than the small buffers below hold.
GREETING = "Hello, thank you for calling. How can I help you today, please?"


async def a_peer_that_stops_reading(bridge: RunningBridge) -> ClientConnection:
    """Twilio's side of a call that reads nothing after `start`: its socket's receive
    buffer is small, so the bridge's writes back up within the greeting."""
    parameters = await answer_call(bridge)
    parts = urlsplit(bridge.base_url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parts.hostname, parts.port))
    sock.setblocking(False)
    ws = await connect(
        bridge.stream_url,
        sock=sock,
        additional_headers=signed_headers(stream_url(bridge.base_url)),
    )
    await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    await ws.send(start_message(parameters))
    ws.transport.pause_reading()  # and never again
    return ws


async def assert_the_call_is_dropped_and_its_line_freed(bridge: RunningBridge) -> None:
    calls = bridge.app.state.calls
    await wait_until(lambda: len(calls) == 1, 5, "the call to start")
    await wait_until(lambda: len(calls) == 0, 10, "the stalled call to end")
    record = await stored_record(bridge, CALL_SID)
    assert record.outcome == "twilio_stalled"
    assert await bridge.agent.sessions[0].wait_closed(timeout=1.0)  # no paid session left
    assert calls.accepting  # the one line is free for the next caller


@pytest.mark.parametrize("why", ["paused too long", "too much unsent"])
async def test_a_peer_that_stops_reading_loses_its_call_not_the_line(
    monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    monkeypatch.setattr(media_socket, "WRITE_HIGH_WATER_BYTES", 4096)
    if why == "paused too long":
        monkeypatch.setattr(media_socket, "WRITE_STALL_S", 0.5)
    else:
        monkeypatch.setattr(media_socket, "WRITE_STALL_S", 60.0)
        monkeypatch.setattr(media_socket, "MAX_UNSENT_BYTES", 8192)
    # Small kernel buffers both ways, so the bridge's own buffer fills within the greeting.
    small_send_buffer = (socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    async with running_bridge(
        greeting=GREETING, max_concurrent_calls=1, socket_options=[small_send_buffer]
    ) as bridge:
        await a_peer_that_stops_reading(bridge)
        await assert_the_call_is_dropped_and_its_line_freed(bridge)
        leaving = time.monotonic()
    # The server shut down at once: no connection left waiting on a peer that does not read.
    assert time.monotonic() - leaving < 2.0


async def test_a_drain_is_not_held_up_by_a_peer_that_stopped_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(media_socket, "WRITE_HIGH_WATER_BYTES", 4096)
    monkeypatch.setattr(media_socket, "WRITE_STALL_S", 1.0)
    small_send_buffer = (socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    async with running_bridge(greeting=GREETING, socket_options=[small_send_buffer]) as bridge:
        await a_peer_that_stops_reading(bridge)
        calls = bridge.app.state.calls
        await wait_until(lambda: len(calls) == 1, 5, "the call to start")
        began = time.monotonic()
        # SIGTERM's drain: a short grace, then a goodbye the peer will never read.
        await calls.drain(0.1, "We are closing now. Goodbye.")
        drained_in = time.monotonic() - began
        record = await stored_record(bridge, CALL_SID)
    assert record.outcome == "twilio_stalled"
    assert drained_in < 1.0 + 2.0  # the stall's bound, not the goodbye's 20 s wait


async def test_over_plain_asgi_a_peer_that_stops_reading_loses_its_call_not_the_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under a server without the direct lane the call still ends once a write cannot
    complete; only the socket is left to the server (plain ASGI cannot drop it)."""
    monkeypatch.setattr(media_socket, "WRITE_STALL_S", 0.5)
    # A greeting long enough to fill the server's own 64 KiB write buffer and the kernel's.
    monkeypatch.setattr(agent_session, "MAX_SYNTHETIC_MS", 30_000)
    small_send_buffer = (socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    async with running_bridge(
        greeting=GREETING * 10,
        max_concurrent_calls=1,
        socket_options=[small_send_buffer],
        server_options={"ws": "websockets-sansio"},
    ) as bridge:
        peer = await a_peer_that_stops_reading(bridge)
        try:
            await assert_the_call_is_dropped_and_its_line_freed(bridge)
        finally:
            peer.transport.abort()  # the peer leaves: the server cannot drop it itself
