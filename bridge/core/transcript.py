"""What was said on a call, as text: the call's transcript, and what carries it into a
fresh Realtime session.

A Realtime session cannot be resumed: after a dropped connection, or before the session
length limit, the bridge opens a new one and replays the conversation as text messages.
The caller's turns come from input transcription; the assistant's from its audio
transcripts, cut to the share of the audio the caller actually heard when a turn was
interrupted.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.core.call_config import DEFAULT_MAX_REPLAY_CHARS


@dataclass(slots=True)
class Turn:
    role: str  # "user" or "assistant"
    item_id: str
    text: str | None = None
    heard_ms: int | None = None  # set when an assistant turn was cut short
    sent_ms: float | None = None
    # When the caller began to say it, or to hear it (monotonic): where it is on the
    # call's recording.
    at: float | None = None

    @property
    def cut(self) -> bool:
        """An assistant turn the caller heard only in part."""
        return (
            self.heard_ms is not None
            and self.sent_ms is not None
            and self.sent_ms > 0
            and self.heard_ms < self.sent_ms
        )

    def heard_text(self) -> str | None:
        """The text as the caller heard it: an interrupted answer is cut in proportion to
        the audio heard, back to a word boundary."""
        if self.text is None or self.heard_ms is None or not self.sent_ms:
            return self.text
        if self.heard_ms >= self.sent_ms:
            return self.text
        cut = int(len(self.text) * self.heard_ms / self.sent_ms)
        words = self.text[:cut].rsplit(" ", 1)[0] if " " in self.text[:cut] else ""
        return words.rstrip(" ,;:") + "…" if words else ""


class Transcript:
    """The turns of one call, in the order the server committed them."""

    def __init__(self, max_replay_chars: int = DEFAULT_MAX_REPLAY_CHARS) -> None:
        self.max_replay_chars = max_replay_chars
        self.turns: list[Turn] = []
        self._by_item: dict[str, Turn] = {}

    def _turn(self, role: str, item_id: str) -> Turn:
        turn = self._by_item.get(item_id)
        if turn is None:
            turn = self._by_item[item_id] = Turn(role, item_id)
            self.turns.append(turn)
        return turn

    def caller_spoke(self, item_id: str, began_at: float | None) -> None:
        """The caller's audio was committed as an item (its transcript may come later);
        they began to say it at `began_at`."""
        turn = self._turn("user", item_id)
        if turn.at is None:
            turn.at = began_at

    def forget(self, item_id: str) -> None:
        """The item is out of the conversation (caller audio that was not a turn)."""
        turn = self._by_item.pop(item_id, None)
        if turn is not None:
            self.turns.remove(turn)

    def caller_transcript(self, item_id: str, text: str) -> None:
        self._turn("user", item_id).text = text

    def assistant_spoke(self, item_id: str) -> None:
        """The first audio of an assistant item: its place in the conversation."""
        self._turn("assistant", item_id)

    def assistant_heard(self, item_id: str, began_at: float) -> None:
        """The caller began to hear an assistant item at `began_at` (its first chunk's
        mark came back). Audio that is no item of the transcript's (keypad tones) is not
        one of its turns."""
        turn = self._by_item.get(item_id)
        if turn is not None and turn.at is None:
            turn.at = began_at

    def assistant_transcript(self, item_id: str, text: str) -> None:
        self._turn("assistant", item_id).text = text

    def assistant_cut(self, item_id: str, heard_ms: int, sent_ms: float) -> None:
        turn = self._turn("assistant", item_id)
        turn.heard_ms, turn.sent_ms = heard_ms, sent_ms

    @property
    def caller_spoke_last(self) -> bool:
        """The caller's last turn has no answer yet."""
        return bool(self.turns) and self.turns[-1].role == "user"

    def replay(self) -> list[tuple[str, str]]:
        """The most recent turns as (role, text), oldest first, to restore as messages."""
        texts: list[tuple[str, str]] = []
        budget = self.max_replay_chars
        for turn in reversed(self.turns):
            text = turn.heard_text()
            if not text:
                continue  # nothing heard, or no transcript (TRANSCRIPTION_MODEL unset)
            budget -= len(text)
            if budget < 0:
                break
            texts.append((turn.role, text))
        return texts[::-1]
