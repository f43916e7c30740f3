"""TEMPORARY: the old Twilio message parser's names over bridge.wire.twilio."""

from __future__ import annotations

from bridge.core.events import CallerAudio as Media
from bridge.core.events import KeyPressed as Dtmf
from bridge.core.events import MarkPlayed as Mark
from bridge.core.events import StreamConnected as Connected
from bridge.core.events import StreamStarted as Start
from bridge.core.events import StreamStopped as Stop
from bridge.core.events import TwilioEvent, TwilioMessageInvalid
from bridge.wire.twilio import decode

__all__ = ["Connected", "Dtmf", "Mark", "Media", "Start", "Stop", "TwilioEvent"]


class TwilioProtocolError(ValueError):
    pass


def parse_twilio_message(text: str | bytes) -> TwilioEvent:
    event = decode(text)
    if isinstance(event, TwilioMessageInvalid):
        raise TwilioProtocolError(event.problem)
    return event
