"""Running the app under uvicorn, with a drain on SIGTERM instead of an abrupt stop."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI

from bridge.settings import Settings
from bridge.twilio_socket import MediaWebSocketProtocol

log = logging.getLogger("bridge.draining_server")


def server_config(app: FastAPI, settings: Settings, **overrides: object) -> uvicorn.Config:
    """The uvicorn settings a phone bridge needs; tests use the very same."""
    options: dict[str, object] = {
        "host": settings.host,
        "port": settings.port,
        # Who may say, in X-Forwarded-For, which client a request came from.
        "forwarded_allow_ips": settings.forwarded_allow_ips,
        "log_config": None,  # keep our log format
        "log_level": settings.log_level,
        # Access lines would log callers' numbers from GET webhooks; the app logs each call.
        "access_log": False,
        # Twilio may keep a stream open for hours; pings keep idle proxies from cutting it.
        "ws_ping_interval": 20.0,
        "ws_ping_timeout": 20.0,
        # Twilio's largest message is a `start` with its parameters, a few KiB.
        "ws_max_size": 64 * 1024,
        # The media route's direct lane (bridge.twilio_socket): no queue or task per message.
        "ws": MediaWebSocketProtocol,
        "lifespan": "on",
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)  # type: ignore[arg-type]


class DrainingServer(uvicorn.Server):
    """On the first SIGTERM/SIGINT: readiness fails, new calls hear the busy message, calls
    in progress get SHUTDOWN_GRACE_S to finish, then hear a goodbye; only then does the
    server stop. A second signal stops it at once."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, settings: Settings) -> None:
        super().__init__(config)
        self._app = app
        self._settings = settings
        self._drain: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # What exists once started (the app, its libraries: ~75,000 objects) lives as long
        # as the process. Left to the collector, each full collection walks it all (~30 ms
        # here, a pause every call on the instance would hear); frozen, it is skipped.
        gc.freeze()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain is not None or self._loop is None or self.should_exit:
            super().handle_exit(sig, frame)
            return
        log.warning("%s received: draining before shutdown", signal.Signals(sig).name)
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain = asyncio.create_task(self._drain_then_exit(), name="drain")

    async def _drain_then_exit(self) -> None:
        try:
            await self._app.state.calls.drain(
                self._settings.shutdown_grace_s, self._settings.shutdown_message
            )
        finally:
            self.should_exit = True
