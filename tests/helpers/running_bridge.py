"""Run the real bridge under uvicorn on a loopback port, backed by the shipped local agent."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import uvicorn
from fastapi import FastAPI
from twilio.http import HttpClient

from bridge.app import create_app
from bridge.draining_server import server_config
from bridge.local_agent import AgentOptions, LocalAgent
from bridge.records.model import CallRecord
from bridge.settings import Settings, load_settings

T = TypeVar("T")

AUTH_TOKEN = "integration-test-auth-token"


@dataclass
class RunningBridge:
    base_url: str
    app: FastAPI
    settings: Settings
    agent: LocalAgent

    @property
    def webhook_url(self) -> str:
        return self.base_url + "/voice"

    @property
    def stream_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/media-stream"


async def stored_record(bridge: RunningBridge, call_sid: str, timeout: float = 5.0) -> CallRecord:
    """The call's record, once the bridge has written it (its last act for the call)."""
    deadline = time.monotonic() + timeout
    while (record := await bridge.app.state.store.get(call_sid)) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"no record of call {call_sid} after {timeout} s")
        await asyncio.sleep(0.01)
    return record


async def wait_until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    """Poll a cheap condition until it holds; fail the test if it does not within `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


async def eventually(
    check: Callable[[], Awaitable[T]], timeout: float, what: str, every: float = 0.05
) -> T:
    """Poll an async check (a request, a query) until it returns something truthy; that
    value. Fail the test if it does not within `timeout`."""
    deadline = time.monotonic() + timeout
    while not (value := await check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)
    return value


@contextlib.asynccontextmanager
async def serve_app(
    app: FastAPI, settings: Settings, sock: socket.socket, **server_options: object
) -> AsyncIterator[None]:
    """`server_options` override uvicorn's (e.g. ws="websockets-sansio": plain ASGI)."""
    options = {"log_level": "warning", **server_options}
    server = uvicorn.Server(server_config(app, settings, **options))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_until(lambda: server.started or task.done(), 10, "uvicorn to start")
        if task.done():
            task.result()
        yield
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def running_bridge(
    agent_options: AgentOptions | None = None,
    *,
    agent: LocalAgent | None = None,
    twilio_http: HttpClient | None = None,
    socket_options: Sequence[tuple[int, int, int]] = (),
    server_options: Mapping[str, object] | None = None,
    **settings: object,
) -> AsyncIterator[RunningBridge]:
    """The bridge app on 127.0.0.1:<free port>, signatures on, talking to a local agent.

    `settings` override the bridge's settings (e.g. realtime_dialect="beta"); the agent is
    started here unless one is given. `twilio_http` stands in for Twilio's REST API.
    `socket_options` are set on the listening socket (accepted ones inherit them);
    `server_options` override uvicorn's.
    """
    own_agent = agent is None
    agent = agent or LocalAgent(agent_options)
    if own_agent:
        await agent.start("127.0.0.1", 0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for option in socket_options:
        sock.setsockopt(*option)
    sock.bind(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    values: dict[str, object] = {
        "public_url": base_url,
        "twilio_auth_token": AUTH_TOKEN,
        "realtime_url": agent.url + "?model=gpt-realtime",
        "call_db_path": ":memory:",  # each bridge its own records, nothing left behind
        "_env_file": None,
    }
    values.update(settings)
    config = load_settings(**values)
    app = create_app(config, twilio_http=twilio_http)
    try:
        async with serve_app(app, config, sock, **(server_options or {})):
            yield RunningBridge(base_url, app, config, agent)
    finally:
        sock.close()
        if own_agent:
            await agent.stop()
