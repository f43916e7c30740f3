"""What is kept of a call once it is over: its record, built from the call core's state."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from bridge.call import KEYPAD_ITEM_PREFIX, Call
from bridge.records import CallRecord, TranscriptLine, TurnTiming
from bridge.usage import PriceTable, TokenCounts

BROWSER_CALLER = "browser"  # the console softphone's From
_KEYS = re.compile(r"[0-9*#A-D]")


def call_keys(message: str) -> str:
    """The keys in a keypad message (what follows its colon)."""
    return "".join(_KEYS.findall(message.rpartition(":")[2]))


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


def direction_of(parameters: dict[str, str]) -> str:
    if parameters.get("From") == BROWSER_CALLER:
        return "browser"
    if parameters.get("Direction", "").startswith("outbound"):
        return "outbound"
    return "inbound"


def transcript_of(call: Call) -> tuple[TranscriptLine, ...]:
    """Caller turns as transcribed; assistant turns cut to what the caller heard."""
    lines = []
    for turn in call.conversation.turns:
        text = turn.heard_text()
        if not text:
            continue
        if turn.item_id.startswith(KEYPAD_ITEM_PREFIX):
            # Keys may be a PIN or a card number: the record says that keys were pressed.
            text = f"(pressed {len(call_keys(text))} keys)"
        cut = turn.heard_ms is not None and bool(turn.sent_ms) and turn.heard_ms < turn.sent_ms
        role = "caller" if turn.role == "user" else "assistant"
        lines.append(TranscriptLine(role, text, cut))
    return tuple(lines)


def record_of(
    call: Call,
    *,
    clock: CallClock,
    ended_wall: float,
    outcome: str,
    end_reason: str,
    model: str,
    prices: PriceTable,
) -> CallRecord:
    parameters = call.custom_parameters
    transcriber = call.config.session.transcription_model
    # Turn times count from the stream's start, as Twilio's media timestamps (and the
    # simulated caller's clock) do, not from the socket's opening a moment before.
    stream = clock if call.started_at is None else replace(clock, monotonic=call.started_at)
    turns = tuple(
        TurnTiming(
            index=turn.index,
            caller_stopped_ms=stream.ms_since_start(turn.caller_stopped_at),
            first_audio_sent_ms=stream.ms_since_start(turn.first_audio_sent_at),
            first_audio_heard_ms=stream.ms_since_start(turn.first_audio_heard_at),
            barged_in=turn.barged_in,
            truncated_at_ms=turn.truncated_at_ms,
        )
        for turn in call.turns
    )
    return CallRecord(
        call_sid=call.call_sid or "",
        stream_sid=call.stream_sid or "",
        from_number=parameters.get("From", ""),
        to_number=parameters.get("To", ""),
        profile=parameters.get("Profile"),
        direction=direction_of(parameters),
        started_at=clock.wall,
        ended_at=ended_wall,
        outcome=outcome,
        end_reason=end_reason,
        model=model,
        turns=turns,
        barge_ins=len(call.barge_ins),
        reconnects=call.reconnects,
        tokens=token_totals(call.usage.model, call.usage.transcription),
        cost_usd=call.usage.cost(prices, model, transcriber),
        transcript=transcript_of(call),
    )
