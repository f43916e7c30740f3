"""How each call ended, and its recording, from Twilio's status callbacks
(`POST /call-status`, `POST /recording-status`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

# CallStatus values after which nothing more happens to a call.
FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


@dataclass(frozen=True, slots=True)
class CallStatus:
    call_sid: str
    status: str
    duration_s: int | None  # CallDuration: seconds the call was connected
    from_: str
    to: str
    direction: str
    answered_by: str | None  # only on calls placed with machine detection
    at: float  # Unix time the callback arrived

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def from_callback(cls, form: Mapping[str, str], at: float | None = None) -> CallStatus:
        """A status callback's form fields, as Twilio posts them."""
        duration = form.get("CallDuration", "")
        return cls(
            call_sid=form.get("CallSid", ""),
            status=form.get("CallStatus", ""),
            duration_s=int(duration) if duration.isdigit() else None,
            from_=form.get("From", ""),
            to=form.get("To", ""),
            direction=form.get("Direction", ""),
            answered_by=form.get("AnsweredBy") or None,
            at=time.time() if at is None else at,
        )


@dataclass(frozen=True, slots=True)
class RecordingStatus:
    """Twilio's recording status callback (`POST /recording-status`)."""

    call_sid: str
    recording_sid: str
    status: str  # completed, absent (nothing was recorded), failed
    url: str | None  # the recording's API URL (add .wav or .mp3 for its audio)
    duration_s: int | None

    @classmethod
    def from_callback(cls, form: Mapping[str, str]) -> RecordingStatus:
        duration = form.get("RecordingDuration", "")
        return cls(
            call_sid=form.get("CallSid", ""),
            recording_sid=form.get("RecordingSid", ""),
            status=form.get("RecordingStatus", ""),
            url=form.get("RecordingUrl") or None,
            duration_s=int(duration) if duration.isdigit() else None,
        )
