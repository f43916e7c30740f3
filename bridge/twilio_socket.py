"""Twilio's side of a call: the Media Streams WebSocket, as a link the call runner drives.

A call moves ~50 small messages a second each way, so what each one costs decides how many
calls an instance carries. Through plain ASGI every message is a dict put on a queue, a
task switch, a read pause and resume, and an awaited send. `MediaWebSocketProtocol` (the
uvicorn WebSocket protocol `phone-bridge serve` runs) offers the media route a direct lane
instead: once the handshake is done, text frames go to the call's callback as they are
parsed, and its messages are framed and written at once, several in one write. Everything
else (handshake, pings, close, the size limit) stays uvicorn's.

Under another ASGI server the same route runs over plain ASGI (`AsgiTwilioLink`): slower,
never different.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from bridge.ws_frames import IncomingBytes, is_utf8, server_text_frames

# The ASGI scope extension under which the direct lane is offered.
DIRECT_LANE = "phone-bridge.direct-lane"
# Twilio reads a call's audio as soon as it is sent (it buffers it on its side), so a write
# that cannot complete means the peer has stopped reading. Past this much waiting to be sent
# (the kernel's buffers already full) the socket counts as paused ...
WRITE_HIGH_WATER_BYTES = 64 * 1024
# ... and if it stays so this long, the peer has gone: the connection is dropped (there is
# no closing handshake with a peer that does not read), which ends the call.
WRITE_STALL_S = 10.0
# Whatever the time, no more than this is ever held for one peer.
MAX_UNSENT_BYTES = 4 * 1024 * 1024
# How long the end of a call waits for its last messages on the plain-ASGI link.
FLUSH_TIMEOUT_S = 1.0

# Receives each message from Twilio's side as it arrives: the frame's text, undecoded.
Receiver = Callable[[bytes], None]


class TwilioLink(Protocol):
    def start(self, receiver: Receiver) -> None:
        """Deliver every message from now on to `receiver`."""

    def send(self, texts: list[str]) -> bool:
        """Send messages in order, without waiting; False if the socket can take no
        more (closed, or not reading)."""

    @property
    def stalled(self) -> bool:
        """The peer stopped reading and the connection was dropped for it."""

    async def wait_closed(self) -> int | None:
        """Wait until Twilio's side is gone; the close code, if there was one."""

    async def finish(self) -> None:
        """Before the socket is closed: let messages still on their way go out."""

    def abort(self) -> None:
        """Drop the connection at once, with nothing more sent (a close that did not
        complete in time: the peer is not reading)."""


def twilio_link(websocket: WebSocket) -> TwilioLink:
    """The fastest link the server offers for an accepted media WebSocket."""
    lane = websocket.scope.get("extensions", {}).get(DIRECT_LANE)
    if isinstance(lane, DirectLane):
        return DirectTwilioLink(websocket, lane)
    return AsgiTwilioLink(websocket)


class DirectLane:
    """What `MediaWebSocketProtocol` offers one connection's app."""

    def __init__(self, protocol: MediaWebSocketProtocol) -> None:
        self._protocol = protocol

    def take_over(self, receiver: Receiver) -> None:
        self._protocol.divert_messages(receiver)

    def send(self, texts: list[str]) -> bool:
        return self._protocol.send_now(texts)

    @property
    def stalled(self) -> bool:
        return self._protocol.stalled

    def abort(self) -> None:
        self._protocol.transport.abort()


class MediaWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, with a direct lane for the media route and
    whole data frames read by `bridge.ws_frames` instead of websockets' general parser."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._receiver: Receiver | None = None
        self.stalled = False  # dropped because the peer stopped reading
        self._stall_timer: asyncio.TimerHandle | None = None
        self._incoming = IncomingBytes(
            masked=True,
            on_message=self._message,
            to_websockets=super().data_received,
            opened=self._opened,
        )

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER_BYTES)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(WRITE_STALL_S, self._drop_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        super().connection_lost(exc)

    def _drop_stalled(self) -> None:
        """The peer has not read for WRITE_STALL_S with our writes waiting: it is gone. A
        close would wait on the same buffer (uvicorn's send waits for it to drain), so the
        connection is dropped; its reader then sees the disconnect."""
        self._stall_timer = None
        self.stalled = True
        self.transport.abort()

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        if self.response.status_code == 101:
            # The app's task has been created but has not run yet: it sees the lane.
            extensions: Any = self.scope["extensions"]
            extensions[DIRECT_LANE] = DirectLane(self)

    def data_received(self, data: bytes) -> None:
        self._incoming.feed(data)

    def _opened(self) -> int | None:
        return self.config.ws_max_size if self.handshake_initiated and not self.close_sent else None

    def _message(self, payload: bytes, is_text: bool) -> None:
        if self.conn.state is not State.OPEN or self.close_sent:
            return  # read in the same chunk as a close: the stream is over
        receiver = self._receiver
        if receiver is not None:
            receiver(payload)
            return
        self.curr_msg_data_type = "text" if is_text else "bytes"
        self.frames = [payload]
        super().send_receive_event_to_app()

    def divert_messages(self, receiver: Receiver) -> None:
        """From now on, data messages go to `receiver` as they are read; messages the app
        has not read yet go first, in order. Disconnects still reach ASGI's receive()."""
        waiting: list[Any] = []
        others: list[Any] = []
        while not self.queue.empty():
            message = self.queue.get_nowait()
            (waiting if message["type"] == "websocket.receive" else others).append(message)
        for message in others:
            self.queue.put_nowait(message)
        self._receiver = receiver
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        for message in waiting:
            text = message.get("text")
            receiver(text.encode() if text is not None else message.get("bytes") or b"")

    def send_receive_event_to_app(self) -> None:
        receiver = self._receiver
        if receiver is None or self.close_sent:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        if self.curr_msg_data_type == "text" and not is_utf8(data):
            self.frames = [data]
            super().send_receive_event_to_app()  # which fails the connection with 1007
            return
        self.frames = []
        receiver(data)

    def send_now(self, texts: list[str]) -> bool:
        if self.close_sent or self.disconnected or self.conn.state is not State.OPEN:
            return False
        transport = self.transport
        if transport.is_closing():
            return False
        if transport.get_write_buffer_size() > MAX_UNSENT_BYTES:
            self._drop_stalled()
            return False
        transport.write(server_text_frames(texts))
        return True


class DirectTwilioLink:
    """Messages in by callback, out by immediate writes: no queue, no task per message."""

    def __init__(self, websocket: WebSocket, lane: DirectLane) -> None:
        self._websocket = websocket
        self._lane = lane

    def start(self, receiver: Receiver) -> None:
        self._lane.take_over(receiver)

    def send(self, texts: list[str]) -> bool:
        return self._lane.send(texts)

    @property
    def stalled(self) -> bool:
        return self._lane.stalled

    async def wait_closed(self) -> int | None:
        return await _wait_for_disconnect(self._websocket, None)

    async def finish(self) -> None:
        pass  # every message was written when it was sent

    def abort(self) -> None:
        self._lane.abort()


class AsgiTwilioLink:
    """The same link over plain ASGI, for servers without the direct lane: one writer task
    keeps sends in order while an earlier one waits.

    A peer that stops reading is noticed as on the direct lane (one send blocked for
    WRITE_STALL_S, or MAX_UNSENT_BYTES waiting) and its call ends: line, paid session and
    record are released. Plain ASGI offers no way to drop the connection itself, though:
    the socket stays open until the peer leaves or the server force-closes it (a close
    waits for unsent data a peer that does not read never takes; so may a graceful
    shutdown, unless the server bounds it, e.g. uvicorn's --timeout-graceful-shutdown)."""

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket
        self._receiver: Receiver | None = None
        self._outbox: asyncio.Queue[str] = asyncio.Queue()
        self._unsent_chars = 0
        self._writer: asyncio.Task[None] | None = None
        self._broken = False
        self._stalled = False
        self._gave_up = asyncio.Event()  # the writer saw the peer stop reading

    def start(self, receiver: Receiver) -> None:
        self._receiver = receiver
        self._writer = asyncio.create_task(self._write(), name="twilio-writer")

    def send(self, texts: list[str]) -> bool:
        if self._broken:
            return False
        if self._unsent_chars > MAX_UNSENT_BYTES:
            self._stalled = True
            return False
        for text in texts:
            self._unsent_chars += len(text)
            self._outbox.put_nowait(text)
        return True

    async def _write(self) -> None:
        try:
            while True:
                text = await self._outbox.get()
                async with asyncio.timeout(WRITE_STALL_S):  # the server waits while paused
                    await self._websocket.send_text(text)
                self._unsent_chars -= len(text)
                self._outbox.task_done()
        except TimeoutError:
            self._broken = self._stalled = True
            self._gave_up.set()
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._broken = True

    @property
    def stalled(self) -> bool:
        return self._stalled

    async def wait_closed(self) -> int | None:
        """Until Twilio's side is gone, or has stopped reading (then None)."""
        reading = asyncio.ensure_future(_wait_for_disconnect(self._websocket, self._receiver))
        gave_up = asyncio.ensure_future(self._gave_up.wait())
        try:
            await asyncio.wait((reading, gave_up), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reading, gave_up):
                task.cancel()
            await asyncio.gather(reading, gave_up, return_exceptions=True)
        return reading.result() if not reading.cancelled() else None

    def abort(self) -> None:
        pass  # plain ASGI offers no way to drop a connection (see the class's note)

    async def finish(self) -> None:
        if self._writer is None:
            return
        if not self._broken:  # what the call said last (a clear, a goodbye's mark) goes out
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.join(), FLUSH_TIMEOUT_S)
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer


async def _wait_for_disconnect(websocket: WebSocket, receiver: Receiver | None) -> int | None:
    """Read ASGI messages until the disconnect, handing data to `receiver`."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return message.get("code")
            if receiver is not None:
                text = message.get("text")
                receiver(text.encode() if text is not None else message.get("bytes") or b"")
    except (WebSocketDisconnect, RuntimeError):
        return None  # the socket is gone, as a hang-up
