"""A Media Streams socket before its call: it has been accepted (its upgrade was signed),
and waits for `start`.

It holds no line and no session yet. `start` is handed to the adapter to admit (its token,
a line, its profile's config: `AdmitStream`); admitted, the stream's `Call` begins with that
same event and takes over the socket's input limits; refused, or silent past the start
timeout, the socket is closed. Whatever comes before `start` counts towards the message
rate and is otherwise dropped.
"""

from __future__ import annotations

import logging

from bridge.core import events as ev
from bridge.core.actions import Action, AdmitStream, EndReason, EndStream
from bridge.core.call_config import StreamLimits
from bridge.core.input_guard import InputGuard

log = logging.getLogger("bridge.call")


class StreamOpening:
    def __init__(self, limits: StreamLimits, opened_at: float) -> None:
        self.guard = InputGuard(limits)
        self._limits = limits
        self._opened_at = opened_at
        self._over = False
        self._noted: set[str] = set()

    def handle(self, event: ev.Event, now: float) -> list[Action]:
        if self._over:
            return []
        kind = type(event)
        if kind is ev.Tick:
            if now - self._opened_at >= self._limits.start_timeout_s:
                self._note_once("no-start", "no 'start' from Twilio in time: closing the socket")
                return self._end(EndReason.NO_START)
            return []
        if kind is ev.StreamRefused:
            assert isinstance(event, ev.StreamRefused)
            reason = EndReason.TOKEN_REFUSED if event.token else EndReason.STREAM_REFUSED
            return self._end(reason, event.why)
        if kind is ev.TwilioClosed:
            return self._end(EndReason.TWILIO_CLOSED)
        if kind not in _TWILIO_MESSAGES:
            return []
        if not self.guard.messages.take(1, now):
            log.error(
                "more than %.0f messages/s from Twilio's side", self._limits.max_messages_per_s
            )
            return self._end(EndReason.FLOODED)
        if isinstance(event, ev.StreamStarted):
            # The adapter answers at once: the stream's call takes over from here, or it
            # reports StreamRefused.
            return [AdmitStream(event)]
        if isinstance(event, ev.StreamStopped):
            return self._end(EndReason.CALLER_HUNG_UP)
        if isinstance(event, ev.CallerAudio):
            self._note_once("media-before-start", "dropped caller audio sent before 'start'")
        elif isinstance(event, ev.TwilioMessageInvalid):
            self._note_once(
                "bad-twilio-message", "dropped a malformed Twilio message: %s", event.problem
            )
        return []

    def _end(self, reason: EndReason, detail: str = "") -> list[Action]:
        self._over = True
        return [EndStream(reason, detail)]

    def _note_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._noted:
            self._noted.add(key)
            log.warning(message, *args)


_TWILIO_MESSAGES = frozenset(
    {
        ev.StreamConnected,
        ev.StreamStarted,
        ev.CallerAudio,
        ev.MarkPlayed,
        ev.KeyPressed,
        ev.StreamStopped,
        ev.TwilioMessageInvalid,
    }
)
