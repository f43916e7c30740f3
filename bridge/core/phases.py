"""A call's phases, the moves between them, and which events each phase listens to.

    AWAITING_START --start--> CONNECTING --backend open--> BRIDGING
    BRIDGING --session lost, silent, or rolled over--> RECONNECTING --backend open--> BRIDGING
    any --the call ends--> ENDED

Written as tables, as h11 writes its states: to change what a phase does, read its row.
"""

from __future__ import annotations

from enum import Enum

from bridge.core import events as ev


class Phase(Enum):
    AWAITING_START = "awaiting start"
    CONNECTING = "connecting"  # the first Realtime session is opening
    BRIDGING = "bridging"  # a session is open (configured, or being configured)
    RECONNECTING = "reconnecting"  # the session was lost or is being replaced
    ENDED = "ended"


MOVES: dict[Phase, frozenset[Phase]] = {
    Phase.AWAITING_START: frozenset({Phase.CONNECTING, Phase.ENDED}),
    Phase.CONNECTING: frozenset({Phase.BRIDGING, Phase.ENDED}),
    Phase.BRIDGING: frozenset({Phase.RECONNECTING, Phase.ENDED}),
    Phase.RECONNECTING: frozenset({Phase.BRIDGING, Phase.ENDED}),
    Phase.ENDED: frozenset(),
}

_TWILIO = frozenset(
    {
        ev.StreamStarted,  # a second one: ignored (the first starts the call)
        ev.StreamConnected,
        ev.CallerAudio,
        ev.MarkPlayed,
        ev.KeyPressed,
        ev.StreamStopped,
        ev.TwilioMessageInvalid,
    }
)
_BACKEND = frozenset(
    {
        ev.SessionCreated,
        ev.SessionUpdated,
        ev.SpeechStarted,
        ev.SpeechStopped,
        ev.InputCommitted,
        ev.CallerTranscribed,
        ev.AssistantTranscribed,
        ev.ResponseCreated,
        ev.AudioDelta,
        ev.AudioDone,
        ev.ResponseDone,
        ev.FunctionCallRequested,
        ev.BackendError,
        ev.ItemTruncated,
        ev.BackendEventInvalid,
    }
)
# Whatever the phase, until the call ends.
_ALWAYS = frozenset(
    {
        ev.TwilioClosed,
        ev.BackendClosed,
        ev.BackendFellBehind,
        ev.ToolFinished,
        ev.Tick,
        ev.ShutdownRequested,
    }
)

# The events each phase acts on; any other is ignored there. Only the session in use is
# listened to: its events are heard while it is open (BRIDGING), none in between.
HEARS: dict[Phase, frozenset[type]] = {
    Phase.AWAITING_START: _TWILIO | _ALWAYS,
    Phase.CONNECTING: _TWILIO | _ALWAYS | {ev.BackendOpened},
    Phase.BRIDGING: _TWILIO | _BACKEND | _ALWAYS,
    Phase.RECONNECTING: _TWILIO | _ALWAYS | {ev.BackendOpened},
    Phase.ENDED: frozenset(),
}


class PhaseError(RuntimeError):
    """A move the table does not allow: a bug in the core."""
