"""What the load test's caller and stand-in agent share: the frame marker and the clock.

Every frame carries (call id, sequence number, CLOCK_MONOTONIC send time) in its first 18
bytes, so the receiving process can time it and check its order.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from collections.abc import Coroutine
from typing import Any

MARKER = struct.Struct("<IIdH")  # call id, sequence, send time (monotonic s), pad: 18 bytes
MARKER_B64 = 24  # its base64 length
TAIL_B64 = base64.b64encode(b"\xff" * 142).decode()  # the rest of the 160-byte frame
# Transcoding runs (the bridge speaks PCM16 24 kHz to the stand-in): audio cannot carry a
# marker through a resampler, so frames are matched by their index in the call instead, and
# the stand-in learns the call from this handshake header (REALTIME_HEADERS: {call_sid}).
CALL_HEADER = "X-Load-Call"
PCM16_DELTA_B64 = base64.b64encode(
    b"".join(int(8000 * ((i % 55) / 27.5 - 1)).to_bytes(2, "little", signed=True)
             for i in range(480))
).decode()  # 20 ms of a 436 Hz sawtooth at 24 kHz  # fmt: skip
TICK_S = 0.020
SLOTS = 5  # calls are spread over this many phases of the 20 ms clock, as real ones are
BACKGROUND: set[asyncio.Future] = set()  # sends in flight, kept referenced


def marker_b64(call: int, seq: int) -> str:
    return base64.b64encode(MARKER.pack(call, seq, time.monotonic(), 0)).decode()


def call_of(call_sid: str) -> int:
    """The call id in a load-test CallSid (CA + 32 digits)."""
    return int(call_sid[2:])


def read_marker(payload_b64: str) -> tuple[int, int, float]:
    """(call, sequence, send time) of a frame."""
    call, seq, sent, _ = MARKER.unpack(base64.b64decode(payload_b64[:MARKER_B64]))
    return call, seq, sent


class Arrivals:
    """The frames one end received of one call: how many, in what order, how late."""

    def __init__(self) -> None:
        self.received = 0
        self.reordered = 0
        self.gaps = 0
        self.last_seq = -1
        self.latencies: list[float] = []  # ms, frames sent from t0 on
        self.received_at: list[float] = []  # transcoding runs: when each frame came

    def marked(self, seq: int, sent: float, now: float, t0: float, ours: bool = True) -> None:
        """A frame carrying its marker (`ours`: it names this call)."""
        self.received += 1
        if not ours or seq <= self.last_seq:
            self.reordered += 1
        elif seq != self.last_seq + 1:
            self.gaps += seq - self.last_seq - 1
        self.last_seq = max(seq, self.last_seq)
        if sent >= t0:
            self.latencies.append(round((now - sent) * 1000, 3))

    def unmarked(self, now: float) -> None:
        """A frame whose marker a resampler erased: matched by its index later."""
        self.received += 1
        self.received_at.append(now)

    def results(self) -> dict:
        return {
            "received": self.received,
            "reordered": self.reordered,
            "gaps": self.gaps,
            "latencies": self.latencies,
            "received_at": self.received_at,
        }


def background(send: Coroutine[Any, Any, None]) -> None:
    """Send without waiting: one slow socket must not hold the shared ticker."""
    future = asyncio.ensure_future(send)
    BACKGROUND.add(future)
    future.add_done_callback(_settled)


def _settled(future: asyncio.Future) -> None:
    BACKGROUND.discard(future)
    if not future.cancelled():
        future.exception()  # a send to a closed socket: retrieved, not reported
