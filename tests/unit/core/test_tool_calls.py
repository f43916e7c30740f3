"""The call's tools: the operator's (run outside the core), and end_call, transfer_call,
send_dtmf and keypad input (carried out by the core itself); and the races between tool
results, keys and the model's responses."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest

from bridge.core.actions import (
    Action,
    AddMessage,
    AddToolOutput,
    CancelResponse,
    ClearAudio,
    ConfigureSession,
    CreateResponse,
    DisableTurnDetection,
    EndReason,
    HangUp,
    PlayAudio,
    RunTool,
    Transfer,
)
from bridge.core.call_config import CallConfig
from bridge.core.events import BackendError, ToolFinished
from bridge.core.last_words import GOODBYE_LEAD, GOODBYE_PURPOSE
from bridge.core.phases import Phase
from bridge.dtmf import detect_dtmf
from tests.helpers.core_harness import CallHarness, configured_call, of

ALL_BUILTINS = frozenset({"end_call", "transfer_call", "send_dtmf"})
DIAL_SALES = "<Response><Dial><Number>+15551234567</Number></Dial></Response>"
WEATHER = {
    "type": "function",
    "name": "weather",
    "description": "The weather.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def harness(**config: Any) -> CallHarness:
    """A configured call offering every built-in (a transfer to sales) and the weather."""
    config.setdefault("builtin_tools", ALL_BUILTINS)
    config.setdefault("transfer_twiml", {"sales": DIAL_SALES})
    config.setdefault("tools", (WEATHER,))
    return configured_call(**config)


def function_call(
    h: CallHarness, name: str, arguments: dict[str, object], response_id: str, now: float
) -> list[Action]:
    return h.function_call(f"call_{name}", name, json.dumps(arguments), response_id, now)


def outputs(actions: list[Action]) -> list[object]:
    """The function call outputs given to the model, parsed."""
    return [json.loads(output.output) for output in of(AddToolOutput, actions)]


def response_creates(actions: list[Action]) -> list[CreateResponse]:
    return of(CreateResponse, actions)


def endings(actions: list[Action]) -> list[HangUp | Transfer]:
    return [a for a in actions if isinstance(a, HangUp | Transfer)]


def echo_all(h: CallHarness, now: float) -> list[Action]:
    """Twilio plays everything sent so far: every mark comes back."""
    actions: list[Action] = []
    for mark in h.played_marks:
        actions += h.echo(mark, now)
    h.played_marks.clear()
    return actions


@pytest.mark.parametrize(
    ("transfer_twiml", "expected"),
    [
        ({"sales": DIAL_SALES}, ["end_call", "transfer_call", "send_dtmf", "weather"]),
        ({}, ["end_call", "send_dtmf", "weather"]),  # no destination: no transfer_call
    ],
)
def test_the_session_is_offered_the_builtins_and_the_operators_tools(
    transfer_twiml: dict[str, str], expected: list[str]
) -> None:
    config = CallConfig(builtin_tools=ALL_BUILTINS, transfer_twiml=transfer_twiml, tools=(WEATHER,))
    [configure] = CallHarness(config).opened
    assert isinstance(configure, ConfigureSession)
    assert [t["name"] for t in configure.settings.tools] == expected
    for tool in configure.settings.tools:
        assert tool["type"] == "function" and tool["parameters"]["type"] == "object"


def test_end_call_after_a_spoken_goodbye_hangs_up_once_it_was_heard() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    h.delta("r1", "item1", 800, 0.0)  # "Goodbye!" (100 ms)
    actions = function_call(h, "end_call", {}, "r1", 0.05)
    assert outputs(actions) == [{"ok": True}]
    assert of(AddToolOutput, actions)[0].call_id == "call_end_call"
    assert response_creates(actions) == []  # its goodbye is already said
    assert of(DisableTurnDetection, actions), "VAD stays on: the caller could cut the goodbye"
    assert h.speech_started(0.06) == []  # nothing interrupts it now
    assert h.response_done("r1", 0.07) == []  # generated, but not heard yet
    assert endings(echo_all(h, 0.1)) == [HangUp(EndReason.ASSISTANT_ENDED)]
    assert HangUp(EndReason.ASSISTANT_ENDED).description == "the assistant ended the call"


def test_end_call_without_a_goodbye_asks_the_model_for_one_first() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    assert response_creates(function_call(h, "end_call", {}, "r1", 0.0)) == []
    [request] = response_creates(h.response_done("r1", 0.01))
    assert request.purpose == GOODBYE_PURPOSE
    assert request.instructions is not None and "goodbye" in request.instructions.lower()
    h.response_created("r2", 0.02, goodbye=True)
    h.delta("r2", "item2", 800, 0.03)
    assert endings(h.response_done("r2", 0.04)) == []
    assert endings(echo_all(h, 0.2)) == [HangUp(EndReason.ASSISTANT_ENDED)]


def test_end_call_twice_is_answered_but_changes_nothing() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    h.delta("r1", "item1", 800, 0.0)
    function_call(h, "end_call", {}, "r1", 0.0)
    again = h.function_call("call_end_call_2", "end_call", "{}", "r1", 0.01)
    assert outputs(again) == [{"error": "the call is ending"}]
    assert response_creates(again) == []


def test_transfer_says_the_handoff_line_then_hands_the_call_to_the_dial() -> None:
    h = harness(transfer_message="One moment, connecting you to sales.")
    h.response_created("r1", 0.0)
    actions = function_call(h, "transfer_call", {"destination": "sales"}, "r1", 0.0)
    assert outputs(actions) == [{"ok": True, "transferring_to": "sales"}]
    assert response_creates(h.response_done("r1", 0.01)) == [
        CreateResponse(GOODBYE_LEAD + "One moment, connecting you to sales.", GOODBYE_PURPOSE)
    ]
    h.response_created("r2", 0.02, goodbye=True)
    h.delta("r2", "item2", 1600, 0.03)
    h.response_done("r2", 0.04)
    final = endings(echo_all(h, 0.3))
    assert final == [Transfer(EndReason.TRANSFERRED, "sales", twiml=DIAL_SALES)]
    assert final[0].description == "transferred to sales"


def test_a_transfer_goes_ahead_even_if_the_session_drops_before_the_handoff_line() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    function_call(h, "transfer_call", {"destination": "sales"}, "r1", 0.0)
    assert h.backend_closed("connection lost", 0.1) == [
        Transfer(EndReason.TRANSFERRED, "sales", twiml=DIAL_SALES)
    ]


def test_an_unknown_destination_is_refused_and_the_model_goes_on() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    actions = function_call(h, "transfer_call", {"destination": "mars"}, "r1", 0.0)
    [output] = outputs(actions)
    assert isinstance(output, dict)
    assert "unknown destination" in output["error"] and "sales" in output["error"]
    assert response_creates(actions) == []  # r1 is still active: asking now is an error
    assert response_creates(h.response_done("r1", 0.01)) == [CreateResponse()]


def test_send_dtmf_plays_decodable_tones_after_the_answer_and_vad_cannot_clear_them() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    actions = function_call(h, "send_dtmf", {"digits": "12#"}, "r1", 0.0)
    assert outputs(actions) == [{"ok": True}]
    assert response_creates(actions) == []  # the menu answers; the model listens
    plays = of(PlayAudio, actions)
    assert len(plays) >= 2 and all(play.mark for play in plays)  # each piece with its mark
    assert len({play.mark for play in plays}) == len(plays)
    tones = b"".join(base64.b64decode(play.payload) for play in plays)
    assert detect_dtmf(tones) == "12#"
    assert h.speech_started(0.1) == []  # the menu talking over our keys: no clear
    assert of(ClearAudio, h.speech_started(0.1)) == []


def test_send_dtmf_with_bad_digits_tells_the_model() -> None:
    h = harness()
    actions = function_call(h, "send_dtmf", {"digits": "12x"}, "r9", 0.0)
    [output] = outputs(actions)
    assert isinstance(output, dict) and "error" in output
    assert len(response_creates(actions)) == 1


def test_an_operators_tool_runs_outside_and_its_output_lets_the_model_go_on() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    actions = function_call(h, "weather", {"city": "Oslo"}, "r1", 0.0)
    assert actions == [RunTool("call_weather", "weather", '{"city": "Oslo"}')]
    # Finished while r1 is still active: the response.create waits for r1 to end.
    done = h.handle(ToolFinished("call_weather", '{"temp": 3}'), 0.1)
    assert done == [AddToolOutput("call_weather", '{"temp": 3}')]
    assert outputs(done) == [{"temp": 3}] and response_creates(done) == []
    assert len(response_creates(h.response_done("r1", 0.2))) == 1
    assert h.handle(ToolFinished("call_weather", "{}"), 0.3) == []  # only once


def test_a_tool_the_session_was_not_offered_gets_an_error_output() -> None:
    h = harness()
    actions = function_call(h, "launch_rockets", {}, "r1", 0.0)
    assert outputs(actions) == [{"error": "there is no tool named 'launch_rockets'"}]


def test_keys_reach_the_model_as_text_on_hash_and_never_reach_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    h = harness()
    actions: list[Action] = []
    for digit in "4921#":
        actions += h.key(digit, 0.1)
    [message] = of(AddMessage, actions)
    assert message.role == "user"
    assert "4921#" in message.text
    assert len(response_creates(actions)) == 1
    assert "4921" not in caplog.text


def test_keys_without_hash_are_sent_after_the_pause() -> None:
    h = harness(keypad_pause_s=2.0)
    for digit in "77":
        h.key(digit, 1.0)
    assert h.tick(2.9) == []
    [message] = of(AddMessage, h.tick(3.0))
    assert message.role == "user" and "77" in message.text


def test_a_key_pressed_while_the_assistant_talks_stops_it() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    h.delta("r1", "item1", 1600, 0.0)
    actions = h.key("1", 0.05)
    assert of(ClearAudio, actions)
    assert of(CancelResponse, actions)


# --- races --------------------------------------------------------------------------------


def test_a_second_request_waits_until_the_first_response_exists() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    function_call(h, "weather", {}, "r1", 0.0)
    h.response_done("r1", 0.1)
    assert len(response_creates(h.handle(ToolFinished("call_weather", "{}"), 0.2))) == 1
    # Keys arrive before that response was created: asking again now would be refused.
    keys = h.key("1", 0.21) + h.key("#", 0.22)
    assert response_creates(keys) == []
    h.response_created("r2", 0.3)
    assert len(response_creates(h.response_done("r2", 0.4))) == 1  # the keys get theirs


def test_a_refused_request_is_asked_again_after_the_response_in_the_way() -> None:
    h = harness()
    assert len(response_creates(h.key("#", 0.0))) == 1
    # Server VAD started an answer at the same moment: ours is refused.
    h.handle(BackendError("conversation_already_has_active_response", "busy"), 0.01)
    h.response_created("vad", 0.02)
    assert len(response_creates(h.response_done("vad", 0.5))) == 1


def test_no_rollover_while_a_tool_runs_and_a_result_after_a_drop_still_reaches_the_model() -> None:
    h = harness(rollover_after_s=60.0)
    h.response_created("r1", 0.0)
    function_call(h, "weather", {}, "r1", 0.0)
    h.response_done("r1", 0.1)
    assert h.tick(61.0) == []  # not quiet: a tool is working
    # The connection drops while it runs; a new session is configured.
    h.backend_closed("connection lost", 62.0)
    h.backend_opened(62.1)
    h.session_updated(now=62.2)
    actions = h.handle(ToolFinished("call_weather", '{"temp": 3}'), 63.0)
    # The new session does not know the call_id: the result comes as a note for the model.
    assert of(AddToolOutput, actions) == []
    [message] = of(AddMessage, actions)
    assert message.role == "system" and '{"temp": 3}' in message.text
    assert len(response_creates(actions)) == 1


def test_end_call_after_a_long_answer_waits_for_all_of_it() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    for _ in range(20):  # 20 s of answer, sent at once; nothing echoed yet
        h.delta("r1", "item1", 8000, 0.0)
    function_call(h, "end_call", {}, "r1", 0.1)
    h.response_done("r1", 0.2)
    assert endings(h.tick(16.0)) == [], "hung up mid-answer"
    assert endings(echo_all(h, 20.1)) == [HangUp(EndReason.ASSISTANT_ENDED)]


def test_a_goodbye_being_spoken_when_the_session_drops_still_plays_out() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    h.delta("r1", "item1", 8000, 0.0)
    function_call(h, "end_call", {}, "r1", 0.1)
    assert h.backend_closed("connection lost", 0.2) == []  # 1 s still queued
    assert endings(echo_all(h, 1.0)) == [HangUp(EndReason.ASSISTANT_ENDED)]


def test_a_function_call_from_an_interrupted_answer_is_not_carried_out() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    h.delta("r1", "item1", 1600, 0.0)
    h.speech_started(0.05)  # the caller talks over it
    actions = function_call(h, "end_call", {}, "r1", 0.06)
    assert outputs(actions) == [{"error": "not done: the caller interrupted"}]
    assert endings(actions) == []
    assert h.call.phase is Phase.BRIDGING


def test_a_waiting_request_is_dropped_while_the_caller_talks() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    function_call(h, "weather", {}, "r1", 0.0)
    h.handle(ToolFinished("call_weather", "{}"), 0.1)  # waits for r1
    h.speech_started(0.2)
    # r1 ends (cancelled by the barge-in) while the caller speaks: server VAD will answer.
    assert response_creates(h.response_done("r1", 0.3, status="cancelled")) == []


def test_a_call_told_of_twice_is_carried_out_once() -> None:
    """Its arguments' done and its item's done both name it (the codec reads either, as a
    gateway may leave the name out of the first): the tool runs once."""
    h = harness()
    h.response_created("r1", 0.0)
    first = h.function_call("call_w", "weather", '{"city": "Oslo"}', "r1", 0.0)
    assert first == [RunTool("call_w", "weather", '{"city": "Oslo"}')]
    assert h.function_call("call_w", "weather", '{"city": "Oslo"}', "r1", 0.01) == []
