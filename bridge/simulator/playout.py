"""Twilio's outbound playback, modelled without I/O.

Twilio buffers the media the bridge sends and plays it in order at 8 kHz; a `mark` waits in
the same queue and is echoed when playback reaches it (at once when nothing is queued), and
a `clear` drops the queue and echoes every pending mark immediately. This class reproduces
that in continuous time so that a `clear` cuts the playing chunk at the exact byte the
caller had heard, which is what lets the simulator judge a bridge's truncation point.

Every method takes `now` (milliseconds on any monotonic clock; the simulator uses ms since
stream start), first advances playback to `now`, and returns the mark names to echo, in
order. Nothing here sleeps: the async caller sleeps until `next_event_time()` or until a
message arrives.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field

from bridge.audio import MULAW_BYTES_PER_MS

# The bridge's mark names, read as the bridge writes them.
from bridge.wire.twilio import ItemMark, TruncationMark, parse_mark_name


def fallback_item_name(response: int) -> str:
    return f"response-{response}"


@dataclass
class HeardSegment:
    """A stretch of one pushed chunk that the caller heard."""

    start_ms: float
    end_ms: float
    nbytes: int
    group: int  # audio between two marks; resolved to an item through the marks
    response: int
    cut: bool = False  # ended early by a clear


@dataclass
class ClearEvent:
    at_ms: float
    cut_bytes: int  # bytes of the playing chunk heard before the cut
    flushed_bytes: int  # queued audio dropped unheard
    echoed: list[str] = field(default_factory=list)


@dataclass
class TruncationRecord:
    item_id: str
    audio_end_ms: float
    at_ms: float


@dataclass
class _Chunk:
    data: bytes
    group: int
    response: int
    pushed_ms: float


@dataclass
class _Mark:
    name: str


class Playback:
    """Sans-I/O model of Twilio's playback queue for one stream."""

    def __init__(self) -> None:
        self._queue: deque[_Chunk | _Mark] = deque()
        self._head_start = 0.0  # when the chunk at the head of the queue began playing
        self._now = -math.inf
        self._idle_since: float | None = None  # None: nothing played yet
        self._last_push_ms: float | None = None
        # Audio between two consecutive marks forms a group; the mark that closes it names
        # the item it belongs to. Audio can be heard before its mark arrives, so segments
        # record the group and item names are resolved when asked for.
        self._group = 0
        self._group_has_audio = False
        self._group_item: dict[int, str] = {}
        self._cleared_groups: list[int] = []  # unnamed groups cut by the last clear
        self._auto_response = 0
        self.segments: list[HeardSegment] = []
        self.heard_audio = bytearray()
        self.clears: list[ClearEvent] = []
        self.truncations: list[TruncationRecord] = []
        self.item_end_offsets: dict[str, int] = {}
        self.pushed_bytes_by_response: Counter[int] = Counter()
        self.first_push_ms_by_response: dict[int, float] = {}  # its first audio arrived
        self.heard_bytes_by_response: Counter[int] = Counter()
        self.unheard_bytes_by_response: Counter[int] = Counter()  # flushed or left at hang-up
        self.marks_pushed = 0
        self.marks_echoed = 0

    # ----- inputs -------------------------------------------------------------------------

    def push_audio(self, data: bytes, now: float, response: int | None = None) -> list[str]:
        """Queue bridge audio. `response` tags it for the report; by default a new response
        starts whenever audio arrives into an empty queue."""
        echoed = self.advance(now)
        now = self._now
        if not data:
            return echoed
        if response is None:
            if not self._queue:
                self._auto_response += 1
            response = self._auto_response
        if not self._queue:
            # An idle line starts playing new audio at once.
            self._head_start = now
            self._idle_since = None
        self._queue.append(_Chunk(bytes(data), self._group, response, now))
        self._group_has_audio = True
        self._last_push_ms = now
        self.pushed_bytes_by_response[response] += len(data)
        self.first_push_ms_by_response.setdefault(response, now)
        return echoed

    def push_mark(self, name: str, now: float) -> list[str]:
        echoed = self.advance(now)
        self.marks_pushed += 1
        parsed = parse_mark_name(name)
        if isinstance(parsed, TruncationMark):
            self.truncations.append(TruncationRecord(parsed.item_id, parsed.audio_end_ms, now))
            # Audio cut by the clear with no item mark after it yet belongs to the item the
            # bridge says it truncated.
            for group in self._cleared_groups:
                self._group_item.setdefault(group, parsed.item_id)
            self._cleared_groups = []
        else:
            if isinstance(parsed, ItemMark):
                if self._group_has_audio:
                    self._group_item[self._group] = parsed.item_id
                self.item_end_offsets[parsed.item_id] = parsed.end
            # Any other name closes the group unnamed: its audio falls back to its response.
            self._close_group()
            self._cleared_groups = []
        if self._queue:
            self._queue.append(_Mark(name))
        else:
            echoed.append(name)
            self.marks_echoed += 1
        return echoed

    def clear(self, now: float) -> list[str]:
        """Flush the queue: the playing chunk stops at the byte reached at `now`, pending
        marks are echoed immediately."""
        echoed = self.advance(now)
        now = self._now
        if self._queue:
            self._idle_since = now  # a clear of an empty queue changes nothing audible
        cut, flushed, pending = self._drop_queue(now)
        if self._group_has_audio and self._group not in self._group_item:
            self._cleared_groups = [self._group]
        self._close_group()
        self.marks_echoed += len(pending)
        self.clears.append(ClearEvent(now, cut, flushed, list(pending)))
        return echoed + pending

    def advance(self, now: float) -> list[str]:
        """Play up to `now`; return the marks reached on the way."""
        if now < self._now:
            now = self._now  # a clock never runs backwards; tolerate jitter between callers
        self._now = now
        echoed: list[str] = []
        played = False
        while self._queue:
            head = self._queue[0]
            if isinstance(head, _Mark):
                self._queue.popleft()
                echoed.append(head.name)
                continue
            end = self._head_start + len(head.data) / MULAW_BYTES_PER_MS
            if end > now:
                break
            self._queue.popleft()
            self._record(head, self._head_start, len(head.data))
            self._head_start = end
            played = True
        if played and not self._queue:
            self._idle_since = self._head_start  # the end of the last chunk played
        self.marks_echoed += len(echoed)
        return echoed

    def finish(self, now: float) -> None:
        """End of call: what was still queued was never heard, and no mark is echoed."""
        self.marks_echoed -= len(self.advance(now))  # reached too late: nobody echoes them
        now = self._now
        self._drop_queue(now)
        self._idle_since = now

    # ----- queries ------------------------------------------------------------------------

    @property
    def is_playing(self) -> bool:
        """True while audio is queued (as of the last call that passed `now`)."""
        return bool(self._queue)

    @property
    def last_push_ms(self) -> float | None:
        return self._last_push_ms

    def idle_since(self) -> float | None:
        """When the queue last became empty; None while audio is queued or before any."""
        return None if self._queue else self._idle_since

    def next_event_time(self) -> float | None:
        """When the next queued mark is reached, else when the queue drains; None if idle."""
        t = self._head_start
        for entry in self._queue:
            if isinstance(entry, _Mark):
                return t
            t += len(entry.data) / MULAW_BYTES_PER_MS
        return t if self._queue else None

    def heard_bytes_for_response(self, response: int, now: float) -> int:
        """Bytes of a response heard so far, counting the part of the playing chunk."""
        total = self.heard_bytes_by_response.get(response, 0)
        if self._queue and now > self._head_start:
            head = self._queue[0]
            if isinstance(head, _Chunk) and head.response == response:
                total += min(len(head.data), self._bytes_at(now))
        return total

    def item_of(self, segment: HeardSegment) -> str:
        return self._group_item.get(segment.group) or fallback_item_name(segment.response)

    def heard_by_item(self) -> dict[str, int]:
        """Heard bytes per assistant item (mark-named, or `response-N` when unnamed)."""
        heard: dict[str, int] = {}
        for segment in self.segments:
            item = self.item_of(segment)
            heard[item] = heard.get(item, 0) + segment.nbytes
        return heard

    # ----- internals ----------------------------------------------------------------------

    def _bytes_at(self, now: float) -> int:
        # Continuous time: 8 bytes per ms since the chunk began, floored to whole samples.
        return max(0, math.floor((now - self._head_start) * MULAW_BYTES_PER_MS + 1e-9))

    def _record(self, chunk: _Chunk, start: float, nbytes: int, cut: bool = False) -> None:
        self.segments.append(
            HeardSegment(
                start_ms=start,
                end_ms=start + nbytes / MULAW_BYTES_PER_MS,
                nbytes=nbytes,
                group=chunk.group,
                response=chunk.response,
                cut=cut,
            )
        )
        self.heard_audio += chunk.data[:nbytes]
        self.heard_bytes_by_response[chunk.response] += nbytes

    def _drop_queue(self, now: float) -> tuple[int, int, list[str]]:
        """Empty the queue at `now`: the playing chunk is heard up to `now`, the rest is lost.

        Returns (bytes heard of the playing chunk, bytes dropped unheard, pending marks)."""
        cut = flushed = 0
        pending: list[str] = []
        playing = True  # after advance(), the head of a non-empty queue is a playing chunk
        while self._queue:
            entry = self._queue.popleft()
            if isinstance(entry, _Mark):
                pending.append(entry.name)
                continue
            heard = min(len(entry.data), self._bytes_at(now)) if playing else 0
            playing = False
            if heard:
                cut = heard
                self._record(entry, self._head_start, heard, cut=True)
            unheard = len(entry.data) - heard
            flushed += unheard
            self.unheard_bytes_by_response[entry.response] += unheard
        return cut, flushed, pending

    def _close_group(self) -> None:
        if self._group_has_audio:
            self._group += 1
            self._group_has_audio = False
