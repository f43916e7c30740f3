"""How each call ended, from Twilio's status callbacks (`POST /call-status`).

Kept in memory for now, bounded: the newest calls stay, the oldest go first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

# CallStatus values after which nothing more happens to a call.
FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
DEFAULT_CAPACITY = 10_000


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


class CallStatusBook:
    """The latest status of each call, the newest `capacity` calls kept."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._by_call: OrderedDict[str, CallStatus] = OrderedDict()

    def record(self, status: CallStatus) -> None:
        """Keep `status` as its call's latest; a call heard from again counts as newest."""
        self._by_call[status.call_sid] = status
        self._by_call.move_to_end(status.call_sid)
        while len(self._by_call) > self._capacity:
            self._by_call.popitem(last=False)

    def get(self, call_sid: str) -> CallStatus | None:
        return self._by_call.get(call_sid)

    def __len__(self) -> int:
        return len(self._by_call)

    def __iter__(self) -> Iterator[CallStatus]:
        """Oldest first."""
        return iter(list(self._by_call.values()))
