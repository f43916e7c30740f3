"""Twilio Media Streams messages, both ways: JSON text frames in, call events out; the
call's audio, marks and clears, as the JSON Twilio takes.

Decoding is strict about the fields the bridge relies on and lenient about everything
else, so Twilio can add fields without breaking calls. Nothing here keeps state between
messages: `StreamWriter` only holds the stream's SID, spliced into what it writes.
"""

from __future__ import annotations

import orjson

from bridge.core.events import (
    CallerAudio,
    KeyPressed,
    MarkPlayed,
    StreamConnected,
    StreamStarted,
    StreamStopped,
    TwilioEvent,
    TwilioMessageInvalid,
)

# What the simulator and Twilio's debugger read in the marks the bridge sends: the call
# core names its marks (its ledger matches their echoes), the wire carries them.
from bridge.core.playback import (
    TRUNCATION_MARK_PREFIX,
    ItemMark,
    TruncationMark,
    mark_name,
    parse_mark_name,
    truncation_mark_name,
)

__all__ = [
    "TRUNCATION_MARK_PREFIX",
    "ItemMark",
    "StreamWriter",
    "TruncationMark",
    "decode",
    "mark_name",
    "parse_mark_name",
    "truncation_mark_name",
]


class _Invalid(ValueError):
    pass


def _text(obj: dict[str, object], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise _Invalid(f"{where}.{key} must be a non-empty string")
    return value


def _section(message: dict[str, object], key: str) -> dict[str, object]:
    value = message.get(key)
    if not isinstance(value, dict):
        raise _Invalid(f"'{key}' event without a '{key}' object")
    return value


def decode(text: str | bytes) -> TwilioEvent:
    """One Media Streams message as an event; TwilioMessageInvalid if it is unusable."""
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return TwilioMessageInvalid(f"not JSON: {exc}")
    if not isinstance(message, dict):
        return TwilioMessageInvalid("message is not a JSON object")
    # Media and marks come 50 a second each: the short way first, for a well-formed one.
    event, stream_sid = message.get("event"), message.get("streamSid")
    if (event == "media" or event == "mark") and type(stream_sid) is str and stream_sid:
        body = message.get(event)
        if type(body) is dict:
            if event == "media":
                payload = body.get("payload")
                if type(payload) is str:
                    return CallerAudio(stream_sid, payload)
            else:
                name = body.get("name")
                if type(name) is str and name:
                    return MarkPlayed(stream_sid, name)
    try:
        return _decode(message)
    except _Invalid as exc:
        return TwilioMessageInvalid(str(exc))


def _decode(message: dict[str, object]) -> TwilioEvent:
    event = message.get("event")
    if event == "media":  # (one that `decode` did not take: to say what is wrong with it)
        media = _section(message, "media")
        payload = media.get("payload")
        if not isinstance(payload, str):
            raise _Invalid("media.payload must be a string")
        return CallerAudio(_text(message, "streamSid", "media"), payload)
    if event == "mark":
        return MarkPlayed(
            _text(message, "streamSid", "mark"), _text(_section(message, "mark"), "name", "mark")
        )
    if event == "start":
        return _start(_section(message, "start"))
    if event == "dtmf":
        dtmf = _section(message, "dtmf")
        return KeyPressed(_text(message, "streamSid", "dtmf"), _text(dtmf, "digit", "dtmf"))
    if event == "stop":
        return StreamStopped(_text(message, "streamSid", "stop"))
    if event == "connected":
        return StreamConnected()
    raise _Invalid(f"unknown event {event!r}")


def _start(start: dict[str, object]) -> StreamStarted:
    params = start.get("customParameters") or {}
    if not isinstance(params, dict):
        raise _Invalid("start.customParameters must be an object")
    # Twilio sends strings; a nested value is not a parameter (and str() of a deeply nested
    # one would recurse past Python's limit).
    if not all(isinstance(v, str | int | float | bool) for v in params.values()):
        raise _Invalid("start.customParameters values must be strings")
    media_format = start.get("mediaFormat") or {}
    if not isinstance(media_format, dict):
        raise _Invalid("start.mediaFormat must be an object")
    encoding = media_format.get("encoding", "audio/x-mulaw")
    account_sid = start.get("accountSid", "")
    if not isinstance(encoding, str) or not isinstance(account_sid, str):
        raise _Invalid("start.accountSid and mediaFormat.encoding must be strings")
    sample_rate = media_format.get("sampleRate", 8000)
    if not isinstance(sample_rate, int) or isinstance(sample_rate, bool):
        raise _Invalid("start.mediaFormat.sampleRate must be an integer")
    return StreamStarted(
        stream_sid=_text(start, "streamSid", "start"),
        call_sid=_text(start, "callSid", "start"),
        account_sid=account_sid,
        parameters={str(k): str(v) for k, v in params.items()},
        encoding=encoding,
        sample_rate=sample_rate,
    )


def _json_string_body(text: str) -> str:
    """`text` escaped for inside a JSON string. Mark names are item ids and numbers: the
    common case needs no escaping and costs three C-speed scans."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return orjson.dumps(text).decode()[1:-1]


class StreamWriter:
    """The messages for one stream, its SID spliced in: built by concatenation, since
    every piece is either the SID (escaped once), base64 (which needs no escaping), or a
    mark name (escaped when it must be)."""

    __slots__ = ("_clear", "_mark_prefix", "_media_prefix")

    def __init__(self, stream_sid: str) -> None:
        sid = orjson.dumps(stream_sid).decode()
        self._media_prefix = '{"event":"media","streamSid":' + sid + ',"media":{"payload":"'
        self._mark_prefix = '{"event":"mark","streamSid":' + sid + ',"mark":{"name":"'
        self._clear = '{"event":"clear","streamSid":' + sid + "}"

    def media(self, payload: str) -> str:
        """Audio for the caller; `payload` must be base64 (it is spliced in unescaped)."""
        return self._media_prefix + payload + '"}}'

    def mark(self, name: str) -> str:
        return self._mark_prefix + _json_string_body(name) + '"}}'

    def clear(self) -> str:
        return self._clear
