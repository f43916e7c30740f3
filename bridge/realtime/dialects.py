"""The two Realtime dialects (GA and the deprecated beta) and how their names differ.

The call core thinks in GA names; `canonical_event_type` maps a beta server event name to
its GA twin so the core never branches on the dialect for events.
"""

from __future__ import annotations

from enum import StrEnum


class Dialect(StrEnum):
    GA = "ga"
    BETA = "beta"


# beta server event name -> GA name, for the events whose names changed.
_BETA_TO_GA = {
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "conversation.item.created": "conversation.item.added",
}


def canonical_event_type(event_type: str) -> str:
    """The GA name of a server event, whichever dialect sent it."""
    return _BETA_TO_GA.get(event_type, event_type)
