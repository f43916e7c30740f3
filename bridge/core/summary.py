"""What a call reports: as it happens (`CallObserver`, for metrics), and when asked
(`CallSummary`, for records and the console). Nothing outside the core reads its state
any other way."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from bridge.core.actions import Ending
from bridge.core.timeline import TimelineEntry
from bridge.core.turns import TurnClock
from bridge.usage import CallUsage


class CallObserver(Protocol):
    """What the core reports as it happens; synchronous and cheap, never called per audio
    frame."""

    def turn_answered(self, latency_s: float) -> None: ...
    def turn_heard(self, latency_s: float) -> None: ...
    def barged_in(self, heard_ms: int | None) -> None: ...
    def paused(self, seconds: float, resumed: bool) -> None: ...
    def reconnected(self) -> None: ...
    def rolled_over(self) -> None: ...
    def backend_error(self, code: str) -> None: ...


@dataclass(slots=True, frozen=True)
class Truncation:
    item_id: str
    audio_end_ms: int
    sent_ms: float  # how much of the item had been sent to Twilio


@dataclass(slots=True, frozen=True)
class BargeIn:
    at: float
    cleared: bool  # audio was still queued at Twilio, so a `clear` was sent
    truncations: tuple[Truncation, ...]
    cancelled_response: str | None  # response.cancel sent for it (only without auto-interrupt)


@dataclass(slots=True, frozen=True)
class TranscriptLine:
    role: str  # "caller" or "assistant"
    text: str
    cut: bool = False  # an answer the caller heard only in part
    # When the caller began to say it, or to hear it: s since the stream started (the
    # recording's and the timeline's clock); None if that is not known.
    at: float | None = None


@dataclass(slots=True, frozen=True)
class CallSummary:
    """A call as it stands (or as it ended): who, when, how it went, what was said."""

    call_sid: str
    stream_sid: str
    account_sid: str
    parameters: Mapping[str, str]
    phase: str  # the core's phase, in words ("bridging", "ended", ...)
    started_at: float | None  # monotonic: when the stream's `start` arrived
    turns: tuple[TurnClock, ...]
    barge_ins: tuple[BargeIn, ...]
    reconnects: int
    backend_errors: int
    model: str | None  # as the session reported it
    transcription_model: str | None
    usage: CallUsage
    transcript: tuple[TranscriptLine, ...]
    ending: Ending | None  # None while the call goes on
    timeline: tuple[TimelineEntry, ...] = ()  # what happened when, on the call's clock
    timeline_dropped: int = 0  # moments past the timeline's bound, not kept
