"""A call's record, from the summary the call core gives as it ends."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from bridge.core.actions import CallOutcome, Ending
from bridge.core.summary import CallSummary
from bridge.records.model import CallRecord, Recording, TurnTiming
from bridge.usage import PriceTable, TokenCounts
from twiml.answer import PROFILE_PARAMETER

BROWSER_CALLER = "browser"  # the console softphone's From


@dataclass(frozen=True, slots=True)
class CallClock:
    """When the call began, on both clocks: the core's times are monotonic, a record's are
    wall-clock."""

    wall: float
    monotonic: float

    def ms_since_start(self, monotonic: float | None) -> float | None:
        return None if monotonic is None else round((monotonic - self.monotonic) * 1000, 1)


def token_totals(counts: TokenCounts, transcription: TokenCounts) -> dict[str, int]:
    return {
        "text_in": counts.text_in,
        "text_cached": counts.text_cached,
        "audio_in": counts.audio_in,
        "audio_cached": counts.audio_cached,
        "text_out": counts.text_out,
        "audio_out": counts.audio_out,
        "transcription": transcription.total,
    }


def direction_of(parameters: Mapping[str, str]) -> str:
    if parameters.get("From") == BROWSER_CALLER:
        return "browser"
    if parameters.get("Direction", "").startswith("outbound"):
        return "outbound"
    return "inbound"


def record_of(
    summary: CallSummary,
    *,
    clock: CallClock,
    ended_wall: float,
    ending: Ending | None,
    model: str,
    prices: PriceTable,
    recording: Recording | None = None,
) -> CallRecord:
    parameters = summary.parameters
    # Turn times count from the stream's start, as Twilio's media timestamps (and the
    # simulated caller's clock) do, not from the socket's opening a moment before.
    stream = clock if summary.started_at is None else replace(clock, monotonic=summary.started_at)
    turns = tuple(
        TurnTiming(
            index=turn.index,
            caller_stopped_ms=stream.ms_since_start(turn.caller_stopped_at),
            first_audio_sent_ms=stream.ms_since_start(turn.first_audio_sent_at),
            first_audio_heard_ms=stream.ms_since_start(turn.first_audio_heard_at),
            barged_in=turn.barged_in,
            truncated_at_ms=turn.truncated_at_ms,
        )
        for turn in summary.turns
    )
    usage = summary.usage
    return CallRecord(
        call_sid=summary.call_sid,
        stream_sid=summary.stream_sid,
        from_number=parameters.get("From", ""),
        to_number=parameters.get("To", ""),
        profile=parameters.get(PROFILE_PARAMETER),
        direction=direction_of(parameters),
        started_at=clock.wall,
        ended_at=ended_wall,
        outcome=(ending.reason.outcome if ending is not None else CallOutcome.OTHER).value,
        end_reason=ending.description if ending is not None else "cancelled",
        model=model,
        turns=turns,
        barge_ins=len(summary.barge_ins),
        reconnects=summary.reconnects,
        tokens=token_totals(usage.model, usage.transcription),
        cost_usd=usage.cost(prices, model, summary.transcription_model),
        transcript=summary.transcript,
        timeline=summary.timeline,
        timeline_dropped=summary.timeline_dropped,
        recording=recording,
    )
