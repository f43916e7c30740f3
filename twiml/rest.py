"""Twilio REST calls the bridge makes on a live call."""

from __future__ import annotations

import asyncio
import logging

from twilio.base.exceptions import TwilioRestException
from twilio.http import HttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

log = logging.getLogger("twiml.rest")

# Twilio's answers when the call is already over: not found, or "not in-progress".
_ALREADY_OVER_CODES = {20404, 21220}


class TwilioRest:
    """Hang-up (and later transfer) through Twilio's REST API.

    The twilio SDK is synchronous; its calls run in a worker thread so a slow API never
    stalls the audio of other calls. `http_client` is the SDK's own seam for tests.
    """

    def __init__(
        self, auth_token: str, http_client: HttpClient | None = None, timeout_s: float = 5.0
    ) -> None:
        self._auth_token = auth_token
        self._http = http_client or TwilioHttpClient(timeout=timeout_s)
        self._timeout_s = timeout_s

    async def hang_up(self, account_sid: str, call_sid: str) -> bool:
        """End the call. True if Twilio ended it, False if it was already over."""

        def update() -> None:
            client = Client(account_sid, self._auth_token, http_client=self._http)
            client.calls(call_sid).update(status="completed")

        try:
            await asyncio.wait_for(asyncio.to_thread(update), self._timeout_s + 1)
        except TwilioRestException as exc:
            if exc.status == 404 or exc.code in _ALREADY_OVER_CODES:
                return False
            raise
        return True
