"""TwiML answers and signature checks, as Twilio sees them."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from twiml.answer import (
    INSTRUCTIONS_PARAMETER,
    MAX_INSTRUCTIONS_CHARS,
    PROFILE_PARAMETER,
    busy,
    connect_stream,
    dial,
    machine_answer,
    stream_url,
    xml_safe,
)
from twiml.signature import SignatureChecker


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("https://bridge.example.com", "wss://bridge.example.com/media-stream"),
        ("https://bridge.example.com:8443/", "wss://bridge.example.com:8443/media-stream"),
        ("https://example.com/phone", "wss://example.com/phone/media-stream"),
        ("http://127.0.0.1:8080", "ws://127.0.0.1:8080/media-stream"),
    ],
)
def test_stream_url_follows_the_public_base(base: str, expected: str) -> None:
    assert stream_url(base) == expected


def test_connect_stream_passes_call_data_as_parameters_and_falls_back_to_say() -> None:
    xml = connect_stream(
        "wss://bridge.example.com/media-stream",
        {"CallSid": "CA123", "From": "+15550001111", "To": "+15550002222", "Empty": ""},
        "Sorry, try later.",
    )
    root = ET.fromstring(xml)
    assert [child.tag for child in root] == ["Connect", "Say"]
    stream = root.find("Connect/Stream")
    assert stream is not None
    assert stream.get("url") == "wss://bridge.example.com/media-stream"
    assert "?" not in stream.get("url", "")
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params == {"CallSid": "CA123", "From": "+15550001111", "To": "+15550002222"}
    assert root.find("Say").text == "Sorry, try later."


def test_parameters_are_cut_below_twilios_500_character_limit() -> None:
    root = ET.fromstring(connect_stream("wss://x/media-stream", {"From": "9" * 800}, None))
    [param] = root.findall("Connect/Stream/Parameter")
    assert len(param.get("name")) + len(param.get("value")) < 500
    assert root.find("Say") is None


def test_signature_checks_accept_twilios_signature_and_nothing_else() -> None:
    token = "12345"
    validator = RequestValidator(token)
    checker = SignatureChecker(token)
    url = "https://bridge.example.com/voice"
    form = {"CallSid": "CA1", "From": "+1555"}
    good = validator.compute_signature(url, form)
    assert checker.webhook_is_signed(url, form, good)
    assert not checker.webhook_is_signed(url, {**form, "From": "+1666"}, good)
    assert not checker.webhook_is_signed(url, form, None)
    assert not checker.webhook_is_signed(
        url, form, RequestValidator("other").compute_signature(url, form)
    )
    # Twilio signs the port-less URL; the check accepts it with an explicit :443 too.
    assert checker.webhook_is_signed("https://bridge.example.com:443/voice", form, good)

    ws_url = "wss://bridge.example.com/media-stream"
    ws_sig = validator.compute_signature(ws_url, {})
    assert checker.stream_is_signed(ws_url, ws_sig)
    assert not checker.stream_is_signed("wss://evil.example.com/media-stream", ws_sig)
    assert not checker.stream_is_signed(ws_url, "")


# --- transfers, machines, profiles ---------------------------------------------------------

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("+15551234567", "<Dial><Number>+15551234567</Number></Dial>"),
        ("sip:help@pbx.example.com", "<Dial><Sip>sip:help@pbx.example.com</Sip></Dial>"),
        ("sips:desk@pbx.example.com", "<Dial><Sip>sips:desk@pbx.example.com</Sip></Dial>"),
    ],
)
def test_dial_hands_the_call_to_a_number_or_a_sip_address(target: str, expected: str) -> None:
    assert dial(target) == f"{XML_DECLARATION}<Response>{expected}</Response>"


def test_a_transfer_nobody_answers_ends_with_a_message_not_silence() -> None:
    assert dial("+15551234567", "Nobody could take the call.") == (
        f"{XML_DECLARATION}<Response><Dial><Number>+15551234567</Number></Dial>"
        "<Say>Nobody could take the call.</Say></Response>"
    )


def test_a_machine_hears_the_message_then_the_call_ends() -> None:
    assert machine_answer("Call us back at 555 & ask for Bo.") == (
        f"{XML_DECLARATION}<Response><Say>Call us back at 555 &amp; ask for Bo.</Say>"
        "<Hangup /></Response>"
    )
    assert machine_answer(None) == f"{XML_DECLARATION}<Response><Hangup /></Response>"


def test_profile_and_instructions_travel_as_stream_parameters() -> None:
    instructions = "x" * MAX_INSTRUCTIONS_CHARS
    xml = connect_stream(
        "wss://bridge.example.com/media-stream",
        {"CallSid": "CA1", PROFILE_PARAMETER: "sales", INSTRUCTIONS_PARAMETER: instructions},
        None,
    )
    params = {
        p.get("name"): p.get("value")
        for p in ET.fromstring(xml).findall("Connect/Stream/Parameter")
    }
    # The longest instructions a call may carry arrive whole, right at Twilio's limit.
    assert params == {"CallSid": "CA1", "Profile": "sales", "Instructions": instructions}
    assert len("Instructions") + len(instructions) == 499


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_every_answer_is_well_formed_xml_whatever_the_caller_sent(value: str) -> None:
    answers = [
        connect_stream("wss://b.example.com/media-stream", {"From": value, "To": value}, value),
        busy(value),
        dial("+15551234567", value),
        machine_answer(value),
    ]
    for answer in answers:
        root = ET.fromstring(answer.encode("utf-8"))  # strict: a malformed answer raises
        assert root.tag == "Response"
    parameters = {
        p.get("name"): p.get("value") for p in ET.fromstring(answers[0]).iter("Parameter")
    }
    kept = xml_safe(value)
    assert parameters.get("From", "") == kept  # only what XML cannot carry is taken out
