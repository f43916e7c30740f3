"""Recording stand-in for the Realtime service (or, in direct mode, for the whole bridge).

One process, one 20 ms ticker for every connection. It answers `session.update`, timestamps
every caller frame it receives (the caller wrote call id, sequence number and send time in
the frame's first 18 bytes) and, on a fixed schedule per call, plays answers as
`response.output_audio.delta` events carrying the same kind of marker. Every second answer
is interrupted after 500 ms with `input_audio_buffer.speech_started` (a barge-in).

A connection whose first message is Twilio's `connected` is served in Twilio's own protocol
(media and a mark per chunk, clear): the caller then talks to this process directly (the
no-bridge baseline), or through the parse-nothing relay, with the messages a bridge sends.

Run by bench/load.py: load_agent.py PORT T0 SECONDS RESULT_FILE [pcm16]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import orjson
from load_frames import (
    CALL_HEADER,
    PCM16_DELTA_B64,
    SLOTS,
    TAIL_B64,
    TICK_S,
    Arrivals,
    background,
    call_of,
    marker_b64,
    read_marker,
)
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

PERIOD = 200  # ticks between the starts of two answers (4 s)
ANSWER = 75  # ticks of audio per answer (1.5 s)
BARGE_AT = 25  # an interrupted answer stops after this many ticks (500 ms)
STOPPED_AT = 40  # speech_stopped this many ticks into the answer
DRAIN_S = 2.0


class Conn:
    def __init__(self, ws: ServerConnection, index: int) -> None:
        self.ws = ws
        self.index = index
        self.twilio = False
        self.stream_sid = ""
        self.call: int | None = None
        self.configured = False
        self.arrivals = Arrivals()
        self.out_seq = 0
        self.pending_created: str | None = None
        self.mark_due = False
        self.barges: list[float] = []  # speech_started send times
        self.sent_at: list[float] = []  # transcoding runs: each answer frame's sending


class Agent:
    def __init__(self, t0: float, seconds: float, pcm16: bool) -> None:
        self.t0 = t0
        self.end = t0 + seconds
        self.pcm16 = pcm16
        self.conns: list[Conn] = []

    async def handler(self, ws: ServerConnection) -> None:
        conn = Conn(ws, len(self.conns))
        if self.pcm16:
            assert ws.request is not None
            conn.call = call_of(ws.request.headers[CALL_HEADER])
        self.conns.append(conn)
        try:
            async for message in ws:
                self.receive(conn, message)
        except ConnectionClosed:
            pass

    def receive(self, conn: Conn, message: str | bytes) -> None:
        event = orjson.loads(message)
        kind = event.get("type")
        if kind == "input_audio_buffer.append":
            self.audio(conn, event["audio"])
        elif kind == "session.update":
            conn.configured = True
            msg = {"type": "session.updated", "session": event.get("session") or {}}
            background(conn.ws.send(json.dumps(msg)))
        elif event.get("event") == "media":
            self.audio(conn, event["media"]["payload"])
        elif event.get("event") == "connected":
            conn.twilio = conn.configured = True
        elif event.get("event") == "start":
            conn.stream_sid = event["start"]["streamSid"]

    def audio(self, conn: Conn, payload: str) -> None:
        now = time.monotonic()
        if self.pcm16:
            conn.arrivals.unmarked(now)
            return
        conn.call, seq, sent = read_marker(payload)
        conn.arrivals.marked(seq, sent, now, self.t0)

    def event_text(self, conn: Conn, kind: str, rid: str, delta: str | None = None) -> str:
        if conn.twilio:
            if kind == "delta":
                conn.mark_due = True  # a mark after each chunk, as a bridge sends
                return (
                    '{"event":"media","streamSid":"' + conn.stream_sid + '","media":{"payload":"'
                    + delta + '"}}'
                )  # fmt: skip
            if kind == "speech_started":
                return '{"event":"clear","streamSid":"' + conn.stream_sid + '"}'
            return ""
        if kind == "delta":
            return (
                '{"type":"response.output_audio.delta","response_id":"' + rid + '","item_id":"i'
                + rid + '","output_index":0,"content_index":0,"delta":"' + delta + '"}'
            )  # fmt: skip
        if kind == "created":
            return json.dumps({"type": "response.created", "response": {"id": rid}})
        if kind in ("done", "cancelled"):
            status = "completed" if kind == "done" else "cancelled"
            resp = {"id": rid, "status": status, "output": []}
            return json.dumps({"type": "response.done", "response": resp})
        return json.dumps({"type": "input_audio_buffer." + kind, "item_id": "u" + rid})

    def step(self, conn: Conn, k: int) -> str | None:
        """What this connection sends at tick k, if anything."""
        if conn.call is None or not conn.configured:
            return None
        offset = (conn.call * 37) % PERIOD
        if k < offset:
            return None
        answer, phase = divmod(k - offset, PERIOD)
        rid = f"r{conn.call}_{answer}"
        barged = answer % 2 == 0
        if phase == 0:
            conn.pending_created = self.event_text(conn, "created", rid)
        if barged and phase == BARGE_AT:
            conn.barges.append(time.monotonic())
            return self.event_text(conn, "speech_started", rid)
        if barged and phase == BARGE_AT + 1:
            return self.event_text(conn, "cancelled", rid)
        if barged and phase == STOPPED_AT:
            return self.event_text(conn, "speech_stopped", rid)
        if phase < ANSWER and not (barged and phase > BARGE_AT):
            conn.out_seq += 1
            if self.pcm16:
                conn.sent_at.append(time.monotonic())
                return self.event_text(conn, "delta", rid, PCM16_DELTA_B64)
            return self.event_text(
                conn, "delta", rid, marker_b64(conn.call, conn.out_seq - 1) + TAIL_B64
            )
        if phase == ANSWER and not barged:
            return self.event_text(conn, "done", rid)
        return None

    async def ticker(self) -> None:
        await asyncio.sleep(max(0.0, self.t0 - time.monotonic()))
        j = 0
        while True:
            due = self.t0 + j * TICK_S / SLOTS
            if due >= self.end:
                break
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            k, slot = divmod(j, SLOTS)
            j += 1
            for conn in list(self.conns):
                if conn.call is None or conn.call % SLOTS != slot:
                    continue
                text = self.step(conn, k)
                created = conn.pending_created
                try:
                    if created:
                        conn.pending_created = None
                        await conn.ws.send(created)
                    if text:
                        await conn.ws.send(text)
                    if conn.mark_due:
                        conn.mark_due = False
                        await conn.ws.send(
                            '{"event":"mark","streamSid":"' + conn.stream_sid
                            + f'","mark":{{"name":"m{conn.out_seq}"}}}}'
                        )  # fmt: skip
                except ConnectionClosed:
                    pass

    def results(self) -> dict:
        calls = {}
        for c in self.conns:
            if c.call is None:
                continue
            calls[str(c.call)] = {
                **c.arrivals.results(),
                "sent_answers_frames": c.out_seq,
                "barges": c.barges,
                "sent_at": c.sent_at,
            }
        return {"connections": len(self.conns), "calls": calls}


async def main(port: int, t0: float, seconds: float, out: str, pcm16: bool) -> None:
    agent = Agent(t0, seconds, pcm16)
    async with serve(agent.handler, "127.0.0.1", port, compression=None, max_size=2**24):
        await agent.ticker()
        await asyncio.sleep(max(0.0, agent.end + DRAIN_S - time.monotonic()))
    with open(out, "wb") as f:
        f.write(orjson.dumps(agent.results()))


if __name__ == "__main__":
    a = sys.argv
    asyncio.run(main(int(a[1]), float(a[2]), float(a[3]), a[4], a[5:] == ["pcm16"]))
