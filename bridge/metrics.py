"""Prometheus metrics: how many calls, how they end, how fast the assistant answers.

Each `Metrics` owns its own `CollectorRegistry`: one process may hold several apps (the
tests do), and the global default registry would mix their counts or refuse the second
app's metrics as duplicates.

Every label takes its value from a fixed set, anything else becoming "other": the values
come from the network (error codes) or from free text (end reasons), and each distinct
value is a time series Prometheus keeps for good.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from bridge.core.actions import CallOutcome

PREFIX = "phone_bridge_"


_OUTCOMES = frozenset(CallOutcome)


# The Realtime API's error codes (its `type` when the code is null), as the local agent
# reproduces them plus the account-level ones a deployment meets.
KNOWN_ERROR_CODES = frozenset(
    {
        "conversation_already_has_active_response",
        "response_cancel_not_active",
        "item_truncate_invalid_item_id",
        "item_delete_invalid_item_id",
        "item_retrieve_invalid_item_id",
        "input_audio_buffer_commit_empty",
        "invalid_tool_call_id",
        "unsupported_content_type",
        "cannot_update_voice",
        "invalid_value",
        "invalid_type",
        "invalid_json",
        "invalid_event",
        "unknown_parameter",
        "missing_required_parameter",
        "session_expired",
        "rate_limit_exceeded",
        "insufficient_quota",
        "invalid_api_key",
        "invalid_request_error",
        "server_error",
    }
)

TOKEN_KINDS = (
    "text_in",
    "text_cached",
    "audio_in",
    "audio_cached",
    "text_out",
    "audio_out",
    "transcription",
)

# Counted from the end of the caller's speech, so every figure holds the VAD's silence
# (VAD_SILENCE_MS, 500 ms by default) before the model may answer: an answer feels prompt
# under ~1 s and broken past ~2.5 s. The buckets are finest where a tuning change shows up.
LATENCY_BUCKETS_S = (0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.4, 1.6, 2.0, 2.5, 3.0, 5.0)
# A record's write, from a healthy local disk or database (a few ms) to one near its
# statement timeout.
RECORD_WRITE_BUCKETS_S = (
    0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15,
    0.2, 0.3, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip
# From "cut at the first word" to "let it talk for ten seconds".
TRUNCATION_BUCKETS_MS = (100, 250, 500, 750, 1000, 1500, 2000, 3000, 5000, 7500, 10000)
PAUSE_BUCKETS_S = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0)


class Metrics:
    """The bridge's metrics, and the observer the call core reports its events to.

    The observer methods run on the event loop: each is a few counter updates, and none
    raises on odd input (a metric must never end a call).
    """

    def __init__(self, active_calls: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._active = Gauge(PREFIX + "active_calls", "Calls in progress.", registry=r)
        # Read at scrape time, so the gauge cannot drift from the admission's own count.
        self._active.set_function(active_calls)
        self._calls = Counter(
            PREFIX + "calls", "Calls ended, by how they ended.", ["outcome"], registry=r
        )
        self._latency = Histogram(
            PREFIX + "turn_latency_seconds",
            "From the end of the caller's speech (where the session's VAD put it, less the "
            "silence it waited for) to the answer's first audio: sent to Twilio "
            "(first_audio_sent) or beginning to play to the caller (first_audio_heard).",
            ["stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self._barge_ins = Counter(
            PREFIX + "barge_ins", "Times the caller talked over an answer.", registry=r
        )
        self._truncation = Histogram(
            PREFIX + "truncation_ms",
            "How far into an answer the caller cut it off, in ms of its audio.",
            buckets=TRUNCATION_BUCKETS_MS,
            registry=r,
        )
        self._pauses = Histogram(
            PREFIX + "interruption_pause_seconds",
            "INTERRUPTIONS=confirm: how long the assistant was silenced while the caller "
            "talked over it, until it resumed (not an interruption) or was cut (one).",
            ["verdict"],
            buckets=PAUSE_BUCKETS_S,
            registry=r,
        )
        for verdict in ("resumed", "interrupted"):
            self._pauses.labels(verdict=verdict)
        self._errors = Counter(
            PREFIX + "backend_errors",
            "error events from the Realtime session, by code.",
            ["code"],
            registry=r,
        )
        self._reconnects = Counter(
            PREFIX + "reconnects", "Realtime sessions reopened mid-call after a loss.", registry=r
        )
        self._rollovers = Counter(
            PREFIX + "session_rollovers",
            "Healthy Realtime sessions replaced before the service's length limit.",
            registry=r,
        )
        self._tokens = Counter(
            PREFIX + "tokens", "Tokens the calls used, by kind.", ["kind"], registry=r
        )
        self._cost = Counter(
            PREFIX + "cost_usd", "Estimated cost of the ended calls, in USD.", registry=r
        )
        self._unpriced = Counter(
            PREFIX + "unpriced_calls",
            "Ended calls with no price for their model: their cost is not in cost_usd.",
            registry=r,
        )
        self._records_queued = Gauge(
            PREFIX + "records_queued",
            "Call records and status updates waiting in memory for the records database "
            "(it is away, or slow): bounded; past the bound they go to the spill file.",
            registry=r,
        )
        self._records_queued.set_function(lambda: self._queued_records())
        self._queued_records: Callable[[], int] = lambda: 0
        self._record_writes = Histogram(
            PREFIX + "record_write_seconds",
            "How long the records database took to take one queued write (a call's "
            "record, or Twilio's status for it).",
            buckets=RECORD_WRITE_BUCKETS_S,
            registry=r,
        )
        self._record_write_failures = Counter(
            PREFIX + "record_write_failures",
            "Attempts to write a call's record or status that failed because the records "
            "database was away (each is retried).",
            registry=r,
        )
        self._records_spilled = Counter(
            PREFIX + "records_spilled",
            "Writes kept in the local spill file instead (the queue was full, or the "
            "bridge stopped before the database was back): the next start imports them.",
            registry=r,
        )
        # Series that exist from the first scrape read 0 rather than missing, so rate()
        # and alerts see the first call instead of starting from it.
        for outcome in CallOutcome:
            self._calls.labels(outcome=outcome.value)
        for kind in TOKEN_KINDS:
            self._tokens.labels(kind=kind)
        self._sent = self._latency.labels(stage="first_audio_sent")
        self._heard = self._latency.labels(stage="first_audio_heard")

    def turn_answered(self, latency_s: float) -> None:
        """End of the caller's speech -> first assistant audio sent to Twilio."""
        if _finite(latency_s):
            self._sent.observe(max(0.0, latency_s))

    def turn_heard(self, latency_s: float) -> None:
        """End of the caller's speech -> that audio began to play to the caller."""
        if _finite(latency_s):
            self._heard.observe(max(0.0, latency_s))

    def barged_in(self, heard_ms: int | None) -> None:
        """A barge-in; `heard_ms` is where the answer was cut (audio_end_ms), None when no
        answer audio had played yet."""
        self._barge_ins.inc()
        if heard_ms is not None and _finite(heard_ms):
            self._truncation.observe(max(0, heard_ms))

    def paused(self, seconds: float, resumed: bool) -> None:
        """A pause (INTERRUPTIONS=confirm) ended: the answer resumed, or it was cut."""
        if _finite(seconds):
            verdict = "resumed" if resumed else "interrupted"
            self._pauses.labels(verdict=verdict).observe(max(0.0, seconds))

    def reconnected(self) -> None:
        self._reconnects.inc()

    def rolled_over(self) -> None:
        self._rollovers.inc()

    def backend_error(self, code: str | None) -> None:
        label = code if isinstance(code, str) and code in KNOWN_ERROR_CODES else "other"
        self._errors.labels(code=label).inc()

    def call_ended(
        self, outcome: CallOutcome | None, tokens: Mapping[str, int], cost_usd: float | None
    ) -> None:
        """Count one ended call. `outcome`: how it ended (None: it never did, the runner
        was cancelled); `tokens` maps TOKEN_KINDS to the call's totals; `cost_usd` is None
        when the call's model has no price."""
        known = isinstance(outcome, str) and outcome in _OUTCOMES
        self._calls.labels(outcome=str(outcome) if known else CallOutcome.OTHER.value).inc()
        for kind, count in tokens.items():
            # A kind outside the set would be a new series; a negative count would make
            # the counter raise.
            if kind in TOKEN_KINDS and isinstance(count, int) and count > 0:
                self._tokens.labels(kind=kind).inc(count)
        if cost_usd is None or not _finite(cost_usd) or cost_usd < 0:
            # Not a cost anyone can add up: say so rather than skew the total.
            self._unpriced.inc()
        else:
            self._cost.inc(cost_usd)

    def count_queued_records(self, queued: Callable[[], int]) -> None:
        """Where the records_queued gauge reads its value, at scrape time."""
        self._queued_records = queued

    # The write-behind queue's observer (bridge.records.write_behind.RecordsObserver).

    def record_written(self, seconds: float) -> None:
        if _finite(seconds):
            self._record_writes.observe(max(0.0, seconds))

    def record_write_failed(self) -> None:
        self._record_write_failures.inc()

    def records_spilled(self, count: int) -> None:
        self._records_spilled.inc(count)

    def render(self) -> tuple[bytes, str]:
        """The body and content type for GET /metrics."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
