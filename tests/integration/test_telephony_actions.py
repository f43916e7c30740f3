"""Telephony actions over loopback: the local agent calls tools, the simulator is the caller
(and presses keys), Twilio's REST API is an injected HTTP client."""

from __future__ import annotations

import asyncio
import json

import pytest

from bridge.dtmf import detect_dtmf
from bridge.local_agent import AgentOptions, AgentSession, FunctionCallPlan
from bridge.simulator import CallReport
from tests.helpers.heard_audio import heard_bytes_by_item
from tests.helpers.running_bridge import RunningBridge, running_bridge
from tests.helpers.twilio_rest_fake import RecordingTwilio
from tests.helpers.twilio_side import simulated_call

pytestmark = pytest.mark.integration

SALES = "+15551234567"


async def call(
    bridge: RunningBridge, turns: int, **options: object
) -> tuple[CallReport, AgentSession]:
    return await simulated_call(bridge, turns=turns, utterance_ms=600, **options)


def agent_calling(plans: dict[int, FunctionCallPlan]) -> AgentOptions:
    return AgentOptions(function_calls=plans)


async def test_end_call_hangs_up_through_rest_only_after_the_goodbye_was_heard() -> None:
    twilio = RecordingTwilio()
    # The second answer says its piece, then calls end_call, as a model saying goodbye does.
    plans = {2: FunctionCallPlan("end_call", {}, speak_first=True)}
    async with running_bridge(agent_calling(plans), twilio_http=twilio) as bridge:
        report, session = await call(bridge, turns=4)
    assert report.closed_by_bridge, "the bridge did not end the call"
    assert len(report.turns) < 4, "the caller went on talking after the end"
    goodbye = session.responses[1]
    [item] = [i for i in goodbye.items if i in goodbye.audio_sent]
    assert heard_bytes_by_item(report)[item] == goodbye.audio_sent[item], "goodbye cut short"
    [hang_up] = twilio.requests
    assert hang_up["path"].endswith(f"/Calls/{report.call_sid}.json")
    assert hang_up["data"] == {"Status": "completed"}
    first_sent_at = goodbye.sent_times[item][0][0]
    goodbye_ms = len(goodbye.audio_sent[item]) / 8
    assert (hang_up["at"] - first_sent_at) * 1000 >= goodbye_ms - 20
    assert [json.loads(o["output"]) for o in session.function_outputs] == [{"ok": True}]


async def test_transfer_updates_the_call_with_the_exact_dial_twiml() -> None:
    twilio = RecordingTwilio()
    plans = {1: FunctionCallPlan("transfer_call", {"destination": "sales"}, speak_first=False)}
    async with running_bridge(
        agent_calling(plans),
        twilio_http=twilio,
        transfer_targets=f'{{"sales": "{SALES}"}}',
        transfer_message="Connecting you to sales now.",
        transfer_failed_message="Nobody is free, sorry.",
    ) as bridge:
        report, session = await call(bridge, turns=2)
    assert report.closed_by_bridge
    handoff = next(e for e in session.received[::-1] if e["type"] == "response.create")
    assert handoff["response"]["instructions"].endswith("Connecting you to sales now.")
    [transfer] = twilio.requests
    assert transfer["path"].endswith(f"/Calls/{report.call_sid}.json")
    assert transfer["data"] == {
        "Twiml": '<?xml version="1.0" encoding="UTF-8"?><Response><Dial><Number>'
        + SALES
        + "</Number></Dial><Say>Nobody is free, sorry.</Say></Response>"
    }
    # The handoff line was heard in full before Twilio was asked to move the call.
    line = session.responses[-1]
    [item] = line.items
    assert heard_bytes_by_item(report)[item] == line.audio_sent[item]


async def test_keypad_digits_reach_the_model_as_text_and_it_answers() -> None:
    async with running_bridge() as bridge:
        report, session = await call(bridge, turns=2, keypad={2: "4921#"})
    assert [text for role, text in session.conversation_texts if role == "user"] == [
        "(The caller pressed these keys on their phone keypad: 4921#)"
    ]
    assert report.turns[1].keys == "4921#"
    assert report.turns[1].answer_heard_ms > 0, "the model did not answer the keys"


async def test_send_dtmf_plays_tones_the_far_end_can_decode() -> None:
    plans = {1: FunctionCallPlan("send_dtmf", {"digits": "1w23#"}, speak_first=False)}
    async with running_bridge(agent_calling(plans)) as bridge:
        report, session = await call(bridge, turns=1)
    assert detect_dtmf(report.heard_audio) == "123#"
    assert [json.loads(o["output"]) for o in session.function_outputs] == [{"ok": True}]


async def test_a_tool_that_raises_or_times_out_is_an_error_to_the_model_not_the_call() -> None:
    plans = {
        1: FunctionCallPlan("explode", {}, speak_first=False),
        3: FunctionCallPlan("dawdle", {}, speak_first=False),
    }
    async with running_bridge(
        agent_calling(plans), tools_module="tests.helpers.tools_for_tests", tool_timeout_s=5
    ) as bridge:
        report, session = await call(bridge, turns=2)
    assert report.completed and not report.closed_by_bridge
    outputs = {o["name"]: json.loads(o["output"]) for o in session.function_outputs}
    assert outputs["explode"] == {"error": "the tool failed (RuntimeError)"}
    assert outputs["dawdle"]["error"].startswith("timed out after 0.3")
    # Each error let the model go on: it answered after each tool output.
    assert len(report.turns) == 2
    assert all(turn.answer_heard_ms > 0 for turn in report.turns)


async def test_a_tool_still_running_when_the_caller_hangs_up_is_cancelled() -> None:
    from tests.helpers import tools_for_tests

    tools_for_tests.slow_lookup_started.clear()
    tools_for_tests.slow_lookup_cancelled.clear()
    plans = {1: FunctionCallPlan("slow_lookup", {}, speak_first=False)}
    async with running_bridge(
        agent_calling(plans), tools_module="tests.helpers.tools_for_tests"
    ) as bridge:
        # The caller gives up waiting for an answer after 2 s and hangs up.
        report, _ = await call(bridge, turns=1, turn_timeout_s=2)
        assert tools_for_tests.slow_lookup_started.is_set()
        assert report.turns[0].timed_out
        async with asyncio.timeout(1.0):
            await tools_for_tests.slow_lookup_cancelled.wait()
