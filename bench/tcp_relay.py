"""The floor under any Python bridge: a TCP relay that parses nothing.

Each caller's connection is spliced to its own connection to the stand-in agent (which then
speaks Twilio's protocol itself, as in the load test's direct run), and bytes are written on
as they are read, in the event loop's read callback, on uvloop as the bridge is. Reading and
writing each message is all it does: what it costs per call-second is what reading and
writing the same messages costs any bridge on this machine, before any WebSocket framing,
JSON or call logic.

Run: tcp_relay.py PORT AGENT_PORT   (used by bench/load.py as the `relay` mode)
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

SPLICING: set[asyncio.Task[None]] = set()  # referenced until done


class Half(asyncio.Protocol):
    """One side of a spliced pair: what it reads, its peer writes."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: Half | None = None
        self.early: list[bytes] = []  # read before the peer was connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.early.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def main(port: int, agent_port: int) -> None:
    loop = asyncio.get_running_loop()

    async def splice(caller: Half) -> None:
        _, agent = await loop.create_connection(Half, "127.0.0.1", agent_port)
        caller.peer, agent.peer = agent, caller
        assert agent.transport is not None
        for data in caller.early:
            agent.transport.write(data)

    def accepted() -> Half:
        caller = Half()
        task = loop.create_task(splice(caller))
        SPLICING.add(task)
        task.add_done_callback(SPLICING.discard)
        return caller

    server = await loop.create_server(accepted, "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2])))
