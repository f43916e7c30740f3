"""TwiML answers to Twilio's voice webhook."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from twilio.twiml.voice_response import Connect, VoiceResponse

MEDIA_STREAM_PATH = "/media-stream"
STREAM_NAME = "phone-bridge"
# Twilio rejects a <Parameter> whose name plus value reach 500 characters.
MAX_PARAMETER_CHARS = 499


def stream_url(public_base: str) -> str:
    """The Media Streams URL for a public base URL: https -> wss, no query string."""
    parts = urlsplit(public_base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/") + MEDIA_STREAM_PATH
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def connect_stream(url: str, parameters: dict[str, str], fallback_message: str | None) -> str:
    """`<Connect><Stream>` to the bridge, per-call data as `<Parameter>`s (never in the URL).

    The `<Say>` after `<Connect>` runs only when the bridge closes the stream itself, which
    it does when the AI backend fails: the caller hears an apology, not dead air.
    """
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=url, name=STREAM_NAME)
    for name, value in parameters.items():
        if value:
            stream.parameter(name=name, value=value[: MAX_PARAMETER_CHARS - len(name)])
    response.append(connect)
    if fallback_message:
        response.say(fallback_message)
    return str(response)


def busy(message: str) -> str:
    """The answer when the bridge takes no more calls: a polite message, then hang up."""
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return str(response)
