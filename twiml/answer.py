"""TwiML answers to Twilio's voice webhook."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit, urlunsplit

from twilio.twiml import TwiML
from twilio.twiml.voice_response import Connect, Dial, VoiceResponse

MEDIA_STREAM_PATH = "/media-stream"
STREAM_NAME = "phone-bridge"
# Twilio rejects a <Parameter> whose name plus value reach 500 characters.
MAX_PARAMETER_CHARS = 499
# The call's agent profile, and an outbound call's own instructions, as stream parameters.
PROFILE_PARAMETER = "Profile"
INSTRUCTIONS_PARAMETER = "Instructions"
# Longer instructions would be cut by the <Parameter> limit: they are refused instead.
MAX_INSTRUCTIONS_CHARS = MAX_PARAMETER_CHARS - len(INSTRUCTIONS_PARAMETER)


# What XML 1.0 cannot carry even escaped: C0 controls but tab, LF and CR; lone surrogates;
# U+FFFE and U+FFFF. One in a caller ID would make the whole answer malformed, and Twilio
# would fail the call.
_NOT_XML_CHARACTERS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """`text` without the characters XML 1.0 forbids."""
    return _NOT_XML_CHARACTERS.sub("", text)


def render(response: TwiML) -> str:
    """TwiML as the twilio SDK writes it, every value made XML-safe first: callers choose
    some of what goes in (their caller ID), and an answer that is not well-formed XML
    fails the call."""
    root = response.xml()
    for element in root.iter():
        if element.text:
            element.text = xml_safe(element.text)
        if element.tail:
            element.tail = xml_safe(element.tail)
        for name, value in element.attrib.items():
            element.set(name, xml_safe(value))
    return '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(root, encoding="unicode")


def stream_url(public_base: str) -> str:
    """The Media Streams URL for a public base URL: https -> wss, no query string."""
    parts = urlsplit(public_base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/") + MEDIA_STREAM_PATH
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def connect_stream(
    url: str,
    parameters: dict[str, str],
    fallback_message: str | None,
    notice: str | None = None,
) -> str:
    """`<Connect><Stream>` to the bridge, per-call data as `<Parameter>`s (never in the URL).

    `notice` (e.g. that the call is recorded) is said first, before anything reaches the
    assistant. The `<Say>` after `<Connect>` runs only when the bridge closes the stream
    itself, which it does when the AI backend fails: the caller hears an apology, not dead
    air.
    """
    response = VoiceResponse()
    if notice:
        response.say(notice)
    connect = Connect()
    stream = connect.stream(url=url, name=STREAM_NAME)
    for name, value in parameters.items():
        if value:
            stream.parameter(name=name, value=value[: MAX_PARAMETER_CHARS - len(name)])
    response.append(connect)
    if fallback_message:
        response.say(fallback_message)
    return render(response)


def busy(message: str) -> str:
    """The answer when the bridge takes no more calls: a polite message, then hang up."""
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return render(response)


def dial(target: str, if_unanswered: str | None = None) -> str:
    """Hand the call to `target`: an E.164 number, or a sip:/sips: address.

    `if_unanswered` is said when the destination is busy, does not answer or fails (Twilio
    goes on past <Dial> then), so the caller is not dropped in silence."""
    response = VoiceResponse()
    dial_verb = Dial()
    if target.startswith(("sip:", "sips:")):
        dial_verb.sip(target)
    else:
        dial_verb.number(target)
    response.append(dial_verb)
    if if_unanswered:
        response.say(if_unanswered)
    return render(response)


def machine_answer(message: str | None) -> str:
    """An outbound call answered by a machine: leave `message` (if any), then hang up."""
    response = VoiceResponse()
    if message:
        response.say(message)
    response.hangup()
    return render(response)
