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

from bridge.config import Settings
from bridge.profiles import DEFAULT_PROFILE, E164, Profiles, load_profiles
from twiml.answer import MAX_INSTRUCTIONS_CHARS
from twiml.rest import TwilioRest

log = logging.getLogger("bridge.outbound")

VOICE_PATH = "/voice"
CALL_STATUS_PATH = "/call-status"
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
