"""What an unlucky operator's peers and an outsider's replays cost: lines held, paid
sessions opened, and how long a stuck call takes to end and a shutdown to finish.

    .venv/bin/python bench/hostile.py [--repo DIR]

Starts `phone-bridge serve` (from DIR, default this checkout: `python -m bridge serve` run
in DIR, so an older checkout can be measured the same way) with TWILIO_AUTH_TOKEN set and a
stand-in Realtime backend of its own, then, one scenario per server:

- replay: the same signed /voice request posted 5 times (MAX_CONCURRENT_CALLS=5), then a
  stream opened with each answer's parameters: lines held (from /readyz), distinct stream
  tokens minted, Realtime sessions opened, and whether a real caller then hears busy;
- idle upgrades: 5 signed WebSocket upgrades that never send `start`: whether a real
  caller then gets a line, and how long the idle sockets stay open;
- silent backend: a backend that accepts the socket and never speaks (RECONNECT_BUDGET_S=4):
  how long the caller waits in silence before the stream is closed (the apology), and how
  many sockets the bridge opened to it;
- stalled peer: a backend streaming audio as fast as it can to a Twilio peer that stops
  reading: how long until the call ends and its line is free, then how long SIGTERM takes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hostile-bench-auth-token"
CALL_SID = "CA" + "7" * 32
STREAM_SID = "MZ" + "7" * 32
FRAME = base64.b64encode(b"\xff" * 160).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Backend:
    """A stand-in Realtime service: `normal` answers session.update, `silent` never says a
    word, `firehose` answers and then streams audio deltas as fast as the socket takes."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sessions = 0
        self.open = 0

    async def handle(self, ws: ServerConnection) -> None:
        self.sessions += 1
        self.open += 1
        try:
            if self.mode == "silent":
                async for _ in ws:
                    pass
                return
            await ws.send(json.dumps({"type": "session.created", "session": {}}))
            async for message in ws:
                event = json.loads(message)
                if event.get("type") != "session.update":
                    continue
                session = event.get("session") or {}
                await ws.send(json.dumps({"type": "session.updated", "session": session}))
                if self.mode == "firehose":
                    await self.firehose(ws)
        except ConnectionClosed:
            pass
        finally:
            self.open -= 1

    @staticmethod
    async def firehose(ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "response.created", "response": {"id": "r1"}}))
        delta = base64.b64encode(b"\xff" * 8000).decode()  # 1 s of audio per delta
        for _ in range(100_000):
            await ws.send(
                json.dumps(
                    {
                        "type": "response.output_audio.delta",
                        "response_id": "r1",
                        "item_id": "a1",
                        "output_index": 0,
                        "content_index": 0,
                        "delta": delta,
                    }
                )
            )


class Bridge:
    def __init__(self, repo: Path, backend_port: int, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        full_env = dict(os.environ)
        full_env.update(
            PORT=str(self.port),
            HOST="127.0.0.1",
            PUBLIC_URL=self.base,
            TWILIO_AUTH_TOKEN=TOKEN,
            OPENAI_API_KEY="sk-hostile-bench",
            REALTIME_URL=f"ws://127.0.0.1:{backend_port}/v1/realtime?model=gpt-realtime",
            REALTIME_AUDIO_FORMAT="pcmu",
            TRANSCRIPTION_MODEL="",
            CALL_DB_PATH="",
            LOG_LEVEL="warning",
            LOG_FORMAT="text",
            **env,
        )
        command = [sys.executable, "-m", "bridge", "serve"]
        self.process = subprocess.Popen(
            command, cwd=repo, env=full_env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )

    async def started(self) -> None:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(self.base + "/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise RuntimeError("the bridge did not start")

    async def health(self) -> dict:
        async with httpx.AsyncClient() as http:
            return (await http.get(self.base + "/healthz")).json()

    async def ready(self) -> bool:
        async with httpx.AsyncClient() as http:
            return (await http.get(self.base + "/readyz")).status_code == 200

    async def webhook(self, call_sid: str) -> httpx.Response:
        form = {"CallSid": call_sid, "AccountSid": "AC" + "0" * 32, "From": "+15550001111"}
        form["To"] = "+15550002222"
        url = self.base + "/voice"
        signature = RequestValidator(TOKEN).compute_signature(url, form)
        async with httpx.AsyncClient() as http:
            return await http.post(url, data=form, headers={"X-Twilio-Signature": signature})

    async def stream(self, twiml: str | None, call_sid: str = CALL_SID, **kwargs: object):  # type: ignore[no-untyped-def]
        url = self.base.replace("http://", "ws://") + "/media-stream"
        signature = RequestValidator(TOKEN).compute_signature(url, {})
        ws = await connect(url, additional_headers={"X-Twilio-Signature": signature}, **kwargs)  # type: ignore[arg-type]
        if twiml is None:
            return ws  # an upgrade that never starts
        parameters = {
            p.get("name", ""): p.get("value", "") for p in ET.fromstring(twiml).iter("Parameter")
        }
        start = {
            "accountSid": "AC" + "0" * 32,
            "streamSid": STREAM_SID,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "customParameters": parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        }
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps({"event": "start", "streamSid": STREAM_SID, "start": start}))
        return ws

    async def stop(self) -> float:
        """SIGTERM; seconds until the process exited."""
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        while self.process.poll() is None:
            if time.monotonic() - began > 120:
                self.process.kill()
                return float("inf")
            await asyncio.sleep(0.05)
        return time.monotonic() - began


async def closed_within(ws, timeout: float) -> float | None:  # type: ignore[no-untyped-def]
    began = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            async for _ in ws:
                pass
    except TimeoutError:
        return None
    except ConnectionClosed:
        pass
    return time.monotonic() - began


async def with_backend(mode: str):  # type: ignore[no-untyped-def]
    backend = Backend(mode)
    port = free_port()
    server = await serve(backend.handle, "127.0.0.1", port, max_size=None)
    return backend, port, server


async def replay(repo: Path) -> list[str]:
    backend, port, server = await with_backend("normal")
    bridge = Bridge(repo, port, MAX_CONCURRENT_CALLS="5")
    try:
        await bridge.started()
        answers = [await bridge.webhook(CALL_SID) for _ in range(5)]
        texts = [a.text for a in answers if a.status_code == 200]
        tokens = set()
        for text in texts:
            for p in ET.fromstring(text).iter("Parameter"):
                if p.get("name") == "token":  # twiml.stream_token.StreamTokens.PARAMETER
                    tokens.add(p.get("value"))
        full = not await bridge.ready()
        other = await bridge.webhook("CA" + "8" * 32)
        sockets = [await bridge.stream(text) for text in texts]
        await asyncio.sleep(1.0)
        sessions = backend.sessions
        for ws in sockets:
            await ws.close()
    finally:
        await bridge.stop()
        server.close()
    return [
        f"replay: 5 webhooks for one CallSid -> {len(texts)} answered, {len(tokens)} distinct "
        f"stream tokens, all 5 lines held: {full}; a real caller then gets "
        f"{'a stream' if '<Stream' in other.text else 'BUSY'}; streams opened with each "
        f"answer -> {sessions} Realtime sessions for the one call",
    ]


async def idle_upgrades(repo: Path) -> list[str]:
    _, port, server = await with_backend("normal")
    bridge = Bridge(repo, port, MAX_CONCURRENT_CALLS="5")
    try:
        await bridge.started()
        idle = [await bridge.stream(None) for _ in range(5)]
        await asyncio.sleep(0.5)
        other = await bridge.webhook("CA" + "9" * 32)
        held = (await bridge.health())["active_calls"]
        lasted = await asyncio.gather(*(closed_within(ws, 30) for ws in idle))
    finally:
        await bridge.stop()
        server.close()
    longest = max((t for t in lasted if t is not None), default=None)
    return [
        f"idle upgrades: 5 that never send start -> {held} lines held; a real caller gets "
        f"{'a stream' if '<Stream' in other.text else 'BUSY'}; idle sockets closed after "
        f"{'never (30 s)' if longest is None else f'{longest + 0.5:.1f} s'}",
    ]


async def silent_backend(repo: Path) -> list[str]:
    backend, port, server = await with_backend("silent")
    bridge = Bridge(repo, port, RECONNECT_BUDGET_S="4")
    try:
        await bridge.started()
        ws = await bridge.stream((await bridge.webhook(CALL_SID)).text)
        waited = await closed_within(ws, 60)
    finally:
        stop_s = await bridge.stop()
        server.close()
    return [
        f"silent backend (budget 4 s): the caller waited "
        f"{'60+ s (still open)' if waited is None else f'{waited:.1f} s'} before the apology; "
        f"{backend.sessions} sockets opened to it, {backend.open} still open at the end; "
        f"SIGTERM took {stop_s:.1f} s",
    ]


async def stalled_peer(repo: Path) -> list[str]:
    lines = []
    for sigterm_after_s in (None, 1.0):
        _, port, server = await with_backend("firehose")
        bridge = Bridge(repo, port, SHUTDOWN_GRACE_S="5")
        stop_s = None
        try:
            await bridge.started()
            ws = await bridge.stream((await bridge.webhook(CALL_SID)).text, max_size=None)
            ws.transport.pause_reading()  # and never reads again
            stopped_at = time.monotonic()
            if sigterm_after_s is not None:
                await asyncio.sleep(sigterm_after_s)
                stop_s = await bridge.stop()
                lines.append(
                    f"stalled peer, SIGTERM {sigterm_after_s:g} s after it stopped reading "
                    f"(SHUTDOWN_GRACE_S=5): the process exited after "
                    f"{'over 120 s (killed)' if stop_s == float('inf') else f'{stop_s:.1f} s'}"
                )
                continue
            ended = None
            while time.monotonic() - stopped_at < 90:
                if (await bridge.health())["active_calls"] == 0:
                    ended = time.monotonic() - stopped_at
                    break
                await asyncio.sleep(0.1)
            lines.append(
                f"stalled peer: the call ended and freed its line "
                f"{'never (90 s)' if ended is None else f'{ended:.1f} s'} after the peer "
                "stopped reading"
            )
        finally:
            if stop_s is None:
                await bridge.stop()
            server.close()
    return lines


async def main(repo: Path) -> None:
    print(f"bridge code from {repo}")
    for scenario in (replay, idle_upgrades, silent_backend, stalled_peer):
        for line in await scenario(repo):
            print(line, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="the checkout whose bridge runs")
    asyncio.run(main(parser.parse_args().repo.resolve()))
