"""The call's flight recorder: what happened when, on the call's clock.

A compact log of the moments that explain a call afterwards (turns, answers, barge-ins,
tools, sessions, the end), never of audio frames: each moment is noted once per turn,
answer, item or event, so a call notes a few a second at most. Bounded whatever the call's
length: past MAX_ENTRIES the oldest stay and the newest are counted, except the end,
which is always kept. Nothing here is personal data beyond what the record holds anyway:
keys are counted, never their digits; tools are named, never their arguments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

# ~8 entries a turn: a turn every 5 s for 50 minutes. A record holds them as JSON,
# ~60 bytes each.
MAX_ENTRIES = 5000


class Moment(StrEnum):
    WEBHOOK_ANSWERED = "webhook_answered"  # Twilio's voice webhook got its TwiML
    STREAM_STARTED = "stream_started"
    SESSION_OPENED = "session_opened"  # a Realtime socket opened (detail: restored turns)
    SESSION_CONFIGURED = "session_configured"  # it confirmed its configuration
    SESSION_LOST = "session_lost"  # (detail: why)
    RECONNECTING = "reconnecting"  # an attempt at a new session (detail: its delay)
    ROLLOVER = "rollover"  # a healthy session replaced before the service's limit
    SPEECH_STARTED = "speech_started"  # the caller began to speak (detail: where, call clock)
    SPEECH_STOPPED = "speech_stopped"  # (detail: where their speech ended, call clock)
    KEYS = "keys"  # keys given to the model (detail: how many)
    RESPONSE_CREATED = "response_created"  # (detail: its id)
    AUDIO_SENT = "audio_sent"  # an answer item's first audio went to Twilio (detail: item)
    AUDIO_HEARD = "audio_heard"  # a turn's answer began to play (detail: its latency)
    CLEAR = "clear"  # Twilio's queue was cleared (a barge-in)
    PAUSED = "paused"  # the caller may be interrupting: the answer held where they are
    RESUMED = "resumed"  # it was not an interruption (detail: the pause's length)
    TRUNCATE = "truncate"  # an item cut where the caller stopped hearing (detail: item, ms)
    CANCEL = "cancel"  # a response cancelled
    TOOL_STARTED = "tool_started"  # (detail: the tool's name)
    TOOL_FINISHED = "tool_finished"  # (detail: the tool's name)
    IDLE_PROMPT = "idle_prompt"  # the caller was quiet: the assistant asked for them
    FILLER_STARTED = "filler_started"  # a slow tool: the filler sound began
    FILLER_STOPPED = "filler_stopped"
    GOODBYE = "goodbye"  # the last words were asked for (detail: why the call ends)
    ENDED = "ended"  # (detail: the end reason)


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    at: float  # seconds since the stream started (negative: before it, e.g. the webhook)
    moment: Moment
    detail: str = ""


# The session's voice detection tells of the caller's speech after the fact (its start once
# it is sure, its end after a silence): the entry is when the news came, its detail where
# the speech itself began or ended.
_SPEECH_EDGE = re.compile(r"speech (?:began|ended) at (-?\d+\.\d+) s")


def speech_detail(edge: Literal["began", "ended"], at: float) -> str:
    return f"speech {edge} at {at:.3f} s"


def speech_edge(entry: TimelineEntry) -> float:
    """Where the caller's speech began or ended (a SPEECH_STARTED or SPEECH_STOPPED entry)
    on the call's clock: as its detail says, or when the news came if it does not."""
    found = _SPEECH_EDGE.fullmatch(entry.detail)
    return float(found[1]) if found else entry.at


class Timeline:
    __slots__ = ("_entries", "dropped")

    def __init__(self) -> None:
        self._entries: list[tuple[float, Moment, str]] = []  # (monotonic time, ...)
        self.dropped = 0  # entries past MAX_ENTRIES, not kept

    def note(self, moment: Moment, now: float, detail: str = "") -> None:
        if len(self._entries) < MAX_ENTRIES or moment is Moment.ENDED:
            self._entries.append((now, moment, detail))
        else:
            self.dropped += 1

    def entries(self, started_at: float | None) -> tuple[TimelineEntry, ...]:
        """On the call's clock: seconds since `started_at` (the stream's start), in the
        order they happened."""
        origin = started_at if started_at is not None else 0.0
        ordered = sorted(self._entries, key=lambda entry: entry[0])  # stable: ties keep order
        return tuple(
            TimelineEntry(round(at - origin, 4), moment, detail) for at, moment, detail in ordered
        )
