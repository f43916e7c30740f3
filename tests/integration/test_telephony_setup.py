"""Telephony setup as an operator meets it: outbound calls (over HTTP and from the command
line), answering machines, agent profiles, Twilio's status callbacks, pointing a number at
the bridge. The real app over loopback; only Twilio's REST API is recorded, not reached."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from twilio.request_validator import RequestValidator

from bridge.cli import main as cli_main
from tests.helpers.records import record
from tests.helpers.running_bridge import AUTH_TOKEN, RunningBridge, running_bridge, stored_record
from tests.helpers.twilio_rest_fake import (
    RecordingTwilio,
    created_call,
    created_recording,
    incoming_number,
    number_list,
)
from tests.helpers.twilio_side import (
    CALL_SID,
    assert_call_fully_gone,
    bridged_session,
    simulated_call,
    start_stream,
)

pytestmark = pytest.mark.integration

ACCOUNT = "AC" + "c" * 32
OUR_NUMBER = "+15551230000"
CALLEE = "+15557654321"
# The stream side (twilio_side.start_stream) plays this call.
PLACED_CALL = CALL_SID
OPERATOR_TOKEN = "operator-token-for-tests-0123456789"
MACHINE_MESSAGE = "Hi, this is Acme about your order. Please call us back."
OWN_INSTRUCTIONS = "Remind them about Friday's delivery."
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'


@pytest.fixture
def profiles_file(tmp_path: Path) -> Path:
    path = tmp_path / "profiles.toml"
    path.write_text(
        f"""
        [profiles.sales]
        numbers = ["{OUR_NUMBER}"]
        instructions = "You sell anvils for Acme."
        voice = "ash"
        """
    )
    return path


def signed(url: str, form: dict[str, str]) -> dict[str, str]:
    """Headers as Twilio signs a webhook: over the full URL it requested and the form."""
    return {"X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(url, form)}


def webhook_form(call_sid: str, to: str, **extra: str) -> dict[str, str]:
    return {
        "CallSid": call_sid,
        "AccountSid": ACCOUNT,
        "From": OUR_NUMBER if "Direction" in extra else "+15550001111",
        "To": to,
        "CallStatus": "in-progress",
        "ApiVersion": "2010-04-01",
        **extra,
    }


async def twilio_webhook(url: str, form: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(url, data=form, headers=signed(url, form))


def stream_parameters(twiml: str) -> dict[str, str]:
    root = ET.fromstring(twiml)
    assert root.find("Connect/Stream") is not None, twiml
    return {p.get("name"): p.get("value") for p in root.iter("Parameter")}  # type: ignore[misc]


async def place(bridge: RunningBridge, body: object, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx.AsyncClient() as http:
        return await http.post(bridge.base_url + "/calls", json=body, headers=headers)


# --- outbound calls over HTTP --------------------------------------------------------------


async def test_an_outbound_call_leaves_a_machine_its_message_and_connects_a_person(
    profiles_file: Path,
) -> None:
    twilio = RecordingTwilio().answer(
        "POST", "/Calls.json", 201, created_call(ACCOUNT, PLACED_CALL, CALLEE, OUR_NUMBER)
    )
    async with running_bridge(
        twilio_http=twilio,
        twilio_account_sid=ACCOUNT,
        twilio_phone_number=OUR_NUMBER,
        operator_token=OPERATOR_TOKEN,
        profiles_file=str(profiles_file),
        machine_message=MACHINE_MESSAGE,
        max_concurrent_calls=1,
    ) as bridge:
        request = {"to": CALLEE, "profile": "sales", "instructions": OWN_INSTRUCTIONS}
        for token in (None, "wrong-token"):
            refused = await place(bridge, request, token)
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == "Bearer"
        for body, error in [
            ({**request, "profile": "salse"}, "profile: no profile named 'salse'"),
            ({**request, "instructions": "x" * 488}, "instructions: 488 characters, over the 487"),
            ({**request, "to": "5557654321"}, "to: '5557654321' is neither an E.164 number"),
            ({**request, "machineDetection": False}, "unknown field(s) machineDetection"),
        ]:
            invalid = await place(bridge, body, OPERATOR_TOKEN)
            assert invalid.status_code == 422
            assert invalid.json()["error"].startswith(error)
        assert twilio.requests == []  # nothing reached Twilio

        placed = await place(bridge, request, OPERATOR_TOKEN)
        assert placed.status_code == 201
        assert placed.json() == {"call_sid": PLACED_CALL}
        [create] = twilio.requests
        assert create["path"] == f"/2010-04-01/Accounts/{ACCOUNT}/Calls.json"
        assert create["auth"] == (ACCOUNT, AUTH_TOKEN)
        voice_url = (
            f"{bridge.base_url}/voice?profile=sales"
            "&instructions=Remind+them+about+Friday%27s+delivery."
        )
        assert create["data"] == {
            "To": CALLEE,
            "From": OUR_NUMBER,
            "Url": voice_url,
            "Method": "POST",
            "StatusCallback": f"{bridge.base_url}/call-status",
            "StatusCallbackEvent": ["completed"],
            "StatusCallbackMethod": "POST",
            # A message to leave: Twilio waits for the beep before asking for TwiML.
            "MachineDetection": "DetectMessageEnd",
        }

        # Twilio's webhook for that call, at the URL it was given: a machine took it.
        machine = await twilio_webhook(
            voice_url,
            webhook_form(
                PLACED_CALL, CALLEE, Direction="outbound-api", AnsweredBy="machine_end_beep"
            ),
        )
        assert machine.status_code == 200
        assert machine.text == (
            f"{XML_DECLARATION}<Response><Say>{MACHINE_MESSAGE}</Say><Hangup /></Response>"
        )
        assert bridge.agent.sessions == []

        # Had a person answered: a stream carrying the profile and the call's own
        # instructions. The one line was not taken by the machine, so it is free.
        person = await twilio_webhook(
            voice_url,
            webhook_form(PLACED_CALL, CALLEE, Direction="outbound-api", AnsweredBy="human"),
        )
        parameters = stream_parameters(person.text)
        assert parameters["Profile"] == "sales"
        assert parameters["Instructions"] == OWN_INSTRUCTIONS
        assert parameters["To"] == CALLEE

        # The stream side rebuilds the call from those parameters alone.
        ws = await start_stream(bridge, parameters)
        session = await bridged_session(bridge)
        update = next(e for e in session.received if e["type"] == "session.update")
        assert update["session"]["instructions"] == OWN_INSTRUCTIONS
        assert update["session"]["audio"]["output"]["voice"] == "ash"
        await ws.close()
        await assert_call_fully_gone(bridge)


# --- inbound calls, status callbacks, the endpoint switched off ----------------------------


async def test_the_called_number_picks_the_profile_and_call_status_is_recorded_if_signed(
    profiles_file: Path,
) -> None:
    async with running_bridge(profiles_file=str(profiles_file)) as bridge:
        off = await place(bridge, {"to": CALLEE}, OPERATOR_TOKEN)
        assert off.status_code == 404
        assert "set OPERATOR_TOKEN" in off.json()["error"]

        to_sales = await twilio_webhook(
            bridge.webhook_url, webhook_form("CA" + "1" * 32, OUR_NUMBER)
        )
        assert stream_parameters(to_sales.text)["Profile"] == "sales"
        elsewhere = await twilio_webhook(
            bridge.webhook_url, webhook_form("CA" + "2" * 32, "+15559990000")
        )
        parameters = stream_parameters(elsewhere.text)
        assert parameters["Profile"] == "default"
        assert "Instructions" not in parameters

        status_url = bridge.base_url + "/call-status"
        final = {
            "CallSid": "CA" + "1" * 32,
            "AccountSid": ACCOUNT,
            "CallStatus": "completed",
            "CallDuration": "42",
            "From": "+15550001111",
            "To": OUR_NUMBER,
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }
        async with httpx.AsyncClient() as http:
            forged = await http.post(status_url, data={**final, "CallDuration": "1"})
            assert forged.status_code == 403
            recorded = await http.post(status_url, data=final, headers=signed(status_url, final))
            assert recorded.status_code == 204
        # Twilio's word on the call waits for its record, and is part of it once written.
        store = bridge.app.state.store
        await store.save(replace(record(final["CallSid"]), final_status=None, duration_s=None))
        kept = await store.get(final["CallSid"])
        assert (kept.final_status, kept.duration_s) == ("completed", 42)


async def test_a_recording_notice_is_said_before_the_stream_connects_per_profile(
    tmp_path: Path,
) -> None:
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(
        f"""
        [profiles.sales]
        numbers = ["{OUR_NUMBER}"]
        recording_notice = ""
        """
    )
    notice = "This call is recorded & may be reviewed."
    async with running_bridge(profiles_file=str(profiles), recording_notice=notice) as bridge:
        default = await twilio_webhook(
            bridge.webhook_url, webhook_form("CA" + "1" * 32, "+15559990000")
        )
        sales = await twilio_webhook(bridge.webhook_url, webhook_form("CA" + "2" * 32, OUR_NUMBER))
    # Said first, before any audio reaches the assistant; the sales line turned it off.
    assert [(e.tag, e.text) for e in ET.fromstring(default.text)][:2] == [
        ("Say", notice),
        ("Connect", None),
    ]
    assert ET.fromstring(sales.text)[0].tag == "Connect"


async def test_twilio_records_the_call_and_its_record_keeps_the_recording() -> None:
    recording_sid = "RE" + "7" * 32
    twilio = RecordingTwilio().answer(
        "POST", "/Recordings.json", 201, created_recording(ACCOUNT, "CA", recording_sid)
    )
    async with running_bridge(twilio_http=twilio, recording="twilio") as bridge:
        report, _ = await simulated_call(bridge, turns=1)
        kept = await stored_record(bridge, report.call_sid)
        callback = bridge.base_url + "/recording-status"
        done = {
            "AccountSid": ACCOUNT,
            "CallSid": report.call_sid,
            "RecordingSid": recording_sid,
            "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/"
            + recording_sid,
            "RecordingStatus": "completed",
            "RecordingDuration": "7",
            "RecordingChannels": "2",
            "RecordingSource": "StartCallRecordingAPI",
        }
        async with httpx.AsyncClient() as http:
            forged = await http.post(callback, data={**done, "RecordingDuration": "1"})
            told = await http.post(callback, data=done, headers=signed(callback, done))
        finished = await bridge.app.state.store.get(report.call_sid)

    [asked] = [r for r in twilio.requests if r["path"].endswith("/Recordings.json")]
    assert asked["method"] == "POST"
    assert asked["path"].endswith(f"/Calls/{report.call_sid}/Recordings.json")
    assert asked["data"]["RecordingChannels"] == "dual"  # caller and assistant apart
    assert asked["data"]["RecordingStatusCallback"] == callback
    assert report.completed and report.heard_audio  # the call went on as ever
    assert kept.recording is not None
    assert (kept.recording.kind, kept.recording.sid, kept.recording.status) == (
        "twilio",
        recording_sid,
        "in-progress",
    )
    assert kept.recording.url is not None and kept.recording.url.endswith(recording_sid)
    assert (forged.status_code, told.status_code) == (403, 204)
    assert finished is not None and finished.recording is not None
    assert (finished.recording.status, finished.recording.duration_s) == ("completed", 7)


async def test_a_recording_twilio_refuses_costs_the_call_nothing() -> None:
    twilio = RecordingTwilio().answer(
        "POST", "/Recordings.json", 400, {"code": 21220, "message": "Call is not in-progress"}
    )
    async with running_bridge(twilio_http=twilio, recording="twilio") as bridge:
        report, _ = await simulated_call(bridge, turns=1)
        kept = await stored_record(bridge, report.call_sid)
    assert report.completed and report.heard_audio
    assert kept.recording is not None and kept.recording.status == "failed"
    assert "21220" in kept.recording.error or "not in-progress" in kept.recording.error


# --- the command line: configure-number, call ----------------------------------------------

PUBLIC_URL = "https://bridge.example.com"
NUMBER_SID = "PN" + "3f" * 16


@pytest.fixture
def cli_env(no_settings_in_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's environment for the command; nothing of this machine's leaks in."""
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
    monkeypatch.setenv("TWILIO_PHONE_NUMBER", OUR_NUMBER)
    monkeypatch.setenv("PUBLIC_URL", PUBLIC_URL)


@pytest.mark.usefixtures("cli_env")
def test_configure_number_points_the_number_at_the_bridge_and_says_what_changed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    twilio = (
        RecordingTwilio()
        .answer(
            "GET",
            "/IncomingPhoneNumbers.json",
            200,
            number_list(ACCOUNT, incoming_number(ACCOUNT, OUR_NUMBER, sid=NUMBER_SID)),
        )
        .answer(
            "POST",
            f"/IncomingPhoneNumbers/{NUMBER_SID}.json",
            200,
            incoming_number(
                ACCOUNT,
                OUR_NUMBER,
                sid=NUMBER_SID,
                voice_url=PUBLIC_URL + "/voice",
                status_callback=PUBLIC_URL + "/call-status",
            ),
        )
    )
    assert cli_main(["configure-number", OUR_NUMBER], twilio_http=twilio) == 0
    listing, update = twilio.requests
    assert listing["path"] == f"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers.json"
    assert listing["params"]["PhoneNumber"] == OUR_NUMBER
    assert (
        update["path"] == f"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers/{NUMBER_SID}.json"
    )
    assert update["data"] == {
        "VoiceUrl": "https://bridge.example.com/voice",
        "VoiceMethod": "POST",
        "StatusCallback": "https://bridge.example.com/call-status",
        "StatusCallbackMethod": "POST",
    }
    assert capsys.readouterr().out.splitlines() == [
        f"{OUR_NUMBER} ({NUMBER_SID}) now points at this bridge:",
        "  VoiceUrl: https://demo.twilio.com/welcome/voice/ -> https://bridge.example.com/voice",
        "  VoiceMethod: GET -> POST",
        "  StatusCallback: (none) -> https://bridge.example.com/call-status",
        "  StatusCallbackMethod: POST (unchanged)",
    ]


@pytest.mark.usefixtures("cli_env")
def test_configure_number_refuses_a_number_bound_to_a_twiml_app(
    capsys: pytest.CaptureFixture[str],
) -> None:
    app_sid = "AP" + "1" * 32
    bound = incoming_number(ACCOUNT, OUR_NUMBER, voice_application_sid=app_sid)
    twilio = RecordingTwilio().answer(
        "GET", "/IncomingPhoneNumbers.json", 200, number_list(ACCOUNT, bound)
    )
    assert cli_main(["configure-number", OUR_NUMBER], twilio_http=twilio) == 2
    assert [r["method"] for r in twilio.requests] == ["GET"]
    output = capsys.readouterr()
    assert output.out == ""
    assert output.err == (
        f"phone-bridge: {OUR_NUMBER} is attached to the TwiML app {app_sid}, so Twilio "
        "ignores its voice URL: detach the app from the number in the Twilio console "
        "first, then run this again\n"
    )


@pytest.mark.usefixtures("cli_env")
def test_call_places_the_call_and_prints_its_sid(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, profiles_file: Path
) -> None:
    monkeypatch.setenv("PROFILES_FILE", str(profiles_file))
    twilio = RecordingTwilio().answer(
        "POST", "/Calls.json", 201, created_call(ACCOUNT, PLACED_CALL, CALLEE, OUR_NUMBER)
    )
    argv = ["call", CALLEE, "--profile", "sales", "--no-machine-detection"]
    assert cli_main(argv, twilio_http=twilio) == 0
    assert capsys.readouterr().out == PLACED_CALL + "\n"
    [create] = twilio.requests
    assert create["data"]["Url"] == PUBLIC_URL + "/voice?profile=sales"
    assert "MachineDetection" not in create["data"]

    assert cli_main(["call", CALLEE, "--profile", "support"], twilio_http=twilio) == 2
    assert capsys.readouterr().err == (
        "phone-bridge: cannot place the call: profile: no profile named 'support'; the "
        "profiles are default, sales\n"
    )
    assert len(twilio.requests) == 1


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize(
    ("argv", "missing_for"),
    [
        (["call", "555-1234"], "place calls"),
        (["configure-number", "555-1234"], "configure a number"),
    ],
)
def test_call_and_configure_number_list_every_problem_at_once_the_number_first(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    missing_for: str,
) -> None:
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "PUBLIC_URL"):
        monkeypatch.delenv(name)
    twilio = RecordingTwilio()
    assert cli_main(argv, twilio_http=twilio) == 2
    assert twilio.requests == []  # nothing reaches Twilio
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith("there are 4 problems:"), lines
    assert "'555-1234'" in lines[1] and "E.164" in lines[1]
    assert [line.partition(":")[0] for line in lines[2:]] == [
        "  - TWILIO_ACCOUNT_SID",
        "  - TWILIO_AUTH_TOKEN",
        "  - PUBLIC_URL",
    ], lines
    assert all(f"required to {missing_for}" in line for line in lines[2:]), lines
