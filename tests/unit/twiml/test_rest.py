"""Twilio REST calls, through an HTTP client injected at the twilio SDK's seam (no network)."""

from __future__ import annotations

import pytest
from twilio.base.exceptions import TwilioRestException

from tests.helpers.twilio_rest_fake import (
    RecordingTwilio,
    created_call,
    incoming_number,
    number_list,
)
from twiml.rest import NumberSetupError, TwilioRest

ACCOUNT = "AC" + "a" * 32
CALL = "CA" + "b" * 32


async def test_hang_up_posts_status_completed_to_the_call() -> None:
    twilio = RecordingTwilio()
    assert await TwilioRest("token", twilio).hang_up(ACCOUNT, CALL) is True
    [request] = twilio.requests
    assert request["method"] == "POST"
    assert request["path"] == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json"
    assert request["data"] == {"Status": "completed"}
    assert request["auth"] == (ACCOUNT, "token")


@pytest.mark.parametrize(
    ("status", "code"), [(404, 20404), (400, 21220)], ids=["not-found", "not-in-progress"]
)
async def test_a_call_that_is_already_over_is_not_an_error(status: int, code: int) -> None:
    twilio = RecordingTwilio(status, {"code": code, "message": "gone", "status": status})
    assert await TwilioRest("token", twilio).hang_up(ACCOUNT, CALL) is False


async def test_other_failures_are_raised() -> None:
    twilio = RecordingTwilio(401, {"code": 20003, "message": "Authenticate", "status": 401})
    with pytest.raises(TwilioRestException):
        await TwilioRest("token", twilio).hang_up(ACCOUNT, CALL)


# --- updating a live call ------------------------------------------------------------------


async def test_update_call_hands_the_call_to_new_twiml() -> None:
    twilio = RecordingTwilio()
    twiml = "<Response><Dial><Number>+15551234567</Number></Dial></Response>"
    assert await TwilioRest("token", twilio).update_call(ACCOUNT, CALL, twiml) is True
    [request] = twilio.requests
    assert request["method"] == "POST"
    assert request["path"] == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json"
    assert request["data"] == {"Twiml": twiml}


async def test_update_call_on_a_call_already_over_is_not_an_error() -> None:
    twilio = RecordingTwilio(400, {"code": 21220, "message": "not in-progress", "status": 400})
    assert await TwilioRest("token", twilio).update_call(ACCOUNT, CALL, "<Response/>") is False


# --- placing a call ------------------------------------------------------------------------


async def test_place_call_asks_for_the_webhook_the_status_and_machine_detection() -> None:
    twilio = RecordingTwilio().answer(
        "POST", "/Calls.json", 201, created_call(ACCOUNT, CALL, "+15557654321", "+15551230000")
    )
    call_sid = await TwilioRest("token", twilio).place_call(
        ACCOUNT,
        to="+15557654321",
        from_="+15551230000",
        url="https://bridge.example.com/voice?profile=sales",
        status_callback="https://bridge.example.com/call-status",
        machine_detection="DetectMessageEnd",
    )
    assert call_sid == CALL
    [request] = twilio.requests
    assert (request["method"], request["path"]) == (
        "POST",
        f"/2010-04-01/Accounts/{ACCOUNT}/Calls.json",
    )
    assert request["data"] == {
        "To": "+15557654321",
        "From": "+15551230000",
        "Url": "https://bridge.example.com/voice?profile=sales",
        "Method": "POST",
        "StatusCallback": "https://bridge.example.com/call-status",
        "StatusCallbackEvent": ["completed"],
        "StatusCallbackMethod": "POST",
        "MachineDetection": "DetectMessageEnd",
    }


async def test_place_call_without_machine_detection_sends_none() -> None:
    twilio = RecordingTwilio().answer(
        "POST", "/Calls.json", 201, created_call(ACCOUNT, CALL, "+15557654321", "+15551230000")
    )
    await TwilioRest("token", twilio).place_call(
        ACCOUNT,
        "+15557654321",
        "+15551230000",
        "https://b.example/voice",
        "https://b.example/s",
        None,
    )
    assert "MachineDetection" not in twilio.requests[0]["data"]


# --- pointing a number at the bridge -------------------------------------------------------

NUMBER = "+15551230000"
NUMBER_SID = "PN" + "3f" * 16
VOICE_URL = "https://bridge.example.com/voice"
STATUS_URL = "https://bridge.example.com/call-status"
NUMBERS_PATH = f"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers.json"
NUMBER_PATH = f"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers/{NUMBER_SID}.json"


def twilio_with(*numbers: dict) -> RecordingTwilio:
    return (
        RecordingTwilio()
        .answer("GET", "/IncomingPhoneNumbers.json", 200, number_list(ACCOUNT, *numbers))
        .answer("POST", f"/{NUMBER_SID}.json", 200, incoming_number(ACCOUNT, NUMBER))
    )


async def test_configure_number_finds_the_number_and_points_it_at_the_bridge() -> None:
    # The filter matches partial numbers too: only the exact one is changed.
    twilio = twilio_with(
        incoming_number(ACCOUNT, "+155512300001", sid="PN" + "00" * 16),
        incoming_number(ACCOUNT, NUMBER),
    )
    change = await TwilioRest("token", twilio).configure_number(
        ACCOUNT, NUMBER, VOICE_URL, STATUS_URL
    )
    listing, update = twilio.requests
    assert (listing["method"], listing["path"]) == ("GET", NUMBERS_PATH)
    assert listing["params"]["PhoneNumber"] == NUMBER
    assert (update["method"], update["path"]) == ("POST", NUMBER_PATH)
    assert update["data"] == {
        "VoiceUrl": VOICE_URL,
        "VoiceMethod": "POST",
        "StatusCallback": STATUS_URL,
        "StatusCallbackMethod": "POST",
    }
    assert change.lines() == [
        f"VoiceUrl: https://demo.twilio.com/welcome/voice/ -> {VOICE_URL}",
        "VoiceMethod: GET -> POST",
        f"StatusCallback: (none) -> {STATUS_URL}",
        "StatusCallbackMethod: POST (unchanged)",
    ]


async def test_a_number_already_pointing_at_the_bridge_is_left_alone() -> None:
    twilio = twilio_with(
        incoming_number(ACCOUNT, NUMBER, voice_url=VOICE_URL, status_callback=STATUS_URL)
    )
    change = await TwilioRest("token", twilio).configure_number(
        ACCOUNT, NUMBER, VOICE_URL, STATUS_URL
    )
    assert not change.changed
    assert [r["method"] for r in twilio.requests] == ["GET"]


@pytest.mark.parametrize(
    ("numbers", "message"),
    [
        (
            [incoming_number(ACCOUNT, NUMBER, voice_application_sid="AP" + "1" * 32)],
            f"{NUMBER} is attached to the TwiML app AP{'1' * 32}, so Twilio ignores its voice "
            "URL: detach the app from the number in the Twilio console first, then run this "
            "again",
        ),
        (
            [incoming_number(ACCOUNT, NUMBER, trunk_sid="TK" + "2" * 32)],
            f"{NUMBER} belongs to the SIP trunk TK{'2' * 32}, so Twilio ignores its voice URL: "
            "remove it from the trunk in the Twilio console first, then run this again",
        ),
        ([], f"{NUMBER} is not a phone number of account {ACCOUNT}"),
    ],
    ids=["app-bound", "trunk-bound", "unknown"],
)
async def test_configure_number_refuses_what_it_cannot_change(
    numbers: list[dict], message: str
) -> None:
    twilio = twilio_with(*numbers)
    with pytest.raises(NumberSetupError) as refused:
        await TwilioRest("token", twilio).configure_number(ACCOUNT, NUMBER, VOICE_URL, STATUS_URL)
    assert str(refused.value) == message
    assert [r["method"] for r in twilio.requests] == ["GET"]  # nothing was changed
