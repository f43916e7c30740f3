"""The WebSocket server: accepts Realtime clients and gives each its own AgentSession."""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from types import TracebackType

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .agent_options import AgentOptions
from .session import AgentSession

log = logging.getLogger(__name__)

REALTIME_PATH = "/v1/realtime"
# input_audio_buffer.append takes up to 15 MiB of audio, i.e. ~20 MiB of base64 plus JSON.
MAX_MESSAGE_BYTES = 24 * 1024 * 1024


class LocalAgent:
    """A Realtime-protocol server that answers every caller turn with the caller's own audio."""

    def __init__(self, options: AgentOptions | None = None) -> None:
        self.options = options or AgentOptions()
        # Every session ever accepted, in order of acceptance (closed ones stay).
        self.sessions: list[AgentSession] = []
        # While true, WebSocket handshakes are answered with HTTP 503 (the backend is down);
        # settable at any time, it does not touch sessions already open.
        self.refuse_connections = False
        self.refused = 0  # handshakes refused so far
        # While true, new connections are accepted and then get no word at all (a hung
        # backend: no session.created, nothing answered); they are not counted as sessions.
        self.hang_new_sessions = False
        self.hung = 0  # such connections so far
        self.hung_open = 0  # ... and how many of them the client has not closed yet
        self._server: Server | None = None
        self._url: str | None = None
        self._session_added = asyncio.Condition()
        self._auto_drop_spent = False  # drop_after_ms drops one session per agent

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 = any free port); returns the ws:// URL to connect to."""
        if self._server is not None:
            raise RuntimeError("local agent already started")
        # Any path is accepted (gateways and Azure use their own); REALTIME_PATH is advertised.
        self._server = await serve(
            self._handle,
            host,
            port,
            max_size=MAX_MESSAGE_BYTES,
            process_request=self._process_request,
        )
        bound_port = self._server.sockets[0].getsockname()[1]
        public_host = "127.0.0.1" if host in ("", "0.0.0.0") else host
        public_host = "[::1]" if public_host == "::" else public_host
        if ":" in public_host and not public_host.startswith("["):
            public_host = f"[{public_host}]"
        self._url = f"ws://{public_host}:{bound_port}{REALTIME_PATH}"
        return self._url

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("local agent not started")
        return self._url

    async def stop(self) -> None:
        """Close every session (1001 going away) and the listening socket."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close(close_connections=True)
        await server.wait_closed()

    async def wait_for_session(self, index: int = 0, timeout: float = 5.0) -> AgentSession:
        """The ``index``-th accepted session, waiting up to ``timeout`` s for it to connect.

        Indexes count every session this agent ever accepted (closed ones included, refused
        handshakes not), so ``wait_for_session(len(agent.sessions))`` awaits the next one.
        """
        async with asyncio.timeout(timeout), self._session_added:
            await self._session_added.wait_for(lambda: len(self.sessions) > index)
        return self.sessions[index]

    async def __aenter__(self) -> LocalAgent:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if not self.refuse_connections:
            return None
        self.refused += 1
        log.info("local agent refused a connection (refuse_connections is set)")
        return connection.respond(
            HTTPStatus.SERVICE_UNAVAILABLE, "The local agent is refusing connections.\n"
        )

    def _claim_auto_drop(self) -> bool:
        """True for the first session to reach ``drop_after_ms``, False for any later one."""
        if self._auto_drop_spent:
            return False
        self._auto_drop_spent = True
        return True

    async def _handle(self, connection: ServerConnection) -> None:
        if self.hang_new_sessions:
            await self._hang(connection)
            return
        session = AgentSession(connection, self.options, claim_auto_drop=self._claim_auto_drop)
        self.sessions.append(session)
        async with self._session_added:
            self._session_added.notify_all()
        await session.run()

    async def _hang(self, connection: ServerConnection) -> None:
        self.hung += 1
        self.hung_open += 1
        log.info("local agent is hanging a new session (hang_new_sessions is set)")
        try:
            async for _ in connection:
                pass  # read, so the client's sends never block, and never answered
        except ConnectionClosed:
            pass
        finally:
            self.hung_open -= 1


async def run_agent(host: str, port: int, options: AgentOptions | None = None) -> None:
    """Serve until cancelled (the CLI and ``python -m bridge.local_agent`` use this)."""
    agent = LocalAgent(options)
    url = await agent.start(host, port)
    log.info("local agent listening on %s", url)
    try:
        await asyncio.Future()  # forever; cancellation is the way out
    finally:
        await agent.stop()
