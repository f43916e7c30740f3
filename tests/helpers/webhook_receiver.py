"""A post-call webhook receiver on a loopback port, as an operator's would be: it verifies
each post's Standard Webhooks signature with the reference library, and can be told to
fail its first posts or to never answer."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from standardwebhooks import Webhook, WebhookVerificationError

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes, base64


@dataclass
class WebhookReceiver:
    url: str
    fail_first: int = 0  # answer 503 to this many posts first
    hang: bool = False  # never answer
    attempts: list[str] = field(default_factory=list)  # webhook-id of every post
    arrived_at: list[float] = field(default_factory=list)  # when each came (monotonic)
    verified: list[dict[str, Any]] = field(default_factory=list)  # bodies that verified
    refused: list[str] = field(default_factory=list)  # why a post did not verify
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.attempts.append(headers.get("webhook-id", ""))
        self.arrived_at.append(time.monotonic())
        self.arrived.set()
        if self.hang:
            await asyncio.Event().wait()
        if len(self.attempts) <= self.fail_first:
            status = 503
        else:
            try:
                self.verified.append(Webhook(SECRET).verify(body, headers))
                status = 204
            except WebhookVerificationError as exc:
                self.refused.append(str(exc))
                status = 400
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@contextlib.asynccontextmanager
async def webhook_receiver(**behaviour: Any) -> AsyncIterator[WebhookReceiver]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    receiver = WebhookReceiver(f"http://127.0.0.1:{sock.getsockname()[1]}/calls", **behaviour)
    config = uvicorn.Config(receiver, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield receiver
    finally:
        server.should_exit = True
        server.force_exit = True  # a hanging handler must not keep the test waiting
        await asyncio.wait_for(task, 10)
        sock.close()
