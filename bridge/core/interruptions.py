"""Was it an interruption? The pause that decides (INTERRUPTIONS=confirm).

When the caller starts talking over the assistant, its audio stops at once (Twilio's queue
is cleared), but nothing is cancelled or truncated yet: what the caller had not heard is
held (`PlaybackLedger.hold`), and what the model still sends is held with it. Then:

- the caller's speech ends within `false_interruption_ms` (as the session's voice
  detection places it), and its transcript, if one comes within `TRANSCRIPT_WAIT_S`, is
  empty or only backchannels ("mm-hm", "yeah"): it was not an interruption. The answer
  resumes from the very byte the caller stopped hearing, and the non-turn leaves the
  conversation;
- otherwise it was: the answer is cut where the caller stopped hearing it and cancelled,
  and the caller's turn is answered.

`Pause` holds one such wait and says which it was; the call carries out the verdict.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from bridge.audio import MULAW_RATE
from bridge.core.events import FunctionCallRequested
from bridge.core.playback import HeldChunk

# How long past the end of the caller's speech a transcript is waited for; without one by
# then, how long the speech lasted decides. (The service's transcription runs beside the
# model: usually well within this.)
TRANSCRIPT_WAIT_S = 0.7
# Held audio beyond this (a minute of speech) is not kept: the pause is taken for an
# interruption, so a model that never stops cannot grow the call's memory.
MAX_HELD_BYTES = 60 * MULAW_RATE

# semantic_vad does not wait a fixed silence before it says speech stopped (it judges
# whether the caller is done): a stop is waited for this long past the limit. (Confirming
# works best with server_vad, whose stop comes VAD_SILENCE_MS after the speech.)
SEMANTIC_VAD_SILENCE_S = 1.5

_WORD = re.compile(r"[^\W_]+")


def normal_words(text: str) -> str:
    """A phrase as compared with a transcript: lower case, words only ("Mm-hm." -> "mm hm")."""
    return " ".join(_WORD.findall(text.lower()))


def only_backchannels(transcript: str, backchannels: frozenset[str]) -> bool:
    """The transcript says nothing but backchannels ("Mm-hmm, yeah."), or nothing at all.
    `backchannels` as `normal_words` writes them; a phrase may have several words."""
    words = normal_words(transcript).split()
    longest = max((p.count(" ") + 1 for p in backchannels), default=1)
    i = 0
    while i < len(words):
        for size in range(min(longest, len(words) - i), 0, -1):
            if " ".join(words[i : i + size]) in backchannels:
                i += size
                break
        else:
            return False
    return True


class Verdict(Enum):
    NOT_YET = "not yet"
    RESUME = "resume"  # not an interruption
    INTERRUPTED = "interrupted"


@dataclass
class Pause:
    """One wait for the verdict. Times are monotonic seconds."""

    paused_at: float  # when the assistant was silenced
    began_at: float  # where the caller's speech began (the session's, less its padding)
    limit_s: float  # speech longer than this is an interruption
    # The session says speech stopped only once it has heard this much silence after it:
    # until then, speech that ended in time may still look like it goes on.
    silence_s: float
    wait_for_transcript: bool  # the session transcribes the caller
    held: deque[HeldChunk] = field(default_factory=deque)
    held_bytes: int = 0
    ended_at: float | None = None  # where the caller's speech ended
    ended_heard_at: float | None = None  # when the session said so
    item_id: str | None = None  # the caller's audio item, once committed
    transcript: str | None = None
    # Function calls the held answer made: carried out if it resumes, refused if not.
    function_calls: list[FunctionCallRequested] = field(default_factory=list)

    def hold(self, chunks: list[HeldChunk]) -> bool:
        """Keep more unheard audio; False if it would be more than MAX_HELD_BYTES."""
        for chunk in chunks:
            self.held.append(chunk)
            self.held_bytes += chunk.size
        return self.held_bytes <= MAX_HELD_BYTES

    def speech_ended(self, ended_at: float, now: float) -> None:
        self.ended_at, self.ended_heard_at = ended_at, now

    def verdict(self, now: float, backchannels: frozenset[str]) -> Verdict:
        """What the pause says by `now`."""
        if self.ended_at is None:
            # Still talking past the limit (no stop heard even allowing for the silence
            # the session waits for): a real turn, whatever it turns out to say.
            long = now - self.began_at > self.limit_s + self.silence_s
            return Verdict.INTERRUPTED if long else Verdict.NOT_YET
        if self.ended_at - self.began_at > self.limit_s:
            return Verdict.INTERRUPTED
        if self.transcript is not None:
            if only_backchannels(self.transcript, backchannels):
                return Verdict.RESUME
            return Verdict.INTERRUPTED
        assert self.ended_heard_at is not None
        if self.wait_for_transcript and now - self.ended_heard_at < TRANSCRIPT_WAIT_S:
            return Verdict.NOT_YET
        return Verdict.RESUME  # short, and nothing said otherwise

    def next_decision_at(self) -> float:
        """When the verdict may change with nothing else happening (for the clock)."""
        if self.ended_at is None:
            return self.began_at + self.limit_s + self.silence_s
        assert self.ended_heard_at is not None
        return self.ended_heard_at + TRANSCRIPT_WAIT_S
