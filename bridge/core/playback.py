"""What the caller has heard of the assistant, to the byte: the playback ledger.

Every piece of assistant audio goes to Twilio as one `media` message followed by a mark
named ``"{item_id}:{end_byte_offset}"`` (`mark_name`). Twilio echoes a mark once the audio
before it has played, so an echoed mark proves the caller heard that item up to that
offset. While a chunk is playing, the caller has heard part of it: its playback began when
the previous mark came back (or when it was sent, if Twilio's queue had run dry), and
mu-law plays at exactly 8 bytes per millisecond. That estimate is capped at the chunk's own
size, so it never runs past audio that was not confirmed: a model that stalls mid-answer
cannot make it overshoot, unlike a wall-clock estimate from the start of the item. A
`clear` flushes the queue and makes Twilio echo every pending mark at once; those echoes
are forgotten with the queue, so they never count as playback.

The ledger counts in the mu-law bytes Twilio plays, whatever the backend speaks: each
mu-law byte stands for exactly 1/8 ms of the item's own audio.
"""

from __future__ import annotations

import base64
from collections import deque
from dataclasses import dataclass

from bridge.audio import MULAW_BYTES_PER_MS, MULAW_RATE

# The bridge's informational mark after a clear: where it cut each item.
TRUNCATION_MARK_PREFIX = "truncated:"
# Audio the bridge makes itself (keypad tones) is played as items named so; the sound
# played while a tool runs, so.
LOCAL_ITEM_PREFIX = "bridge-audio-"
FILLER_ITEM_PREFIX = "bridge-filler-"


def mark_name(item_id: str, end: int) -> str:
    """The mark after a chunk of `item_id` that ends `end` bytes into the item."""
    return item_id + ":" + str(end)


def truncation_mark_name(item_id: str, audio_end_ms: int) -> str:
    return TRUNCATION_MARK_PREFIX + item_id + ":" + str(audio_end_ms)


@dataclass(frozen=True, slots=True)
class ItemMark:
    """A parsed `mark_name`: the audio before it belongs to `item_id`, ending `end` bytes in."""

    item_id: str
    end: int


@dataclass(frozen=True, slots=True)
class TruncationMark:
    """A parsed `truncation_mark_name`: the bridge cut `item_id` at `audio_end_ms`."""

    item_id: str
    audio_end_ms: int


def parse_mark_name(name: str) -> ItemMark | TruncationMark | None:
    """What a mark the bridge sent says (for whoever plays Twilio's side); None if it is
    not one of the bridge's."""
    truncation = name.startswith(TRUNCATION_MARK_PREFIX)
    rest = name[len(TRUNCATION_MARK_PREFIX) :] if truncation else name
    item_id, sep, number = rest.rpartition(":")
    if not sep or not item_id or not number.isdigit() or not number.isascii():
        return None
    return TruncationMark(item_id, int(number)) if truncation else ItemMark(item_id, int(number))


@dataclass(slots=True)
class Chunk:
    """Audio sent to Twilio whose mark has not come back."""

    mark: str  # as Twilio echoes it back
    item_id: str
    end: int  # byte offset within the item once this chunk has played
    size: int
    sent_at: float
    payload: str = ""  # the audio as sent (base64 mu-law): a reference, never decoded here


@dataclass(slots=True)
class HeldChunk:
    """Audio of an item the caller has not heard, kept back while they may be interrupting
    (INTERRUPTIONS=confirm): what was queued at Twilio when it was cleared, and what
    arrived since. Sent again, in order, if it was not an interruption."""

    item_id: str
    payload: str  # base64 mu-law
    size: int


@dataclass(slots=True)
class Item:
    """An assistant item with audio not yet heard in full (or not yet complete)."""

    item_id: str
    response_id: str
    content_index: int
    sent: int = 0
    heard: int = 0
    audio_done: bool = False
    # From a session since lost or replaced: still playing, but unknown to the current one.
    orphaned: bool = False
    # Audio the bridge made itself (keypad tones, a tool's filler): no model item to truncate.
    local: bool = False
    filler: bool = False  # the sound played while a tool runs (local too)
    held: int = 0  # bytes held back while the caller may be interrupting

    @property
    def heard_in_full(self) -> bool:
        return self.audio_done and self.heard == self.sent and not self.held


class PlaybackLedger:
    """The audio queued at Twilio and what of each item the caller has heard."""

    __slots__ = (
        "_items",
        "_last_echo_at",
        "_local_items",
        "_pending",
        "_pending_marks",
        "echoes_owed",
    )

    def __init__(self) -> None:
        self._items: dict[str, Item] = {}
        self._pending: deque[Chunk] = deque()  # sent to Twilio, mark not echoed yet
        self._pending_marks: set[str] = set()
        self._last_echo_at = float("-inf")
        self._local_items = 0
        # Mark echoes a clear makes Twilio send at once: a burst, not a flood.
        self.echoes_owed = 0

    # --- sending ---------------------------------------------------------------------------

    def item(self, item_id: str) -> Item | None:
        return self._items.get(item_id)

    def new_item(self, item_id: str, response_id: str, content_index: int) -> Item:
        item = self._items[item_id] = Item(item_id, response_id, content_index)
        return item

    def new_local_item(self, filler: bool = False) -> Item:
        """An item for audio the bridge made itself, complete from the start."""
        self._local_items += 1
        prefix = FILLER_ITEM_PREFIX if filler else LOCAL_ITEM_PREFIX
        item_id = f"{prefix}{self._local_items}"
        item = Item(item_id, "", 0, audio_done=True, local=True, filler=filler)
        self._items[item_id] = item
        return item

    def sent(self, item: Item, size: int, now: float, payload: str = "") -> str:
        """`size` more bytes of `item` go to Twilio now; the name of the mark after them."""
        item.sent += size
        mark = mark_name(item.item_id, item.sent)
        self._pending.append(Chunk(mark, item.item_id, item.sent, size, now, payload))
        self._pending_marks.add(mark)
        return mark

    def resent(self, chunk: HeldChunk, now: float) -> str | None:
        """A held chunk goes to Twilio after all; its mark (None: its item is gone)."""
        item = self._items.get(chunk.item_id)
        if item is None:
            return None
        item.held -= chunk.size
        return self.sent(item, chunk.size, now, chunk.payload)

    def audio_done(self, item_id: str) -> None:
        item = self._items.get(item_id)
        if item is not None:
            item.audio_done = True
            self._forget_if_heard(item)

    # --- echoes ----------------------------------------------------------------------------

    def is_ours(self, mark: str) -> bool:
        """An echo Twilio owes us: one of our pending marks, or one a clear flushed."""
        if mark in self._pending_marks:
            return True
        if self.echoes_owed:
            self.echoes_owed -= 1
            return True
        return False

    def echoed(self, mark: str, now: float) -> list[Chunk]:
        """A mark came back: it and every chunk queued before it have played (Twilio plays
        in order). The chunks that played, in order; none for a mark a clear flushed,
        which proves nothing."""
        if mark not in self._pending_marks:
            return []  # flushed by a clear (or not ours): nothing was played
        played = []
        while True:
            chunk = self._pending.popleft()
            self._pending_marks.discard(chunk.mark)
            item = self._items.get(chunk.item_id)
            if item is not None:
                item.heard = chunk.end
                self._forget_if_heard(item)
            played.append(chunk)
            if chunk.mark == mark:
                break
        self._last_echo_at = now
        return played

    # --- what is queued --------------------------------------------------------------------

    @property
    def queued(self) -> bool:
        """Audio is queued at Twilio (sent, its mark not back)."""
        return bool(self._pending)

    def queued_s(self) -> float:
        """How long what Twilio still has queued takes to play."""
        return sum(chunk.size for chunk in self._pending) / MULAW_RATE

    def playing_local_audio(self) -> bool:
        """Some of what is queued is the bridge's own keypad tones."""
        items = self._items
        return any(
            (item := items.get(c.item_id)) is not None and item.local and not item.filler
            for c in self._pending
        )

    def playing_filler(self) -> bool:
        """What is queued is a tool's filler sound (nothing else plays while it does)."""
        items = self._items
        return any(
            (item := items.get(c.item_id)) is not None and item.filler for c in self._pending
        )

    def queued_model_audio(self) -> bool:
        """Some of what is queued is the model's (not the bridge's own sounds)."""
        items = self._items
        return any(
            (item := items.get(c.item_id)) is not None and not item.local for c in self._pending
        )

    def items(self) -> list[Item]:
        """Items with audio not heard in full, in the order their audio began."""
        return list(self._items.values())

    # --- a barge-in ------------------------------------------------------------------------

    def clear(self, now: float) -> bool:
        """Twilio's queue is being cleared now: the playing chunk counts as heard up to
        this moment, and the echoes the clear causes are owed. False if nothing was queued."""
        if not self._pending:
            return False
        head = self._pending[0]
        playing = self._items.get(head.item_id)
        if playing is not None:
            playing.heard = self._playing_offset(head, now)
        self.echoes_owed += len(self._pending)
        self._pending.clear()
        self._pending_marks.clear()
        return True

    def hold(self, now: float) -> list[HeldChunk]:
        """Twilio's queue is being cleared now, and what the caller did not hear of the
        model's items is kept to be sent again: the playing chunk from the byte they
        stopped at, the queued ones whole. Each item counts as sent up to what was heard
        (a mark sent again names its true offset), and holds the rest. The bridge's own
        sounds are dropped."""
        pending = list(self._pending)
        self.clear(now)  # the playing chunk counts as heard up to now; echoes owed
        held: list[HeldChunk] = []
        for chunk in pending:
            item = self._items.get(chunk.item_id)
            if item is None or item.local:
                continue
            unheard = chunk.end - max(item.heard, chunk.end - chunk.size)
            if unheard <= 0:
                continue
            # Once per pause, not per frame: only the playing chunk is cut.
            payload = chunk.payload if unheard == chunk.size else _tail(chunk.payload, unheard)
            held.append(HeldChunk(item.item_id, payload, unheard))
        for item_id, item in list(self._items.items()):
            if item.local:
                del self._items[item_id]  # never played again: nothing to wait for
            else:
                item.held += item.sent - item.heard
                item.sent = item.heard
        return held

    def release_held(self) -> None:
        """What was held will never be sent (the pause was an interruption, or is over):
        items count only what was sent."""
        for item in list(self._items.values()):
            item.held = 0
            self._forget_if_heard(item)

    def clear_filler(self, now: float) -> bool:
        """Twilio's queue, holding only a tool's filler, is being cleared: the filler is
        forgotten. False if nothing was queued."""
        cleared = self.clear(now)
        for item_id, item in list(self._items.items()):
            if item.filler:
                del self._items[item_id]
        return cleared

    def forget_items(self) -> None:
        """After a barge-in: nothing more of these items will play."""
        self._items.clear()

    def orphan_items(self) -> None:
        """The session that made these items is gone: they play on, complete as they are,
        but can no longer be truncated on the server."""
        for item in list(self._items.values()):
            item.orphaned = True
            item.audio_done = True  # nothing more of it will arrive
            self._forget_if_heard(item)

    def _playing_offset(self, chunk: Chunk, now: float) -> int:
        """Bytes of `chunk` played by `now`: from the moment it started, capped at its size."""
        started = max(self._last_echo_at, chunk.sent_at)
        # The epsilon keeps float error (0.125 - 0.1 = 0.02499...) from losing a byte.
        played = int((now - started) * MULAW_RATE + 1e-6)
        return chunk.end - chunk.size + min(max(played, 0), chunk.size)

    def _forget_if_heard(self, item: Item) -> None:
        """An item complete and heard in full needs no more accounting: nothing to truncate."""
        if item.heard_in_full:
            del self._items[item.item_id]


def _tail(payload: str, size: int) -> str:
    """The last `size` bytes of base64 audio, as base64."""
    return base64.b64encode(base64.b64decode(payload)[-size:]).decode("ascii")


def play_starts(played: list[Chunk], now: float) -> list[float]:
    """When each chunk a mark's echo at `now` proved played began to play: back to back,
    the last ending now (mu-law plays in real time), none before it was sent."""
    starts = []
    ended = now
    for chunk in reversed(played):
        began = max(ended - chunk.size / MULAW_RATE, chunk.sent_at)
        starts.append(began)
        ended = began
    return starts[::-1]


def heard_ms(item: Item, delay_ms: float = 0.0) -> int:
    """The ms of the item's own audio the caller heard: its mu-law bytes played, less
    `delay_ms` (a resampler's: the model's audio reaches the caller that much later than
    the byte count says)."""
    return max(int(min(item.heard, item.sent) / MULAW_BYTES_PER_MS - delay_ms), 0)


def sent_ms(item: Item) -> float:
    """The ms of the item's audio the model gave: sent to Twilio, or held back."""
    return (item.sent + item.held) / MULAW_BYTES_PER_MS
