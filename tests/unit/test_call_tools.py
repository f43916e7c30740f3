"""The call core's tools: the operator's (run outside), and end_call, transfer_call,
send_dtmf and keypad input (carried out by the core itself)."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from bridge.dtmf import detect_dtmf
from bridge.realtime.dialects import Dialect
from tests.legacy.call_api import Call, CallConfig, HangUp, RunTool, TransferCall
from tests.unit.test_call_core import Harness, start_message, to_realtime, to_twilio, twilio

ALL_BUILTINS = frozenset({"end_call", "transfer_call", "send_dtmf"})
DIAL_SALES = "<Response><Dial><Number>+15551234567</Number></Dial></Response>"
WEATHER = {
    "type": "function",
    "name": "weather",
    "description": "The weather.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def harness(dialect: Dialect = Dialect.GA, **config: object) -> Harness:
    config.setdefault("builtin_tools", ALL_BUILTINS)
    config.setdefault("transfer_twiml", {"sales": DIAL_SALES})
    config.setdefault("tools", (WEATHER,))
    h = Harness(dialect, **config)
    h.session_updated()
    return h


def function_call(h: Harness, name: str, arguments: dict, response_id: str, now: float) -> list:
    event = {
        "type": "response.function_call_arguments.done",
        "response_id": response_id,
        "item_id": f"fc_{name}",
        "output_index": 1,
        "call_id": f"call_{name}",
        "name": name,
        "arguments": json.dumps(arguments),
    }
    return h.server(event, now)


def outputs(actions: list) -> list[dict]:
    return [
        json.loads(e["item"]["output"])
        for e in to_realtime(actions)
        if e["type"] == "conversation.item.create" and e["item"]["type"] == "function_call_output"
    ]


def response_creates(actions: list) -> list[dict]:
    return [e for e in to_realtime(actions) if e["type"] == "response.create"]


def echo_all(h: Harness, now: float) -> list:
    actions = []
    for mark in h.sent_marks:
        actions += h.echo(mark, now)
    h.sent_marks.clear()
    return actions


@pytest.mark.parametrize("dialect", list(Dialect))
def test_the_session_is_offered_the_builtins_and_the_operators_tools(dialect: Dialect) -> None:
    for transfer, expected in (
        ({"sales": DIAL_SALES}, ["end_call", "transfer_call", "send_dtmf", "weather"]),
        ({}, ["end_call", "send_dtmf", "weather"]),
    ):
        call = Call(
            CallConfig(
                dialect=dialect,
                builtin_tools=ALL_BUILTINS,
                transfer_twiml=transfer,
                tools=(WEATHER,),
            )
        )
        call.receive_twilio(start_message(), 0.0)
        [update] = to_realtime(call.realtime_connected(0.0))
        session = update["session"]
        assert [t["name"] for t in session["tools"]] == expected
        assert session["tool_choice"] == "auto"
        for tool in session["tools"]:
            assert tool["type"] == "function" and tool["parameters"]["type"] == "object"


def test_end_call_after_a_spoken_goodbye_hangs_up_once_it_was_heard() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    h.delta("r1", "item1", 800, 0.0)  # "Goodbye!" (100 ms)
    actions = function_call(h, "end_call", {}, "r1", 0.05)
    assert outputs(actions) == [{"ok": True}]
    assert response_creates(actions) == []  # its goodbye is already said
    off = [e for e in to_realtime(actions) if e["type"] == "session.update"]
    assert off, "VAD stays on: the caller could cut the goodbye"
    assert h.speech_started(0.06) == []  # nothing interrupts it now
    assert h.response_done("r1", 0.07) == []  # generated, but not heard yet
    actions = echo_all(h, 0.1)
    assert [a for a in actions if isinstance(a, HangUp)] == [HangUp("the assistant ended the call")]


def test_end_call_without_a_goodbye_asks_the_model_for_one_first() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    assert response_creates(function_call(h, "end_call", {}, "r1", 0.0)) == []
    [request] = response_creates(h.response_done("r1", 0.01))
    assert request["response"]["metadata"] == {"phone_bridge": "goodbye"}
    assert "goodbye" in request["response"]["instructions"].lower()
    response = {"id": "r2", "metadata": request["response"]["metadata"]}
    h.server({"type": "response.created", "response": response}, 0.02)
    h.delta("r2", "item2", 800, 0.03)
    assert not [a for a in h.response_done("r2", 0.04) if isinstance(a, HangUp)]
    assert [a for a in echo_all(h, 0.2) if isinstance(a, HangUp)]


def test_end_call_twice_is_answered_but_changes_nothing() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    h.delta("r1", "item1", 800, 0.0)
    function_call(h, "end_call", {}, "r1", 0.0)
    again = function_call(h, "end_call", {}, "r1", 0.01)
    assert outputs(again) == [{"error": "the call is ending"}]
    assert response_creates(again) == []


def test_transfer_says_the_handoff_line_then_hands_the_call_to_the_dial() -> None:
    h = harness(transfer_message="One moment, connecting you to sales.")
    h.response_created("r1", 0.0)
    actions = function_call(h, "transfer_call", {"destination": "sales"}, "r1", 0.0)
    assert outputs(actions) == [{"ok": True, "transferring_to": "sales"}]
    [request] = response_creates(h.response_done("r1", 0.01))
    assert "One moment, connecting you to sales." in request["response"]["instructions"]
    h.server({"type": "response.created", "response": {"id": "r2", "metadata": {
        "phone_bridge": "goodbye"}}}, 0.02)  # fmt: skip
    h.delta("r2", "item2", 1600, 0.03)
    h.response_done("r2", 0.04)
    final = [a for a in echo_all(h, 0.3) if isinstance(a, TransferCall | HangUp)]
    assert final == [TransferCall(DIAL_SALES, "transferred to sales")]


def test_a_transfer_goes_ahead_even_if_the_session_drops_before_the_handoff_line() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    function_call(h, "transfer_call", {"destination": "sales"}, "r1", 0.0)
    actions = h.call.realtime_closed("connection lost", 0.1)
    assert actions == [TransferCall(DIAL_SALES, "transferred to sales")]


def test_an_unknown_destination_is_refused_and_the_model_goes_on() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    actions = function_call(h, "transfer_call", {"destination": "mars"}, "r1", 0.0)
    [output] = outputs(actions)
    assert "unknown destination" in output["error"] and "sales" in output["error"]
    assert response_creates(actions) == []  # r1 is still active: asking now is an error
    assert len(response_creates(h.response_done("r1", 0.01))) == 1


def test_send_dtmf_plays_decodable_tones_after_the_answer_and_vad_cannot_clear_them() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    actions = function_call(h, "send_dtmf", {"digits": "12#"}, "r1", 0.0)
    assert outputs(actions) == [{"ok": True}]
    assert response_creates(actions) == []  # the menu answers; the model listens
    media = [m for m in to_twilio(actions) if m["event"] == "media"]
    marks = [m for m in to_twilio(actions) if m["event"] == "mark"]
    assert len(media) == len(marks) >= 2
    tones = b"".join(base64.b64decode(m["media"]["payload"]) for m in media)
    assert detect_dtmf(tones) == "12#"
    assert h.speech_started(0.1) == []  # the menu talking over our keys: no clear
    assert not [m for m in to_twilio(h.speech_started(0.1)) if m["event"] == "clear"]


def test_send_dtmf_with_bad_digits_tells_the_model() -> None:
    h = harness()
    actions = function_call(h, "send_dtmf", {"digits": "12x"}, "r9", 0.0)
    assert "error" in outputs(actions)[0]
    assert len(response_creates(actions)) == 1


def test_an_operators_tool_runs_outside_and_its_output_lets_the_model_go_on() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    actions = function_call(h, "weather", {"city": "Oslo"}, "r1", 0.0)
    assert actions == [RunTool("call_weather", "weather", '{"city": "Oslo"}')]
    # Finished while r1 is still active: the response.create waits for r1 to end.
    done = h.call.tool_finished("call_weather", '{"temp": 3}', 0.1)
    assert outputs(done) == [{"temp": 3}] and response_creates(done) == []
    assert len(response_creates(h.response_done("r1", 0.2))) == 1
    assert h.call.tool_finished("call_weather", "{}", 0.3) == []  # only once


def test_a_tool_the_session_was_not_offered_gets_an_error_output() -> None:
    h = harness()
    actions = function_call(h, "launch_rockets", {}, "r1", 0.0)
    assert outputs(actions) == [{"error": "there is no tool named 'launch_rockets'"}]


def test_keys_reach_the_model_as_text_on_hash_and_never_reach_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    h = harness()
    actions = []
    for digit in "4921#":
        actions += h.call.receive_twilio(twilio("dtmf", dtmf={"digit": digit}), 0.1)
    [message] = [e for e in to_realtime(actions) if e["type"] == "conversation.item.create"]
    assert message["item"]["role"] == "user"
    assert "4921#" in message["item"]["content"][0]["text"]
    assert len(response_creates(actions)) == 1
    assert "4921" not in caplog.text


def test_keys_without_hash_are_sent_after_the_pause() -> None:
    h = harness(keypad_pause_s=2.0)
    for digit in "77":
        h.call.receive_twilio(twilio("dtmf", dtmf={"digit": digit}), 1.0)
    assert h.call.tick(2.9) == []
    [message] = [e for e in to_realtime(h.call.tick(3.0)) if e["type"].startswith("conv")]
    assert "77" in message["item"]["content"][0]["text"]


def test_a_key_pressed_while_the_assistant_talks_stops_it() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    h.delta("r1", "item1", 1600, 0.0)
    actions = h.call.receive_twilio(twilio("dtmf", dtmf={"digit": "1"}), 0.05)
    assert [m for m in to_twilio(actions) if m["event"] == "clear"]
    assert any(e["type"] == "response.cancel" for e in to_realtime(actions))


# --- races --------------------------------------------------------------------------------


def test_a_second_request_waits_until_the_first_response_exists() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    function_call(h, "weather", {}, "r1", 0.0)
    h.response_done("r1", 0.1)
    assert len(response_creates(h.call.tool_finished("call_weather", "{}", 0.2))) == 1
    # Keys arrive before that response was created: asking again now would be refused.
    keys = h.call.receive_twilio(twilio("dtmf", dtmf={"digit": "1"}), 0.21)
    keys += h.call.receive_twilio(twilio("dtmf", dtmf={"digit": "#"}), 0.22)
    assert response_creates(keys) == []
    h.response_created("r2", 0.3)
    assert len(response_creates(h.response_done("r2", 0.4))) == 1  # the keys get theirs


def test_a_refused_request_is_asked_again_after_the_response_in_the_way() -> None:
    h = harness()
    keys = h.call.receive_twilio(twilio("dtmf", dtmf={"digit": "#"}), 0.0)
    assert len(response_creates(keys)) == 1
    # Server VAD started an answer at the same moment: ours is refused.
    refused = {"type": "error", "error": {"type": "invalid_request_error",
               "code": "conversation_already_has_active_response", "message": "busy"}}  # fmt: skip
    h.server(refused, 0.01)
    h.response_created("vad", 0.02)
    assert len(response_creates(h.response_done("vad", 0.5))) == 1


def test_no_rollover_while_a_tool_runs_and_a_result_after_a_drop_still_reaches_the_model() -> None:
    h = harness(rollover_after_s=60.0)
    h.response_created("r1", 0.0)
    function_call(h, "weather", {}, "r1", 0.0)
    h.response_done("r1", 0.1)
    assert h.call.tick(61.0) == []  # not quiet: a tool is working
    # The connection drops while it runs; a new session is configured.
    h.call.realtime_closed("connection lost", 62.0)
    h.call.realtime_connected(62.1)
    h.session_updated(now=62.2)
    actions = h.call.tool_finished("call_weather", '{"temp": 3}', 63.0)
    [message] = [e for e in to_realtime(actions) if e["type"] == "conversation.item.create"]
    assert message["item"]["type"] == "message" and message["item"]["role"] == "system"
    assert '{"temp": 3}' in message["item"]["content"][0]["text"]
    assert len(response_creates(actions)) == 1


def test_end_call_after_a_long_answer_waits_for_all_of_it() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    for _ in range(20):  # 20 s of answer, sent at once; nothing echoed yet
        h.delta("r1", "item1", 8000, 0.0)
    function_call(h, "end_call", {}, "r1", 0.1)
    h.response_done("r1", 0.2)
    assert not [a for a in h.call.tick(16.0) if isinstance(a, HangUp)], "hung up mid-answer"
    assert [a for a in echo_all(h, 20.1) if isinstance(a, HangUp)]


def test_a_goodbye_being_spoken_when_the_session_drops_still_plays_out() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    h.delta("r1", "item1", 8000, 0.0)
    function_call(h, "end_call", {}, "r1", 0.1)
    assert h.call.realtime_closed("connection lost", 0.2) == []  # 1 s still queued
    assert [a for a in echo_all(h, 1.0) if isinstance(a, HangUp)]


def test_a_function_call_from_an_interrupted_answer_is_not_carried_out() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    h.delta("r1", "item1", 1600, 0.0)
    h.speech_started(0.05)  # the caller talks over it
    actions = function_call(h, "end_call", {}, "r1", 0.06)
    assert outputs(actions) == [{"error": "not done: the caller interrupted"}]
    assert not [a for a in actions if isinstance(a, HangUp | TransferCall)]
    assert h.call.phase.value == "bridging"


def test_a_waiting_request_is_dropped_while_the_caller_talks() -> None:
    h = harness()
    h.response_created("r1", 0.0)
    function_call(h, "weather", {}, "r1", 0.0)
    h.call.tool_finished("call_weather", "{}", 0.1)  # waits for r1
    h.speech_started(0.2)
    # r1 ends (cancelled by the barge-in) while the caller speaks: server VAD will answer.
    assert response_creates(h.response_done("r1", 0.3, status="cancelled")) == []
