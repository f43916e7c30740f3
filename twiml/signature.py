"""Checks of Twilio's `X-Twilio-Signature` on webhooks and on the WebSocket upgrade."""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator

SIGNATURE_HEADER = "X-Twilio-Signature"


class SignatureChecker:
    """Validates signatures against URLs rebuilt from the public base URL.

    Behind a TLS-terminating proxy the app sees http:// and perhaps another host, so the
    URL Twilio signed must come from configuration, never from the request as received.
    """

    def __init__(self, auth_token: str) -> None:
        self._validator = RequestValidator(auth_token)

    def webhook_is_signed(self, url: str, form: Mapping[str, str], signature: str | None) -> bool:
        """A form POST (params = the form) or a GET (params = {}, query inside `url`)."""
        if not signature:
            return False
        return bool(self._validator.validate(url, dict(form), signature))

    def stream_is_signed(self, stream_url: str, signature: str | None) -> bool:
        """The WebSocket upgrade is signed over the stream URL exactly as in the TwiML."""
        if not signature:
            return False
        return bool(self._validator.validate(stream_url, {}, signature))
