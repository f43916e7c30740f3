"""What an operator's Prometheus scrapes from GET /metrics after some calls.

Every check reads the rendered exposition text back with Prometheus's own parser, so the
names, labels and values are the ones a dashboard or alert would query.
"""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.core.actions import CallOutcome, EndReason
from bridge.metrics import Metrics


def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Each sample by (name, sorted labels), as a query would select it."""
    body, _ = metrics.render()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return scrape(metrics)[(name, tuple(sorted(labels.items())))]


def series(metrics: Metrics, name: str, label: str) -> set[str]:
    """The values `label` takes in the samples of `name`: the series Prometheus stores."""
    return {dict(key)[label] for (n, key) in scrape(metrics) if n == name}


NO_TOKENS: dict[str, int] = {}


def test_render_is_the_prometheus_text_format() -> None:
    body, content_type = Metrics(lambda: 0).render()
    assert content_type.startswith("text/plain")
    assert b"# TYPE phone_bridge_calls_total counter" in body


def test_a_sequence_of_calls_adds_up() -> None:
    metrics = Metrics(lambda: 0)
    metrics.turn_answered(0.55)
    metrics.turn_heard(0.75)
    metrics.turn_answered(1.1)
    metrics.turn_heard(1.4)
    metrics.barged_in(800)
    metrics.reconnected()
    metrics.rolled_over()
    metrics.rolled_over()
    metrics.backend_error("conversation_already_has_active_response")
    metrics.backend_error("conversation_already_has_active_response")
    metrics.call_ended(
        "caller_hung_up",
        {"text_in": 100, "audio_in": 2000, "audio_out": 3000, "transcription": 50},
        0.25,
    )
    metrics.call_ended("transferred", {"text_in": 20, "text_cached": 300}, 0.125)
    metrics.call_ended("caller_hung_up", {"audio_out": 1000}, None)

    assert value(metrics, "phone_bridge_calls_total", outcome="caller_hung_up") == 2
    assert value(metrics, "phone_bridge_calls_total", outcome="transferred") == 1
    assert value(metrics, "phone_bridge_calls_total", outcome="time_limit") == 0

    sent = {"stage": "first_audio_sent"}
    heard = {"stage": "first_audio_heard"}
    assert value(metrics, "phone_bridge_turn_latency_seconds_count", **sent) == 2
    assert value(metrics, "phone_bridge_turn_latency_seconds_sum", **sent) == pytest.approx(1.65)
    assert value(metrics, "phone_bridge_turn_latency_seconds_bucket", le="0.6", **sent) == 1
    assert value(metrics, "phone_bridge_turn_latency_seconds_bucket", le="1.2", **sent) == 2
    assert value(metrics, "phone_bridge_turn_latency_seconds_bucket", le="0.7", **heard) == 0
    assert value(metrics, "phone_bridge_turn_latency_seconds_bucket", le="0.8", **heard) == 1
    assert value(metrics, "phone_bridge_turn_latency_seconds_sum", **heard) == pytest.approx(2.15)

    assert value(metrics, "phone_bridge_barge_ins_total") == 1
    assert value(metrics, "phone_bridge_truncation_ms_count") == 1
    assert value(metrics, "phone_bridge_truncation_ms_sum") == 800
    assert value(metrics, "phone_bridge_truncation_ms_bucket", le="750.0") == 0
    assert value(metrics, "phone_bridge_truncation_ms_bucket", le="1000.0") == 1

    # INTERRUPTIONS=confirm: how long answers were silenced, by what it turned out to be.
    resumed, interrupted = {"verdict": "resumed"}, {"verdict": "interrupted"}
    assert value(metrics, "phone_bridge_interruption_pause_seconds_count", **resumed) == 0
    metrics.paused(0.66, resumed=True)
    metrics.paused(1.1, resumed=False)
    metrics.paused(float("nan"), resumed=True)  # (never raises, never counts)
    assert value(metrics, "phone_bridge_interruption_pause_seconds_count", **resumed) == 1
    assert value(metrics, "phone_bridge_interruption_pause_seconds_sum", **resumed) == 0.66
    assert (
        value(metrics, "phone_bridge_interruption_pause_seconds_bucket", le="1.25", **interrupted)
        == 1
    )

    assert value(metrics, "phone_bridge_reconnects_total") == 1
    assert value(metrics, "phone_bridge_session_rollovers_total") == 2
    assert (
        value(
            metrics,
            "phone_bridge_backend_errors_total",
            code="conversation_already_has_active_response",
        )
        == 2
    )

    assert value(metrics, "phone_bridge_tokens_total", kind="text_in") == 120
    assert value(metrics, "phone_bridge_tokens_total", kind="text_cached") == 300
    assert value(metrics, "phone_bridge_tokens_total", kind="audio_in") == 2000
    assert value(metrics, "phone_bridge_tokens_total", kind="audio_out") == 4000
    assert value(metrics, "phone_bridge_tokens_total", kind="transcription") == 50
    assert value(metrics, "phone_bridge_tokens_total", kind="audio_cached") == 0
    # The unpriced call adds nothing to the cost, and is counted instead.
    assert value(metrics, "phone_bridge_cost_usd_total") == pytest.approx(0.375)
    assert value(metrics, "phone_bridge_unpriced_calls_total") == 1


def test_series_exist_at_zero_before_the_first_call() -> None:
    """Alerts and rate() see the first failed call, not just the ones after it."""
    metrics = Metrics(lambda: 0)
    assert series(metrics, "phone_bridge_calls_total", "outcome") == {o.value for o in CallOutcome}
    assert value(metrics, "phone_bridge_calls_total", outcome="backend_failed") == 0
    assert series(metrics, "phone_bridge_tokens_total", "kind") == {
        "text_in",
        "text_cached",
        "audio_in",
        "audio_cached",
        "text_out",
        "audio_out",
        "transcription",
    }
    assert value(metrics, "phone_bridge_cost_usd_total") == 0
    assert value(metrics, "phone_bridge_unpriced_calls_total") == 0
    assert value(metrics, "phone_bridge_barge_ins_total") == 0
    assert value(metrics, "phone_bridge_reconnects_total") == 0
    assert value(metrics, "phone_bridge_session_rollovers_total") == 0


def test_the_active_gauge_reads_the_count_at_scrape_time() -> None:
    active = [0]
    metrics = Metrics(lambda: active[0])
    assert value(metrics, "phone_bridge_active_calls") == 0
    active[0] = 3
    assert value(metrics, "phone_bridge_active_calls") == 3
    active[0] = 1
    assert value(metrics, "phone_bridge_active_calls") == 1


def test_two_instances_keep_their_own_counts() -> None:
    first = Metrics(lambda: 2)
    second = Metrics(lambda: 5)
    first.call_ended("time_limit", {"audio_out": 10}, 1.0)
    first.reconnected()

    assert value(first, "phone_bridge_calls_total", outcome="time_limit") == 1
    assert value(second, "phone_bridge_calls_total", outcome="time_limit") == 0
    assert value(second, "phone_bridge_reconnects_total") == 0
    assert value(second, "phone_bridge_tokens_total", kind="audio_out") == 0
    assert value(second, "phone_bridge_cost_usd_total") == 0
    assert value(first, "phone_bridge_active_calls") == 2
    assert value(second, "phone_bridge_active_calls") == 5


def test_unknown_outcomes_are_counted_as_other() -> None:
    metrics = Metrics(lambda: 0)
    metrics.call_ended("the caller hung up", NO_TOKENS, None)  # a reason, not an outcome
    metrics.call_ended("made-up", NO_TOKENS, None)
    metrics.call_ended(CallOutcome.SHUTDOWN, NO_TOKENS, None)

    assert series(metrics, "phone_bridge_calls_total", "outcome") == {o.value for o in CallOutcome}
    assert value(metrics, "phone_bridge_calls_total", outcome="other") == 2
    assert value(metrics, "phone_bridge_calls_total", outcome="shutdown") == 1


def test_error_codes_outside_the_known_set_share_one_series() -> None:
    metrics = Metrics(lambda: 0)
    for n in range(50):
        metrics.backend_error(f"novel_code_{n}")
    metrics.backend_error(None)
    metrics.backend_error("server_error")
    metrics.backend_error("session_expired")

    assert series(metrics, "phone_bridge_backend_errors_total", "code") == {
        "other",
        "server_error",
        "session_expired",
    }
    assert value(metrics, "phone_bridge_backend_errors_total", code="other") == 51


def test_odd_call_totals_never_raise_nor_skew_the_counters() -> None:
    metrics = Metrics(lambda: 0)
    metrics.call_ended(
        "error",
        {"text_in": 7, "made_up_kind": 1_000, "audio_in": -5, "text_out": 0},
        float("nan"),
    )
    metrics.call_ended("error", NO_TOKENS, -1.0)
    metrics.turn_answered(float("inf"))

    assert "made_up_kind" not in series(metrics, "phone_bridge_tokens_total", "kind")
    assert value(metrics, "phone_bridge_tokens_total", kind="text_in") == 7
    assert value(metrics, "phone_bridge_tokens_total", kind="audio_in") == 0
    assert value(metrics, "phone_bridge_cost_usd_total") == 0
    assert value(metrics, "phone_bridge_unpriced_calls_total") == 2
    sent = {"stage": "first_audio_sent"}
    assert value(metrics, "phone_bridge_turn_latency_seconds_count", **sent) == 0


def test_a_barge_in_before_any_audio_played_is_counted_without_a_cut() -> None:
    metrics = Metrics(lambda: 0)
    metrics.barged_in(None)
    metrics.barged_in(12_000)

    assert value(metrics, "phone_bridge_barge_ins_total") == 2
    assert value(metrics, "phone_bridge_truncation_ms_count") == 1
    assert value(metrics, "phone_bridge_truncation_ms_bucket", le="10000.0") == 0
    assert value(metrics, "phone_bridge_truncation_ms_bucket", le="+Inf") == 1


@pytest.mark.parametrize(
    ("reason", "detail", "words", "outcome"),
    [
        (EndReason.CALLER_HUNG_UP, "", "the caller hung up", "caller_hung_up"),
        (EndReason.TWILIO_CLOSED, "", "the Twilio stream closed", "caller_hung_up"),
        (EndReason.TWILIO_STALLED, "", "Twilio's side stopped reading", "twilio_stalled"),
        (EndReason.ASSISTANT_ENDED, "", "the assistant ended the call", "assistant_ended"),
        (EndReason.TRANSFERRED, "+15551234567", "transferred to +15551234567", "transferred"),
        (EndReason.TIME_LIMIT, "", "time limit reached", "time_limit"),
        (
            EndReason.BACKEND_LOST,
            "refused (HTTP 503)",
            "the Realtime session was lost and could not be restored (refused (HTTP 503))",
            "backend_failed",
        ),
        (
            EndReason.BACKEND_ENDED,
            "closed by the server (code 1011)",
            "the Realtime session ended (closed by the server (code 1011))",
            "backend_failed",
        ),
        (
            EndReason.BACKEND_REFUSED_CONFIG,
            "",
            "the Realtime session refused its configuration",
            "backend_failed",
        ),
        (
            EndReason.BACKEND_WRONG_FORMAT,
            "pcmu",
            "the Realtime session did not take the pcmu audio format",
            "backend_failed",
        ),
        (
            EndReason.BACKEND_FELL_BEHIND,
            "",
            "the Realtime connection fell too far behind",
            "backend_failed",
        ),
        (EndReason.TOKEN_REFUSED, "expired", "stream token refused (expired)", "refused"),
        (
            EndReason.STREAM_REFUSED,
            "all 2 lines are taken",
            "stream refused (all 2 lines are taken)",
            "refused",
        ),
        (EndReason.FLOODED, "", "flooded with messages", "refused"),
        (EndReason.NO_START, "", "no 'start' message arrived", "refused"),
        (EndReason.SHUTDOWN, "", "the server is shutting down", "shutdown"),
        (EndReason.INTERNAL_ERROR, "", "internal error", "error"),
    ],
)
def test_each_end_reason_reads_as_before_and_has_its_outcome(
    reason: EndReason, detail: str, words: str, outcome: str
) -> None:
    """Records keep the words and dashboards the outcome: neither may drift."""
    assert reason.describe(detail) == words
    assert reason.outcome == outcome


def test_no_end_reason_falls_under_other() -> None:
    """A call's end always says why, so no dashboard series is "other" but for a runner
    cancelled before its call ended."""
    assert {reason.outcome for reason in EndReason} <= set(CallOutcome) - {CallOutcome.OTHER}


def test_an_ending_counts_under_its_outcome() -> None:
    metrics = Metrics(lambda: 0)
    metrics.call_ended(EndReason.TRANSFERRED.outcome, NO_TOKENS, 0.0)
    metrics.call_ended(None, NO_TOKENS, None)  # a runner cancelled before its call ended
    assert value(metrics, "phone_bridge_calls_total", outcome="transferred") == 1
    assert value(metrics, "phone_bridge_calls_total", outcome="other") == 1
