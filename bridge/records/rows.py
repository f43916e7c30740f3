"""A call record as the stores keep it: its columns and JSON parts, read back the same way
by every backend (SQLite, PostgreSQL), and as the spill file holds it while no database
takes it.

The merges (a status or recording callback meeting what is stored) live here too, so that
every backend decides the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, astuple, replace
from typing import Any

from bridge.core.summary import TranscriptLine
from bridge.core.timeline import Moment, TimelineEntry
from bridge.records.model import CallRecord, Recording, TurnTiming, WebhookDelivery
from twiml.call_status import FINAL_STATUSES


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def turn_rows(turns: Iterable[TurnTiming]) -> list[dict[str, Any]]:
    """The turns as JSON objects: how they are stored, and how the post-call webhook
    sends them."""
    return [
        {
            "index": t.index,
            "caller_stopped_ms": t.caller_stopped_ms,
            "first_audio_sent_ms": t.first_audio_sent_ms,
            "first_audio_heard_ms": t.first_audio_heard_ms,
            "barged_in": t.barged_in,
            "truncated_at_ms": t.truncated_at_ms,
        }
        for t in turns
    ]


def turns_from_json(text: str) -> tuple[TurnTiming, ...]:
    return tuple(
        TurnTiming(
            index=t["index"],
            caller_stopped_ms=t.get("caller_stopped_ms"),
            first_audio_sent_ms=t.get("first_audio_sent_ms"),
            first_audio_heard_ms=t.get("first_audio_heard_ms"),
            barged_in=bool(t.get("barged_in", False)),
            truncated_at_ms=t.get("truncated_at_ms"),
        )
        for t in json.loads(text)
    )


def transcript_rows(transcript: Iterable[TranscriptLine]) -> list[dict[str, Any]]:
    """The transcript as JSON objects: how it is stored, and how the post-call webhook
    sends it."""
    return [{"role": t.role, "text": t.text, "cut": t.cut, "at": t.at} for t in transcript]


def transcript_from_json(text: str) -> tuple[TranscriptLine, ...]:
    # Lines stored before they carried their time have none (no migration: it is JSON).
    return tuple(
        TranscriptLine(
            role=t["role"],
            text=t["text"],
            cut=bool(t.get("cut", False)),
            at=float(t["at"]) if isinstance(t.get("at"), int | float) else None,
        )
        for t in json.loads(text)
    )


def transcript_text(transcript: Iterable[TranscriptLine]) -> str:
    """The transcript as plain text, the column search reads."""
    return "\n".join(line.text for line in transcript)


def timeline_rows(timeline: Iterable[TimelineEntry]) -> list[dict[str, Any]]:
    """The timeline as JSON objects: how it is stored, and how the console serves it."""
    return [{"at": e.at, "moment": e.moment.value, "detail": e.detail} for e in timeline]


def timeline_from_json(text: str) -> tuple[TimelineEntry, ...]:
    entries = []
    for e in json.loads(text):
        try:
            moment = Moment(e["moment"])
        except ValueError:
            continue  # written by a newer version: this one cannot name it
        entries.append(TimelineEntry(float(e["at"]), moment, str(e.get("detail", ""))))
    return tuple(entries)


def recording_fields(recording: Recording) -> dict[str, Any]:
    return asdict(recording)


def recording_of_fields(r: dict[str, Any]) -> Recording:
    return Recording(
        kind=str(r["kind"]),
        status=str(r["status"]),
        sid=r.get("sid"),
        url=r.get("url"),
        duration_s=r.get("duration_s"),
        error=str(r.get("error", "")),
    )


def recording_to_json(recording: Recording | None) -> str | None:
    return None if recording is None else dumps(recording_fields(recording))


def recording_from_json(text: str | None) -> Recording | None:
    return recording_of_fields(json.loads(text)) if text else None


def merge_recording(kept: Recording | None, update: Recording) -> Recording:
    """What a recording status callback changes: its status and what only it knows."""
    if kept is None or (kept.sid is not None and update.sid not in (None, kept.sid)):
        return update
    return replace(
        kept,
        status=update.status,
        sid=kept.sid or update.sid,  # (our request may have timed out, and Twilio recorded)
        url=update.url or kept.url,
        duration_s=update.duration_s if update.duration_s is not None else kept.duration_s,
        error=update.error if update.status == "failed" else "",
    )


def merge_status(
    old: tuple[str | None, int | None] | None, status: str | None, duration_s: int | None
) -> tuple[str | None, int | None]:
    """The status to keep when `status` arrives and `old` is already stored.

    Twilio does not promise to deliver callbacks in order, so a late "ringing" must not
    overwrite "completed"; and only the final callback carries CallDuration.
    """
    old_status, old_duration = old if old is not None else (None, None)
    if status is None or (old_status in FINAL_STATUSES and status not in FINAL_STATUSES):
        status = old_status
    return status, duration_s if duration_s is not None else old_duration


def fold(value: str | None) -> str | None:
    # Case-insensitive search that is not only ASCII: the database's own LIKE (SQLite) or
    # lower() (PostgreSQL in the C locale) only fold A-Z, and callers' names are not all
    # ASCII. Both stores compare Python's casefold of each side.
    return None if value is None else value.casefold()


def like_pattern(text: str) -> str:
    """`text` as a LIKE pattern matching it anywhere, its wildcards literal (ESCAPE '\\')."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def searched_values(r: CallRecord) -> list[str | None]:
    """What search looks in: the call sid, both numbers, the profile, the outcome and the
    transcript."""
    return [
        r.call_sid,
        r.from_number,
        r.to_number,
        r.profile,
        r.outcome,
        transcript_text(r.transcript),
    ]


# The calls table's columns as a record is written and read back, in one order for both.
RECORD_COLUMNS = (
    "call_sid, stream_sid, from_number, to_number, profile, direction, started_at, ended_at,"
    " outcome, end_reason, model, turn_count, barge_ins, reconnects, cost_usd, final_status,"
    " duration_s, turns_json, tokens_json, transcript_json, transcript_text, timeline_json,"
    " timeline_dropped, recording_json"
)
SUMMARY_COLUMNS = (
    "call_sid, from_number, to_number, profile, direction, started_at, ended_at, outcome,"
    " turn_count, barge_ins, cost_usd, model"
)


def record_values(
    r: CallRecord, final_status: str | None, duration_s: int | None, recording: Recording | None
) -> tuple[Any, ...]:
    """The values of RECORD_COLUMNS for `r`, with what the callbacks said merged in."""
    return (
        r.call_sid,
        r.stream_sid,
        r.from_number,
        r.to_number,
        r.profile,
        r.direction,
        r.started_at,
        r.ended_at,
        r.outcome,
        r.end_reason,
        r.model,
        len(r.turns),
        r.barge_ins,
        r.reconnects,
        r.cost_usd,
        final_status,
        duration_s,
        dumps(turn_rows(r.turns)),
        dumps(dict(r.tokens)),
        dumps(transcript_rows(r.transcript)),
        transcript_text(r.transcript),
        dumps(timeline_rows(r.timeline)),
        r.timeline_dropped,
        recording_to_json(recording),
    )


def record_from_row(row: Sequence[Any]) -> CallRecord:
    """A record from its RECORD_COLUMNS, as read back."""
    (
        call_sid,
        stream_sid,
        from_number,
        to_number,
        profile,
        direction,
        started_at,
        ended_at,
        outcome,
        end_reason,
        model,
        _turn_count,
        barge_ins,
        reconnects,
        cost_usd,
        final_status,
        duration_s,
        turns_json,
        tokens_json,
        transcript_json,
        _transcript_text,
        timeline_json,
        timeline_dropped,
        recording_json,
    ) = row
    return CallRecord(
        call_sid=call_sid,
        stream_sid=stream_sid,
        from_number=from_number,
        to_number=to_number,
        profile=profile,
        direction=direction,
        started_at=started_at,
        ended_at=ended_at,
        outcome=outcome,
        end_reason=end_reason,
        model=model,
        turns=turns_from_json(turns_json),
        barge_ins=barge_ins,
        reconnects=reconnects,
        tokens={str(k): int(v) for k, v in json.loads(tokens_json).items()},
        cost_usd=cost_usd,
        transcript=transcript_from_json(transcript_json),
        final_status=final_status,
        duration_s=duration_s,
        timeline=timeline_from_json(timeline_json),
        timeline_dropped=timeline_dropped,
        recording=recording_from_json(recording_json),
    )


# ------------------------------------------------------------ a record as one JSON object


def record_to_json(r: CallRecord) -> dict[str, Any]:
    """The whole record as one JSON object (the spill file's), read back equal."""
    values = record_values(r, r.final_status, r.duration_s, r.recording)
    return dict(zip(_COLUMN_NAMES, values, strict=True))


def record_from_json(data: dict[str, Any]) -> CallRecord:
    return record_from_row([data[name] for name in _COLUMN_NAMES])


DELIVERY_COLUMNS = "message_id, call_sid, body, created_at, attempts, next_attempt_at, last_error"


def delivery_values(d: WebhookDelivery) -> tuple[Any, ...]:
    """The values of DELIVERY_COLUMNS for `d`."""
    return astuple(d)


def delivery_to_json(d: WebhookDelivery) -> dict[str, Any]:
    return asdict(d)


def delivery_from_json(data: dict[str, Any]) -> WebhookDelivery:
    return WebhookDelivery(**data)


_COLUMN_NAMES = tuple(name.strip() for name in RECORD_COLUMNS.split(","))
