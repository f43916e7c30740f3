"""Outbound calls: Twilio dials a number and, once answered, connects it to this bridge.

Shared by `phone-bridge call` and `POST /calls`. The call's profile and its own
instructions ride in the voice webhook URL's query string: Twilio signs the full URL, so
the webhook's signature check covers them, and whichever replica answers the webhook
passes them on to the stream.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from twilio.base.exceptions import TwilioRestException

from bridge.operator_auth import api_error, bearer_ok
from bridge.profiles import DEFAULT_PROFILE, E164, Profiles, load_profiles
from bridge.settings import Settings
from twiml.answer import MAX_INSTRUCTIONS_CHARS
from twiml.request_body import RefusalLog, RequestRefused, read_body
from twiml.rest import TwilioRest
from twiml.webhooks import CALL_STATUS_PATH, VOICE_PATH

log = logging.getLogger("bridge.outbound")

_CALL_REQUEST_FIELDS = {"to", "profile", "instructions", "machine_detection"}
# A POST /calls body is a number, a profile name and instructions of at most ~500 chars.
MAX_CALL_REQUEST_BYTES = 16 * 1024
_SIP_ADDRESS = re.compile(r"sips?:[^\s<>\"']+@[^\s<>\"']+")


class OutboundCallError(ValueError):
    """A call that cannot be placed as asked; `problems` has one line each, for the
    operator, and the message joins them."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def voice_url(public_url: str, profile: str, instructions: str | None) -> str:
    """The voice webhook URL of an outbound call, carrying its profile and instructions."""
    query = {"profile": profile}
    if instructions is not None:
        query["instructions"] = instructions
    return f"{public_url}{VOICE_PATH}?{urlencode(query)}"


def _problems(
    settings: Settings,
    rest: TwilioRest | None,
    to: str,
    profile: str | None,
    instructions: str | None,
    profiles: Profiles,
) -> list[str]:
    """Everything in the way of placing the call, at once: what was asked first (a typo in
    the number needs no credentials to be found), then what the bridge is missing."""
    problems = []
    if not (E164.fullmatch(to) or _SIP_ADDRESS.fullmatch(to)):
        problems.append(f"to: {to!r} is neither an E.164 number (+15551234567) nor a sip: address")
    if profile is not None and profiles.get(profile) is None:
        problems.append(
            f"profile: no profile named {profile!r}; the profiles are "
            + ", ".join(profiles.names())
        )
    if instructions is not None:
        if not instructions.strip():
            problems.append("instructions: must not be empty")
        elif len(instructions) > MAX_INSTRUCTIONS_CHARS:
            problems.append(
                f"instructions: {len(instructions)} characters, over the "
                f"{MAX_INSTRUCTIONS_CHARS} a call can carry (Twilio's limit on a stream "
                "parameter); put longer instructions in a profile"
            )
    if not settings.twilio_account_sid:
        problems.append("TWILIO_ACCOUNT_SID: required to place calls (AC..., Twilio console)")
    if not settings.twilio_phone_number:
        problems.append(
            "TWILIO_PHONE_NUMBER: required to place calls (the Twilio number they come from)"
        )
    if rest is None or settings.twilio_auth_token is None:
        problems.append("TWILIO_AUTH_TOKEN: required to place calls")
    if not settings.public_url:
        problems.append(
            "PUBLIC_URL: required to place calls (the https URL Twilio reaches this bridge at)"
        )
    return problems


async def place_outbound_call(
    settings: Settings,
    rest: TwilioRest | None,
    to: str,
    profile: str | None = None,
    instructions: str | None = None,
    machine_detection: bool = True,
    profiles: Profiles | None = None,
) -> str:
    """Have Twilio call `to` and connect the call to this bridge; returns the CallSid.

    `profile` names the agent profile (default: the default one); `instructions` replace
    the profile's for this call. With `machine_detection`, a machine that answers hears
    MACHINE_MESSAGE (after its beep) or is hung up on, and never reaches the AI.
    Raises OutboundCallError for a call that cannot be placed as asked; Twilio's own
    refusals come as TwilioRestException."""
    if profiles is None:
        profiles = load_profiles(settings)
    to = to.strip()
    problems = _problems(settings, rest, to, profile, instructions, profiles)
    if problems:
        raise OutboundCallError(problems)
    assert rest is not None and settings.public_url and settings.twilio_phone_number
    assert settings.twilio_account_sid
    detection = None
    if machine_detection:
        # With a message to leave, Twilio waits for the beep, so it is heard in full.
        detection = "DetectMessageEnd" if settings.machine_message else "Enable"
    chosen = profile or DEFAULT_PROFILE
    call_sid = await rest.place_call(
        settings.twilio_account_sid,
        to=to,
        from_=settings.twilio_phone_number,
        url=voice_url(settings.public_url, chosen, instructions),
        status_callback=settings.public_url + CALL_STATUS_PATH,
        machine_detection=detection,
    )
    # Never the instructions: they may hold what the call is about.
    log.info(
        "placed outbound call %s (profile %s%s, machine detection %s)",
        call_sid,
        chosen,
        ", own instructions" if instructions is not None else "",
        detection or "off",
    )
    return call_sid


def outbound_router(
    settings: Settings, rest: TwilioRest | None, profiles: Profiles, refusals: RefusalLog
) -> APIRouter:
    """`POST /calls`: place an outbound call (operators only: Authorization: Bearer
    OPERATOR_TOKEN)."""
    router = APIRouter()

    @router.post("/calls")
    async def place_call(request: Request) -> Response:
        operator_token = settings.operator_token
        if operator_token is None:
            return api_error(
                404,
                "placing calls over HTTP is off: set OPERATOR_TOKEN to a long random secret "
                "to enable POST /calls",
            )
        if not bearer_ok(request, operator_token):
            refusals.refused("/calls: no valid bearer token")
            response = api_error(
                401, "a valid 'Authorization: Bearer <OPERATOR_TOKEN>' is required"
            )
            response.headers["Connection"] = "close"  # its body is not read
            return response
        try:
            body = orjson.loads(await read_body(request, MAX_CALL_REQUEST_BYTES))
        except RequestRefused as refused:
            return refused.response()
        except orjson.JSONDecodeError:
            return api_error(422, "the body must be a JSON object")
        problem = _call_request_problem(body)
        if problem:
            return api_error(422, problem)
        try:
            call_sid = await place_outbound_call(
                settings,
                rest,
                body["to"],
                profile=body.get("profile"),
                instructions=body.get("instructions"),
                machine_detection=body.get("machine_detection", True),
                profiles=profiles,
            )
        except OutboundCallError as exc:
            return api_error(422, str(exc))
        except TwilioRestException as exc:
            # Not its message: Twilio's often quotes the number called.
            log.warning("Twilio refused an outbound call: error %s", exc.code)
            return api_error(502, f"Twilio refused the call: {exc.msg} (error {exc.code})")
        except (TimeoutError, OSError) as exc:
            log.warning("could not reach Twilio to place a call: %r", exc)
            return api_error(502, "could not reach Twilio's API; try again")
        return JSONResponse({"call_sid": call_sid}, status_code=201)

    return router


def _call_request_problem(body: object) -> str | None:
    """What is wrong with a POST /calls body's shape, if anything (values are checked
    when the call is placed)."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    unknown = sorted(set(body) - _CALL_REQUEST_FIELDS)
    if unknown:
        return f"unknown field(s) {', '.join(unknown)}; the fields are " + ", ".join(
            sorted(_CALL_REQUEST_FIELDS)
        )
    if not isinstance(body.get("to"), str):
        return "to: required, the number to call (E.164) or a sip: address"
    for name in ("profile", "instructions"):
        if body.get(name) is not None and not isinstance(body[name], str):
            return f"{name}: must be a string"
    if not isinstance(body.get("machine_detection", True), bool):
        return "machine_detection: must be true or false"
    return None
