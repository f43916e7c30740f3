"""Parse Twilio Media Streams messages (JSON text frames) into typed events.

Only what the call core needs is kept. Parsing is strict about the fields the bridge relies
on and lenient about everything else, so Twilio can add fields without breaking calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson


class TwilioProtocolError(ValueError):
    """A message from Twilio's side that the bridge cannot act on."""


@dataclass(slots=True)
class Connected:
    pass


@dataclass(slots=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    custom_parameters: dict[str, str] = field(default_factory=dict)
    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000


@dataclass(slots=True)
class Media:
    stream_sid: str
    payload: str  # base64 mu-law, passed on untouched


@dataclass(slots=True)
class Mark:
    stream_sid: str
    name: str


@dataclass(slots=True)
class Dtmf:
    stream_sid: str
    digit: str


@dataclass(slots=True)
class Stop:
    stream_sid: str


TwilioEvent = Connected | Start | Media | Mark | Dtmf | Stop


def _text(obj: dict, key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise TwilioProtocolError(f"{where}.{key} must be a non-empty string")
    return value


def _section(message: dict, key: str) -> dict:
    value = message.get(key)
    if not isinstance(value, dict):
        raise TwilioProtocolError(f"'{key}' event without a '{key}' object")
    return value


def parse_twilio_message(text: str | bytes) -> TwilioEvent:
    """Parse one Media Streams message; raise TwilioProtocolError if it is unusable."""
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise TwilioProtocolError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise TwilioProtocolError("message is not a JSON object")
    event = message.get("event")
    if event == "media":
        media = _section(message, "media")
        payload = media.get("payload")
        if not isinstance(payload, str):
            raise TwilioProtocolError("media.payload must be a string")
        return Media(_text(message, "streamSid", "media"), payload)
    if event == "mark":
        return Mark(
            _text(message, "streamSid", "mark"), _text(_section(message, "mark"), "name", "mark")
        )
    if event == "start":
        start = _section(message, "start")
        params = start.get("customParameters") or {}
        if not isinstance(params, dict):
            raise TwilioProtocolError("start.customParameters must be an object")
        # Twilio sends strings; a nested value is not a parameter (and str() of a deeply
        # nested one would recurse past Python's limit).
        if not all(isinstance(v, str | int | float | bool) for v in params.values()):
            raise TwilioProtocolError("start.customParameters values must be strings")
        media_format = start.get("mediaFormat") or {}
        if not isinstance(media_format, dict):
            raise TwilioProtocolError("start.mediaFormat must be an object")
        encoding = media_format.get("encoding", "audio/x-mulaw")
        account_sid = start.get("accountSid", "")
        if not isinstance(encoding, str) or not isinstance(account_sid, str):
            raise TwilioProtocolError("start.accountSid and mediaFormat.encoding must be strings")
        sample_rate = media_format.get("sampleRate", 8000)
        if not isinstance(sample_rate, int) or isinstance(sample_rate, bool):
            raise TwilioProtocolError("start.mediaFormat.sampleRate must be an integer")
        return Start(
            stream_sid=_text(start, "streamSid", "start"),
            call_sid=_text(start, "callSid", "start"),
            account_sid=account_sid,
            custom_parameters={str(k): str(v) for k, v in params.items()},
            encoding=encoding,
            sample_rate=sample_rate,
        )
    if event == "dtmf":
        dtmf = _section(message, "dtmf")
        return Dtmf(_text(message, "streamSid", "dtmf"), _text(dtmf, "digit", "dtmf"))
    if event == "stop":
        return Stop(_text(message, "streamSid", "stop"))
    if event == "connected":
        return Connected()
    raise TwilioProtocolError(f"unknown event {event!r}")
