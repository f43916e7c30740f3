"""Metrics and call records after simulated calls over loopback: their numbers match what
the simulated caller measured."""

from __future__ import annotations

import sqlite3

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.local_agent import AgentOptions
from bridge.records.store import SQLiteCallStore
from bridge.simulator import SimulatorOptions, simulate_call
from tests.helpers.running_bridge import AUTH_TOKEN, running_bridge, stored_record

pytestmark = pytest.mark.integration

VAD_SILENCE_MS = 500  # the bridge's default: the caller's turn ends this long after speech
CHUNK_MS = 100  # the agent's audio per delta: the first mark comes back once it has played
# How closely the bridge's figures and the caller's own agree: loopback, one event loop for
# all three parties, and the VAD's 20 ms frames.
AGREE_MS = 25
ANCHOR_MS = 5


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_and_the_call_record_agree_with_what_the_caller_measured() -> None:
    async with running_bridge(AgentOptions(chunk_ms=CHUNK_MS)) as bridge:
        report = await simulate_call(
            SimulatorOptions(
                webhook_url=bridge.webhook_url,
                auth_token=AUTH_TOKEN,
                from_number="+15553334444",
                turns=3,
                barge_in_after_ms=600,
                turn_timeout_s=10,
                max_duration_s=60,
            )
        )
        assert await bridge.agent.sessions[0].wait_closed(timeout=1.0)
        record = await stored_record(bridge, report.call_sid)
        async with httpx.AsyncClient() as http:
            scraped = (await http.get(bridge.base_url + "/metrics")).text

    assert (record.from_number, record.direction, record.outcome) == (
        "+15553334444",
        "inbound",
        "caller_hung_up",
    )
    # Three caller turns, each answered; the first two cut where the caller came in.
    assert [t.index for t in record.turns] == [1, 2, 3]
    cuts = [t.truncated_at_ms for t in record.turns if t.barged_in]
    assert cuts == [t.truncated_at_ms for t in report.turns if t.intentional_barge_in]
    assert record.barge_ins == 2
    # One definition across the caller, the record and the metrics: from the end of the
    # caller's speech. The bridge places it from the VAD's audio_end_ms; the caller knows it.
    for turn, caller in zip(record.turns, report.turns, strict=True):
        assert turn.caller_stopped_ms is not None and caller.speech_end_ms is not None
        assert abs(turn.caller_stopped_ms - caller.speech_end_ms) <= AGREE_MS, (turn, caller)
        assert turn.first_audio_sent_ms is not None and turn.first_audio_heard_ms is not None
        heard_after = turn.first_audio_heard_ms - turn.caller_stopped_ms
        sent_after = turn.first_audio_sent_ms - turn.caller_stopped_ms
        assert caller.response_latency_ms is not None and caller.arrival_latency_ms is not None
        assert abs(heard_after - caller.response_latency_ms) <= AGREE_MS, (turn, caller)
        assert abs(sent_after - caller.arrival_latency_ms) <= AGREE_MS, (turn, caller)
        # The VAD waited VAD_SILENCE_MS before the agent, which answers at once, could.
        # (Less up to ANCHOR_MS: the end of speech is placed on the call's clock from the
        # caller frames counted when the session opened, each arriving with its jitter.)
        assert VAD_SILENCE_MS - ANCHOR_MS <= sent_after <= VAD_SILENCE_MS + 150, turn
    caller_lines = [line for line in record.transcript if line.role == "caller"]
    assert len(caller_lines) == 3 and all("caller audio" in line.text for line in caller_lines)
    assert record.tokens["audio_in"] > 0 and record.cost_usd and record.cost_usd > 0

    metric = samples(scraped)
    assert metric[("phone_bridge_calls_total", (("outcome", "caller_hung_up"),))] == 1
    assert metric[("phone_bridge_barge_ins_total", ())] == 2
    assert metric[("phone_bridge_truncation_ms_sum", ())] == sum(cuts)
    for stage in ("first_audio_sent", "first_audio_heard"):
        assert metric[("phone_bridge_turn_latency_seconds_count", (("stage", stage),))] == 3
    heard_sum = metric[("phone_bridge_turn_latency_seconds_sum", (("stage", "first_audio_heard"),))]
    expected = sum(t.first_audio_heard_ms - t.caller_stopped_ms for t in record.turns) / 1000
    assert heard_sum == pytest.approx(expected, abs=0.005)
    assert (
        metric[("phone_bridge_tokens_total", (("kind", "audio_in"),))] == record.tokens["audio_in"]
    )
    assert metric[("phone_bridge_cost_usd_total", ())] == pytest.approx(record.cost_usd)
    assert metric[("phone_bridge_active_calls", ())] == 0


async def test_calls_go_on_when_the_records_store_fails_to_open_after_its_checks_passed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A records file that cannot work stops the start (see the settings' tests); one that
    passed those checks and still fails to open (a disk error, a file removed since) does
    not take the calls down with it."""

    async def failing_open(self: SQLiteCallStore) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(SQLiteCallStore, "open", failing_open)
    async with running_bridge() as bridge:
        report = await simulate_call(
            SimulatorOptions(
                webhook_url=bridge.webhook_url,
                auth_token=AUTH_TOKEN,
                turns=1,
                utterance_ms=400,
                answer_idle_ms=300,
            )
        )
        assert bridge.app.state.store is None
    assert report.completed and report.heard_audio
    assert "call records are OFF" in caplog.text


async def test_a_keypad_entry_is_recorded_without_its_digits() -> None:
    async with running_bridge() as bridge:
        report = await simulate_call(
            SimulatorOptions(
                webhook_url=bridge.webhook_url,
                auth_token=AUTH_TOKEN,
                turns=1,
                keypad={1: "4111#"},
                answer_idle_ms=300,
            )
        )
        record = await stored_record(bridge, report.call_sid)
    texts = [line.text for line in record.transcript if line.role == "caller"]
    # (What the assistant said back is its own speech, kept as said.)
    assert texts == ["(pressed 5 keys)"]


async def test_the_records_file_is_readable_by_its_owner_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "calls.db"
    async with running_bridge(call_db_path=str(path)) as bridge:
        assert bridge.app.state.store is not None
    assert path.stat().st_mode & 0o777 == 0o600  # numbers and what callers said


async def test_metrics_can_be_kept_behind_a_token() -> None:
    token = "metrics-token-0123456789abcdef"
    async with running_bridge(metrics_token=token) as bridge, httpx.AsyncClient() as http:
        refused = await http.get(bridge.base_url + "/metrics")
        wrong = await http.get(
            bridge.base_url + "/metrics", headers={"Authorization": "Bearer nope"}
        )
        allowed = await http.get(
            bridge.base_url + "/metrics", headers={"Authorization": f"bearer {token}"}
        )
    assert (refused.status_code, wrong.status_code, allowed.status_code) == (401, 401, 200)
    assert "phone_bridge_active_calls" in allowed.text
