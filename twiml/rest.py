"""Twilio REST calls the bridge makes: on a live call, to place one, to set up a number."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from twilio.base.exceptions import TwilioRestException
from twilio.http import HttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

log = logging.getLogger("twiml.rest")

# Twilio's answers when the call is already over: not found, or "not in-progress".
_ALREADY_OVER_CODES = {20404, 21220}
_Result = TypeVar("_Result")


class NumberSetupError(Exception):
    """A number `configure_number` will not touch; the message is one line, for the operator."""


@dataclass(frozen=True, slots=True)
class FieldChange:
    field: str  # as Twilio's API names it: VoiceUrl, StatusCallback, ...
    old: str | None
    new: str

    @property
    def changed(self) -> bool:
        return (self.old or "") != self.new

    def __str__(self) -> str:
        if not self.changed:
            return f"{self.field}: {self.new} (unchanged)"
        return f"{self.field}: {self.old or '(none)'} -> {self.new}"


@dataclass(frozen=True, slots=True)
class NumberChange:
    phone_number: str
    sid: str
    fields: tuple[FieldChange, ...]

    @property
    def changed(self) -> bool:
        return any(f.changed for f in self.fields)

    def lines(self) -> list[str]:
        return [str(f) for f in self.fields]


class TwilioRest:
    """Twilio's REST API: hang-up, call updates, outbound calls, number setup.

    The twilio SDK is synchronous; its calls run in a worker thread so a slow API never
    stalls the audio of other calls. `http_client` is the SDK's own seam for tests.
    """

    def __init__(
        self, auth_token: str, http_client: HttpClient | None = None, timeout_s: float = 5.0
    ) -> None:
        self._auth_token = auth_token
        self._http = http_client or TwilioHttpClient(timeout=timeout_s)
        self._timeout_s = timeout_s

    def _client(self, account_sid: str) -> Client:
        return Client(account_sid, self._auth_token, http_client=self._http)

    async def _run(self, work: Callable[[], _Result], requests: int = 1) -> _Result:
        # The SDK's timeout bounds each request; this bounds the whole exchange.
        deadline = self._timeout_s * requests + 1
        return await asyncio.wait_for(asyncio.to_thread(work), deadline)

    async def hang_up(self, account_sid: str, call_sid: str) -> bool:
        """End the call. True if Twilio ended it, False if it was already over."""
        return await self._update_live_call(account_sid, call_sid, status="completed")

    async def update_call(self, account_sid: str, call_sid: str, twiml: str) -> bool:
        """Move the call on to `twiml` (a transfer's <Dial>; it ends the media stream).
        True if Twilio took it, False if the call was already over."""
        return await self._update_live_call(account_sid, call_sid, twiml=twiml)

    async def _update_live_call(self, account_sid: str, call_sid: str, **fields: str) -> bool:
        def update() -> None:
            self._client(account_sid).calls(call_sid).update(**fields)

        try:
            await self._run(update)
        except TwilioRestException as exc:
            if exc.status == 404 or exc.code in _ALREADY_OVER_CODES:
                return False
            raise
        return True

    async def start_recording(self, account_sid: str, call_sid: str, status_callback: str) -> str:
        """Record the call, both parties on their own channel (dual), from now on; Twilio
        posts the recording's status to `status_callback` once it is complete. Returns the
        Recording SID."""

        def create() -> str:
            recording = (
                self._client(account_sid)
                .calls(call_sid)
                .recordings.create(
                    recording_channels="dual",
                    recording_status_callback=status_callback,
                    recording_status_callback_event=["completed", "absent"],
                )
            )
            return str(recording.sid)

        return await self._run(create)

    async def place_call(
        self,
        account_sid: str,
        to: str,
        from_: str,
        url: str,
        status_callback: str,
        machine_detection: str | None,
    ) -> str:
        """Call `to` from `from_`; when answered, Twilio fetches its TwiML from `url` (POST).
        `status_callback` hears the final status. `machine_detection` ("Enable" or
        "DetectMessageEnd") makes Twilio tell a machine from a person before fetching
        `url`, and say which in `AnsweredBy`. Returns the new CallSid."""
        extra = {"machine_detection": machine_detection} if machine_detection else {}

        def create() -> str:
            call = self._client(account_sid).calls.create(
                to=to,
                from_=from_,
                url=url,
                method="POST",
                status_callback=status_callback,
                status_callback_event=["completed"],
                status_callback_method="POST",
                **extra,
            )
            return str(call.sid)

        return await self._run(create)

    async def configure_number(
        self, account_sid: str, phone_number: str, voice_url: str, status_callback: str
    ) -> NumberChange:
        """Point the account's number `phone_number` at `voice_url` (POST) and send its calls'
        final status to `status_callback` (POST). Refuses (NumberSetupError) a number the
        account does not have, and one attached to a TwiML app or a SIP trunk: Twilio
        ignores the voice URL of those, so changing it would only look like it worked."""

        def configure() -> NumberChange:
            client = self._client(account_sid)
            # The filter also matches partial numbers: only the exact one will do.
            found = [
                n
                for n in client.incoming_phone_numbers.list(phone_number=phone_number)
                if n.phone_number == phone_number
            ]
            if not found:
                raise NumberSetupError(
                    f"{phone_number} is not a phone number of account {account_sid}"
                )
            number = found[0]
            if number.voice_application_sid:
                raise NumberSetupError(
                    f"{phone_number} is attached to the TwiML app {number.voice_application_sid}"
                    ", so Twilio ignores its voice URL: detach the app from the number in the "
                    "Twilio console first, then run this again"
                )
            if number.trunk_sid:
                raise NumberSetupError(
                    f"{phone_number} belongs to the SIP trunk {number.trunk_sid}, so Twilio "
                    "ignores its voice URL: remove it from the trunk in the Twilio console "
                    "first, then run this again"
                )
            change = NumberChange(
                phone_number,
                str(number.sid),
                (
                    FieldChange("VoiceUrl", number.voice_url, voice_url),
                    FieldChange("VoiceMethod", number.voice_method, "POST"),
                    FieldChange("StatusCallback", number.status_callback, status_callback),
                    FieldChange("StatusCallbackMethod", number.status_callback_method, "POST"),
                ),
            )
            if change.changed:
                client.incoming_phone_numbers(number.sid).update(
                    voice_url=voice_url,
                    voice_method="POST",
                    status_callback=status_callback,
                    status_callback_method="POST",
                )
            return change

        return await self._run(configure, requests=2)
