"""What is kept of a call once it is over: its record, and the line that lists it."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.core.summary import TranscriptLine
from bridge.core.timeline import TimelineEntry


@dataclass(frozen=True, slots=True)
class TurnTiming:
    """One caller turn and its answer; times are ms since the call's stream started (where
    Twilio's media timestamps count from). Latencies are measured from `caller_stopped_ms`:
    see `bridge.core.turns`."""

    index: int  # 1-based
    caller_stopped_ms: float | None  # the end of the caller's speech, or their last key
    first_audio_sent_ms: float | None  # first assistant audio sent to Twilio after it
    first_audio_heard_ms: float | None  # when that audio began to play to the caller
    barged_in: bool = False  # the caller talked over this turn's answer
    truncated_at_ms: int | None = None  # where its answer was cut (audio_end_ms)


@dataclass(frozen=True, slots=True)
class Recording:
    """A call's recording. Made by Twilio (RECORDING=twilio): its Recording SID and the
    API URL of its audio; `status` is Twilio's ("completed", "absent": nothing to record)
    once its callback came, "in-progress" until then, or "failed" with `error` when it
    could not be started."""

    kind: str  # "twilio"
    status: str
    sid: str | None = None
    url: str | None = None
    duration_s: int | None = None
    error: str = ""


@dataclass(frozen=True, slots=True)
class CallRecord:
    call_sid: str
    stream_sid: str
    from_number: str
    to_number: str
    profile: str | None
    direction: str  # "inbound", "outbound" or "browser"
    started_at: float  # unix time
    ended_at: float
    outcome: str  # short code: caller_hung_up, assistant_ended, transferred, time_limit, ...
    end_reason: str  # the human-readable reason
    model: str
    turns: tuple[TurnTiming, ...]
    barge_ins: int
    reconnects: int
    tokens: dict[str, int]  # text_in, text_cached, audio_in, ..., transcription
    cost_usd: float | None
    transcript: tuple[TranscriptLine, ...]
    final_status: str | None = None  # Twilio's status callback (completed, busy, ...)
    duration_s: int | None = None  # Twilio's CallDuration
    # What happened when, in s since the stream started (bridge.core.timeline).
    timeline: tuple[TimelineEntry, ...] = ()
    timeline_dropped: int = 0  # moments past the timeline's bound, not kept
    recording: Recording | None = None  # the call's recording, if it was recorded

    @property
    def duration_ms(self) -> float:
        # Wall clocks can step backwards mid-call; a negative length means nothing to a reader.
        return max(0.0, (self.ended_at - self.started_at) * 1000.0)


@dataclass(frozen=True, slots=True)
class CallListing:
    """One row of the console's list of calls."""

    call_sid: str
    from_number: str
    to_number: str
    profile: str | None
    direction: str
    started_at: float
    ended_at: float
    outcome: str
    turns: int
    barge_ins: int
    cost_usd: float | None
    model: str = ""  # whose cost it is: the local echo agent's calls cost nothing


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """A post-call webhook still to be delivered: kept with the records, so a restart
    resumes it. Times are unix seconds."""

    message_id: str  # the `webhook-id`: the same on every attempt, so a receiver can dedupe
    call_sid: str
    body: str  # the JSON posted, signed as it is
    created_at: float
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str = ""


@dataclass(frozen=True, slots=True)
class LiveCallRow:
    """A call in progress on some replica, as its heartbeat row says: the console of every
    replica lists them. Times are unix seconds."""

    call_sid: str
    replica: str  # which instance serves it (REPLICA_NAME)
    started_at: float
    from_number: str
    to_number: str
    profile: str
    phase: str  # the call core's Phase value
    turns: int
    barge_ins: int
    updated_at: float = 0.0  # when its replica last said it is still going
