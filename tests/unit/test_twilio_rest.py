"""Twilio REST calls, through an HTTP client injected at the twilio SDK's seam (no network)."""

from __future__ import annotations

import pytest
from twilio.base.exceptions import TwilioRestException

from tests.twilio_rest_fake import RecordingTwilio
from twiml.rest import TwilioRest

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
