"""Twilio's REST API, which is out of reach here: an HTTP client for the twilio SDK's seam
that answers like api.twilio.com and records every request."""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

from twilio.http import HttpClient
from twilio.http.response import Response


class RecordingTwilio(HttpClient):
    """Answers every request with `status` and `body`, except those given their own answer
    with `answer(method, path_suffix, ...)`. Each request is recorded in `requests`."""

    def __init__(self, status: int = 200, body: dict | None = None) -> None:
        self.requests: list[dict] = []
        self.status = status
        self.body = body or {"status": "completed"}
        self._answers: list[tuple[str, str, int, dict]] = []

    def answer(self, method: str, path_suffix: str, status: int, body: dict) -> RecordingTwilio:
        """Answer `method` requests whose path ends with `path_suffix` this way (the first
        matching answer wins)."""
        self._answers.append((method.upper(), path_suffix, status, body))
        return self

    def request(self, method, uri, params=None, data=None, headers=None, auth=None, **kw):  # type: ignore[no-untyped-def, override]
        path = urlsplit(uri).path
        self.requests.append(
            {
                "method": method,
                "path": path,
                "params": params,
                "data": data,
                "auth": auth,
                "at": time.monotonic(),
            }
        )
        status, body = self.status, self.body
        for answer_method, suffix, answer_status, answer_body in self._answers:
            if method.upper() == answer_method and path.endswith(suffix):
                status, body = answer_status, answer_body
                break
        return Response(status, json.dumps(body))


# --- answers as api.twilio.com gives them (2010-04-01 API, JSON) ------------------------------


def incoming_number(
    account_sid: str,
    phone_number: str,
    sid: str = "PN" + "3f" * 16,
    voice_url: str | None = "https://demo.twilio.com/welcome/voice/",
    status_callback: str = "",
    voice_application_sid: str | None = None,
    trunk_sid: str | None = None,
) -> dict:
    """One IncomingPhoneNumber resource, every field Twilio returns for it."""
    uri = f"/2010-04-01/Accounts/{account_sid}/IncomingPhoneNumbers/{sid}.json"
    return {
        "account_sid": account_sid,
        "address_requirements": "none",
        "address_sid": None,
        "api_version": "2010-04-01",
        "beta": False,
        "bundle_sid": None,
        "capabilities": {"fax": False, "mms": True, "sms": True, "voice": True},
        "date_created": "Thu, 30 Jul 2015 23:19:04 +0000",
        "date_updated": "Thu, 30 Jul 2015 23:19:04 +0000",
        "emergency_address_sid": None,
        "emergency_address_status": "unregistered",
        "emergency_status": "Active",
        "friendly_name": "(555) 123-0000",
        "identity_sid": None,
        "origin": "twilio",
        "phone_number": phone_number,
        "sid": sid,
        "sms_application_sid": "",
        "sms_fallback_method": "POST",
        "sms_fallback_url": "",
        "sms_method": "POST",
        "sms_url": "https://demo.twilio.com/welcome/sms/reply/",
        "status": "in-use",
        "status_callback": status_callback,
        "status_callback_method": "POST",
        "subresource_uris": {
            "assigned_add_ons": uri.removesuffix(".json") + "/AssignedAddOns.json"
        },
        "trunk_sid": trunk_sid,
        "type": "local",
        "uri": uri,
        "voice_application_sid": voice_application_sid,
        "voice_caller_id_lookup": False,
        "voice_fallback_method": "POST",
        "voice_fallback_url": None,
        "voice_method": "GET" if voice_url and "demo.twilio.com" in voice_url else "POST",
        "voice_receive_mode": "voice",
        "voice_url": voice_url,
    }


def number_list(account_sid: str, *numbers: dict) -> dict:
    """A page of IncomingPhoneNumbers, as `list(phone_number=...)` gets it."""
    uri = f"/2010-04-01/Accounts/{account_sid}/IncomingPhoneNumbers.json?PageSize=50&Page=0"
    return {
        "end": max(len(numbers) - 1, 0),
        "first_page_uri": uri,
        "incoming_phone_numbers": list(numbers),
        "next_page_uri": None,
        "page": 0,
        "page_size": 50,
        "previous_page_uri": None,
        "start": 0,
        "uri": uri,
    }


def created_call(account_sid: str, call_sid: str, to: str, from_: str) -> dict:
    """The Call resource `calls.create` gets back: queued, not yet ringing."""
    return {
        "account_sid": account_sid,
        "annotation": None,
        "answered_by": None,
        "api_version": "2010-04-01",
        "caller_name": None,
        "date_created": None,
        "date_updated": None,
        "direction": "outbound-api",
        "duration": None,
        "end_time": None,
        "forwarded_from": None,
        "from": from_,
        "from_formatted": from_,
        "group_sid": None,
        "parent_call_sid": None,
        "phone_number_sid": "PN" + "3f" * 16,
        "price": None,
        "price_unit": "USD",
        "sid": call_sid,
        "start_time": None,
        "status": "queued",
        "subresource_uris": {},
        "to": to,
        "to_formatted": to,
        "trunk_sid": None,
        "uri": f"/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json",
        "queue_time": "0",
    }


def created_recording(account_sid: str, call_sid: str, sid: str) -> dict:
    """A Recording resource as Twilio returns it when a call's recording starts."""
    return {
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "call_sid": call_sid,
        "conference_sid": None,
        "date_created": None,
        "date_updated": "Thu, 03 Dec 2026 10:00:00 +0000",
        "start_time": "Thu, 03 Dec 2026 10:00:00 +0000",
        "duration": "-1",
        "sid": sid,
        "price": None,
        "uri": f"/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}/Recordings/{sid}.json",
        "encryption_details": None,
        "price_unit": None,
        "status": "in-progress",
        "channels": 2,
        "source": "StartCallRecordingAPI",
        "error_code": None,
        "track": "both",
    }
