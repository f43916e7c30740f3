"""A process of simulated Twilio callers for bench/load.py (one asyncio loop, one 20 ms
ticker for all its calls).

Each call opens the media stream, sends `connected` and `start`, then from T0 sends one
20 ms frame per tick (call id, sequence number and send time in its first 18 bytes). It
plays what it receives at real-time pace: a `mark` is echoed when the audio before it has
played, every pending mark at once on `clear`, as Twilio does. It timestamps answer frames
(agent->caller latency) and clears (barge-in latency), and checks their order.

Run: load_caller.py URL FIRST_CALL COUNT T0 SECONDS RESULT_FILE [pcm16]

With LOAD_AUTH_TOKEN set (bench/attack.py: a bridge that checks signatures), each call
first posts the signed voice webhook to LOAD_PUBLIC_URL, as Twilio does, and opens the
stream with the TwiML's parameters and a signed upgrade.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import xml.etree.ElementTree as ET
from collections import deque

import httpx
import orjson
from load_frames import (
    SLOTS,
    TAIL_B64,
    TICK_S,
    Arrivals,
    background,
    marker_b64,
    read_marker,
)
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

DRAIN_S = 1.5


class Call:
    def __init__(self, call: int) -> None:
        self.call = call
        self.sid = f"MZ{call:032d}"
        self.prefix = '{"event":"media","streamSid":"' + self.sid + '","media":{"payload":"'
        self.ws: ClientConnection | None = None
        self.sent = 0
        self.arrivals = Arrivals()
        self.play_end = 0.0
        self.marks: deque[tuple[float, str]] = deque()
        self.clears: list[float] = []
        self.pcm16 = False  # a transcoding run: frames matched by index, not by marker
        self.sent_at: list[float] = []
        self.t0 = 0.0
        self.error = ""

    def frame(self) -> str:
        marker = marker_b64(self.call, self.sent)
        self.sent += 1
        return self.prefix + marker + TAIL_B64 + '"}}'

    async def open(self, url: str) -> None:
        parameters: dict[str, str] = {}
        headers: dict[str, str] = {}
        token = os.environ.get("LOAD_AUTH_TOKEN")
        if token:
            parameters = await self.answered(os.environ["LOAD_PUBLIC_URL"], token)
            signature = RequestValidator(token).compute_signature(url, {})
            headers["X-Twilio-Signature"] = signature
        self.ws = await connect(
            url, compression=None, open_timeout=30, max_size=2**24, additional_headers=headers
        )
        await self.ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1"}))
        start = {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": self.sid,
            "start": {
                "accountSid": "AC" + "0" * 32,
                "streamSid": self.sid,
                "callSid": f"CA{self.call:032d}",
                "tracks": ["inbound"],
                "customParameters": parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
        await self.ws.send(json.dumps(start))

    async def answered(self, public_url: str, token: str) -> dict[str, str]:
        """The signed voice webhook, as Twilio posts it: the TwiML's stream parameters."""
        form = {"CallSid": f"CA{self.call:032d}", "AccountSid": "AC" + "0" * 32,
                "From": "+15550001111", "To": "+15550002222"}  # fmt: skip
        url = public_url + "/voice"
        signature = RequestValidator(token).compute_signature(url, form)
        async with httpx.AsyncClient(timeout=30) as http:
            answer = await http.post(url, data=form, headers={"X-Twilio-Signature": signature})
        answer.raise_for_status()
        return {
            p.get("name", ""): p.get("value", "")
            for p in ET.fromstring(answer.text).iter("Parameter")
        }

    async def receive(self) -> None:
        assert self.ws is not None
        try:
            async for message in self.ws:
                self.handle(orjson.loads(message))
        except ConnectionClosed:
            pass

    def handle(self, event: dict) -> None:
        now = time.monotonic()
        kind = event.get("event")
        if kind == "media":
            if self.pcm16:
                self.arrivals.unmarked(now)
            else:
                call, seq, sent = read_marker(event["media"]["payload"])
                self.arrivals.marked(seq, sent, now, self.t0, ours=call == self.call)
            self.play_end = max(self.play_end, now) + TICK_S
        elif kind == "mark":
            self.marks.append((self.play_end, event["mark"]["name"]))
        elif kind == "clear":
            self.clears.append(now)
            self.play_end = now
            while self.marks:
                self.echo(self.marks.popleft()[1])

    def echo(self, name: str) -> None:
        assert self.ws is not None
        text = '{"event":"mark","streamSid":"' + self.sid + '","mark":{"name":'
        background(self.ws.send(text + json.dumps(name) + "}}"))

    async def tick(self, now: float) -> None:
        if self.ws is None:
            return
        try:
            if self.pcm16:
                self.sent_at.append(time.monotonic())
            await self.ws.send(self.frame())
            while self.marks and self.marks[0][0] <= now:
                self.echo(self.marks.popleft()[1])
        except ConnectionClosed:
            self.ws = None
            self.error = "closed"


async def main(
    url: str, first: int, count: int, t0: float, seconds: float, out: str, pcm16: bool
) -> None:
    calls = [Call(first + i) for i in range(count)]
    for c in calls:
        c.t0, c.pcm16 = t0, pcm16
    opened = await asyncio.gather(*(c.open(url) for c in calls), return_exceptions=True)
    for c, result in zip(calls, opened, strict=True):
        if isinstance(result, BaseException):
            c.ws, c.error = None, f"open: {result!r}"
    receivers = [asyncio.ensure_future(c.receive()) for c in calls if c.ws is not None]
    late = time.monotonic() > t0
    await asyncio.sleep(max(0.0, t0 - time.monotonic()))
    end = t0 + seconds
    # Calls are spread over SLOTS phases of the 20 ms frame clock, as independent calls are.
    slots = [[c for c in calls if c.call % SLOTS == s] for s in range(SLOTS)]
    j = 0
    while True:
        due = t0 + j * TICK_S / SLOTS
        if due >= end:
            break
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.monotonic()
        for c in slots[j % SLOTS]:
            await c.tick(now)
        j += 1
    await asyncio.sleep(DRAIN_S)
    results = {
        str(c.call): {
            **c.arrivals.results(),
            "sent": c.sent,
            "clears": c.clears,
            "sent_at": c.sent_at,
            "error": c.error,
        }
        for c in calls
    }
    with open(out, "wb") as f:
        f.write(orjson.dumps({"late_start": late, "calls": results}))
    stops = []
    for c in calls:
        if c.ws is not None:
            stop = {"event": "stop", "streamSid": c.sid, "stop": {"callSid": f"CA{c.call:032d}"}}
            stops.append(c.ws.send(json.dumps(stop)))
    await asyncio.gather(*stops, return_exceptions=True)
    await asyncio.gather(*(c.ws.close() for c in calls if c.ws), return_exceptions=True)
    for r in receivers:
        r.cancel()


if __name__ == "__main__":
    a = sys.argv
    pcm16 = a[7:] == ["pcm16"]
    asyncio.run(main(a[1], int(a[2]), int(a[3]), float(a[4]), float(a[5]), a[6], pcm16))
