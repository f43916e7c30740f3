"""Whole calls over loopback: the shipped simulator as the caller, the real app under uvicorn,
the shipped local agent as the Realtime backend."""

from __future__ import annotations

import asyncio
import itertools

import httpx
import pytest
from twilio.request_validator import RequestValidator

from bridge.local_agent import AgentOptions
from bridge.simulator import CallReport, SimulatorOptions, simulate_call
from bridge.simulator.simulator_options import SimulatorError
from tests.helpers.heard_audio import (
    assert_every_item_heard_as_sent,
    assert_heard_exactly_what_the_model_sent_up_to_each_cut,
    assert_truncations_match_what_was_heard,
    call_with_barge_in,
    heard_bytes_by_item,
    model_audio_by_item,
)
from tests.helpers.running_bridge import AUTH_TOKEN, RunningBridge, running_bridge
from tests.helpers.twilio_rest_fake import RecordingTwilio

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_a_call_with_barge_ins_hears_the_model_exactly_and_truncates_at_the_cut(
    dialect: str,
) -> None:
    async with running_bridge(realtime_dialect=dialect) as bridge:
        report, session = await call_with_barge_in(bridge)
    assert session.dialect == dialect
    assert session.path == "/v1/realtime?model=gpt-realtime"
    assert report.completed and not report.closed_by_bridge
    assert report.clears_received == 2
    assert_heard_exactly_what_the_model_sent_up_to_each_cut(report, session)
    assert_truncations_match_what_was_heard(report, session)
    cancelled = [r for r in session.responses if r.status == "cancelled"]
    assert {r.status_reason for r in cancelled} <= {"turn_detected"}


async def test_truncation_stays_exact_when_the_model_stalls_600_ms_mid_answer() -> None:
    # 300 ms of answer arrive in 75 ms (4x real time), then nothing for 600 ms: the caller
    # hears the 300 ms, ~375 ms of silence, then the rest. A wall-clock count from the
    # first delta would run that silence ahead of what was heard.
    stall = AgentOptions(stall_after_ms=300, stall_ms=600)
    async with running_bridge(stall) as bridge:
        report, session = await call_with_barge_in(bridge, turns=2, barge_in_after_ms=700)
    assert_heard_exactly_what_the_model_sent_up_to_each_cut(report, session)
    assert_truncations_match_what_was_heard(report, session)
    first_answer = [s for s in report.heard_segments if s.response == 1]
    gaps = [b.start_ms - a.end_ms for a, b in itertools.pairwise(first_answer)]
    assert max(gaps, default=0) > 300, "the stall did not reach the caller as silence"


async def test_a_two_item_answer_is_heard_in_order_and_truncated_per_item() -> None:
    async with running_bridge(AgentOptions(items_per_response=2)) as bridge:
        report, session = await call_with_barge_in(bridge, turns=2, barge_in_after_ms=1400)
    first = session.responses[0]
    assert len(first.items) == 2
    assert_heard_exactly_what_the_model_sent_up_to_each_cut(report, session)
    heard = heard_bytes_by_item(report)
    # Cut in the second item: the first was heard in full and needs no truncation.
    assert heard[first.items[0]] == first.audio_sent[first.items[0]]
    [truncation] = session.truncations
    assert truncation["item_id"] == first.items[1] and truncation["accepted"]
    assert abs(truncation["audio_end_ms"] - len(heard[first.items[1]]) / 8) <= 20


async def test_the_greeting_is_spoken_first() -> None:
    async with running_bridge(greeting="Hello, this is the demo line.") as bridge:
        report = await simulate_call(
            SimulatorOptions(
                webhook_url=bridge.webhook_url, auth_token=AUTH_TOKEN, turns=1, max_duration_s=30
            )
        )
        session = bridge.agent.sessions[0]
    assert report.greeting_heard_ms and report.greeting_complete
    kinds = [event["type"] for event in session.received]
    assert kinds.index("response.create") > kinds.index("session.update")


async def test_without_auto_interrupt_the_bridge_cancels_a_model_slower_than_real_time() -> None:
    # The model streams at 0.8x real time, so the caller hears it in bursts with gaps and
    # the answer is still being generated when the caller barges in.
    async with running_bridge(AgentOptions(speed=0.8), vad_interrupt_response=False) as bridge:
        report, session = await call_with_barge_in(bridge, turns=2, barge_in_after_ms=800)
    assert_heard_exactly_what_the_model_sent_up_to_each_cut(report, session)
    assert_truncations_match_what_was_heard(report, session)  # also: no error events
    cancels = [e for e in session.received if e["type"] == "response.cancel"]
    assert len(cancels) == 1
    assert session.responses[0].status_reason == "client_cancelled"


async def test_at_the_time_limit_the_caller_hears_a_goodbye_then_twilio_hangs_up() -> None:
    twilio = RecordingTwilio()
    async with running_bridge(
        max_call_duration_s=3, twilio_http=twilio, time_limit_message="Our time is up, goodbye."
    ) as bridge:
        report = await simulate_call(
            SimulatorOptions(
                webhook_url=bridge.webhook_url, auth_token=AUTH_TOKEN, turns=4, max_duration_s=30
            )
        )
        session = bridge.agent.sessions[0]
        assert await session.wait_closed(timeout=1.0)
    assert report.closed_by_bridge and report.close_code == 1000
    goodbye = session.responses[-1]
    request = next(e for e in session.received[::-1] if e["type"] == "response.create")
    assert request["response"]["instructions"].endswith("Our time is up, goodbye.")
    [item] = goodbye.items
    assert heard_bytes_by_item(report)[item] == goodbye.audio_sent[item], "goodbye cut short"
    # One hang-up through the REST API, for this call, only once the goodbye had played:
    # the agent sends it at 4x real time, so generating it takes a quarter of hearing it.
    [hang_up] = twilio.requests
    assert hang_up["path"].endswith(f"/Calls/{report.call_sid}.json")
    assert hang_up["data"] == {"Status": "completed"}
    first_sent_at = goodbye.sent_times[item][0][0]
    goodbye_ms = len(goodbye.audio_sent[item]) / 8
    assert (hang_up["at"] - first_sent_at) * 1000 >= goodbye_ms - 20


async def test_callers_over_the_limit_hear_busy_and_open_no_session() -> None:
    async with running_bridge(max_concurrent_calls=1, busy_message="All lines busy.") as bridge:
        first = asyncio.create_task(
            simulate_call(
                SimulatorOptions(webhook_url=bridge.webhook_url, auth_token=AUTH_TOKEN, turns=1)
            )
        )
        await bridge.agent.wait_for_session(0, timeout=5)
        async with httpx.AsyncClient() as http:
            readiness = await http.get(bridge.base_url + "/readyz")
        with pytest.raises(SimulatorError, match="Connect"):
            await simulate_call(
                SimulatorOptions(webhook_url=bridge.webhook_url, auth_token=AUTH_TOKEN, turns=1)
            )
        assert (await first).completed
        assert len(bridge.agent.sessions) == 1
        async with httpx.AsyncClient() as http:
            ready_again = await http.get(bridge.base_url + "/readyz")
            form = {"CallSid": "CA2", "From": "+1", "To": "+2"}
            answered = await http.post(
                bridge.webhook_url, data=form, headers=signed(bridge.webhook_url, form)
            )
            # Answered, its stream not connected yet: the line is held for it.
            held = await http.get(bridge.base_url + "/readyz")
    assert readiness.status_code == 503
    assert ready_again.status_code == 200
    assert "<Stream" in answered.text  # the line was free again
    assert held.status_code == 503


def signed(url: str, form: dict[str, str]) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(url, form)}


async def plain_call(bridge: RunningBridge, turns: int) -> CallReport:
    return await simulate_call(
        SimulatorOptions(
            webhook_url=bridge.webhook_url,
            auth_token=AUTH_TOKEN,
            turns=turns,
            turn_timeout_s=10,
            max_duration_s=60,
        )
    )


async def test_a_backend_dropped_mid_answer_is_reopened_and_the_call_goes_on() -> None:
    async with running_bridge(AgentOptions(drop_after_ms=600)) as bridge:
        report = await plain_call(bridge, turns=2)
        sessions = list(bridge.agent.sessions)
        for session in sessions:
            assert await session.wait_closed(timeout=1.0)
    assert [s.dropped for s in sessions] == [True, False]
    first, second = sessions
    assert report.completed and not report.closed_by_bridge
    # The new session was told the conversation so far, and the cut answer carried on.
    assert second.conversation_texts and second.conversation_texts[0][0] == "user"
    kinds = [e["type"] for e in second.received]
    assert kinds.index("response.create") > kinds.index("conversation.item.create")
    assert report.turns[1].answer_complete  # the next turn was answered by the new session
    assert_every_item_heard_as_sent(report, sessions)
    # The caller heard a short pause, not dead air: from the cut to the resumed answer.
    first_items = set(model_audio_by_item(first))
    answer = [s for s in report.heard_segments if s.response == 1]
    cut = max(s.end_ms for s in answer if s.item_id in first_items)
    resumed = min(
        s.start_ms
        for s in report.heard_segments
        if s.start_ms >= cut and s.item_id not in first_items
    )
    assert resumed - cut < 1000


async def test_sessions_roll_over_mid_call_and_the_caller_hears_every_answer() -> None:
    async with running_bridge(session_rollover_s=5) as bridge:
        report = await plain_call(bridge, turns=3)
        sessions = list(bridge.agent.sessions)
        for session in sessions:
            assert await session.wait_closed(timeout=1.0)
    assert len(sessions) >= 2
    assert not any(s.dropped or s.expired for s in sessions)  # retired by the bridge
    assert sessions[1].conversation_texts  # the new session knew the conversation
    assert report.completed
    assert all(turn.answer_complete for turn in report.turns)
    assert_every_item_heard_as_sent(report, sessions)
    assert all(s.errors_sent == [] for s in sessions)


async def test_a_session_ended_by_the_service_limit_is_replaced_and_the_call_goes_on() -> None:
    async with running_bridge(AgentOptions(max_session_s=4)) as bridge:
        report = await plain_call(bridge, turns=2)
        sessions = list(bridge.agent.sessions)
    assert sessions[0].expired and len(sessions) >= 2
    assert report.completed and all(turn.answer_complete for turn in report.turns)
    assert_every_item_heard_as_sent(report, sessions)
