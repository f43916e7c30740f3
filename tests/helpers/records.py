"""A call record to store, as the bridge would have written it."""

from __future__ import annotations

import time

from bridge.core.summary import TranscriptLine
from bridge.records.model import CallRecord, TurnTiming


def record(
    call_sid: str = "CA" + "a" * 32,
    *,
    from_number: str = "+15550001111",
    started_at: float | None = None,
    transcript: tuple[TranscriptLine, ...] = (),
    turns: tuple[TurnTiming, ...] = (),
    model: str = "gpt-realtime",
    cost_usd: float = 0.1234,
) -> CallRecord:
    started = time.time() - 120 if started_at is None else started_at
    return CallRecord(
        call_sid=call_sid,
        stream_sid="MZ" + "b" * 32,
        from_number=from_number,
        to_number="+15550002222",
        profile="support",
        direction="inbound",
        started_at=started,
        ended_at=started + 65.2,
        outcome="caller_hung_up",
        end_reason="the caller hung up",
        model=model,
        turns=turns,
        barge_ins=sum(t.barged_in for t in turns),
        reconnects=0,
        tokens={"audio_in": 1200, "audio_out": 3400, "text_in": 50, "transcription": 80},
        cost_usd=cost_usd,
        transcript=transcript,
        final_status="completed",
        duration_s=66,
    )
