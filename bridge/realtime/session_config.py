"""What the bridge asks of a Realtime session, rendered for each dialect."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.realtime.dialects import Dialect


@dataclass(frozen=True, slots=True)
class SessionSettings:
    voice: str = "marin"
    instructions: str = ""
    vad_threshold: float = 0.5
    vad_prefix_padding_ms: int = 300
    vad_silence_ms: int = 500
    interrupt_response: bool = True
    transcription_model: str | None = None


def _turn_detection(settings: SessionSettings) -> dict[str, Any]:
    return {
        "type": "server_vad",
        "threshold": settings.vad_threshold,
        "prefix_padding_ms": settings.vad_prefix_padding_ms,
        "silence_duration_ms": settings.vad_silence_ms,
        "create_response": True,
        "interrupt_response": settings.interrupt_response,
    }


def session_update(settings: SessionSettings, dialect: Dialect) -> dict[str, Any]:
    """The `session.update` event for a phone call: mu-law both ways, server VAD."""
    if dialect is Dialect.BETA:
        session: dict[str, Any] = {
            "modalities": ["text", "audio"],
            "voice": settings.voice,
            "instructions": settings.instructions,
            "input_audio_format": "g711_ulaw",
            "output_audio_format": "g711_ulaw",
            "turn_detection": _turn_detection(settings),
        }
        if settings.transcription_model:
            session["input_audio_transcription"] = {"model": settings.transcription_model}
        return {"type": "session.update", "session": session}
    audio_input: dict[str, Any] = {
        "format": {"type": "audio/pcmu"},
        "turn_detection": _turn_detection(settings),
    }
    if settings.transcription_model:
        audio_input["transcription"] = {"model": settings.transcription_model}
    return {
        "type": "session.update",
        "session": {
            # No "model": the URL chose it, and a different one here would be refused.
            "type": "realtime",
            "output_modalities": ["audio"],
            "instructions": settings.instructions,
            "audio": {
                "input": audio_input,
                "output": {"format": {"type": "audio/pcmu"}, "voice": settings.voice},
            },
        },
    }


GREETING_LEAD = "Greet the caller by saying exactly the following, then wait for them: "
GOODBYE_LEAD = "End the call now by saying exactly the following, and nothing else: "
RESUME_INSTRUCTIONS = (
    "The phone line dropped for a moment. Carry on the conversation naturally from where it "
    "stopped, without mentioning the interruption unless something was lost."
)


def say_request(text: str, lead: str) -> dict[str, Any]:
    """A `response.create` that makes the assistant say `text` (same in both dialects)."""
    return {"type": "response.create", "response": {"instructions": lead + text}}


def greeting_request(greeting: str) -> dict[str, Any]:
    """The assistant speaks first."""
    return say_request(greeting, GREETING_LEAD)


def turn_detection_off(dialect: Dialect) -> dict[str, Any]:
    """A `session.update` that stops server VAD, so nothing the caller says interrupts."""
    if dialect is Dialect.BETA:
        return {"type": "session.update", "session": {"turn_detection": None}}
    return {
        "type": "session.update",
        "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
    }


def interrupts_by_itself(session: dict[str, Any], dialect: Dialect) -> bool:
    """Whether the session cancels its own response when the caller starts talking.

    Read from the session the server confirmed, not from what we asked for, so a gateway
    or server default that differs is still handled.
    """
    if dialect is Dialect.BETA:
        turn_detection = session.get("turn_detection")
    else:
        audio_input = (session.get("audio") or {}).get("input") or {}
        turn_detection = audio_input.get("turn_detection")
    if not isinstance(turn_detection, dict):
        return False  # no server VAD: nothing interrupts but us
    return bool(turn_detection.get("interrupt_response", True))


_MULAW = {"audio/pcmu", "g711_ulaw"}


def mulaw_both_ways(session: dict[str, Any], dialect: Dialect) -> bool:
    """False if the confirmed session states a non-mu-law input or output format.

    A session that does not state its formats (a terse gateway) gets the benefit of the doubt.
    """
    if dialect is Dialect.BETA:
        formats = [session.get("input_audio_format"), session.get("output_audio_format")]
    else:
        audio = session.get("audio") or {}
        formats = [
            ((audio.get(direction) or {}).get("format") or {}).get("type")
            for direction in ("input", "output")
        ]
    return all(f is None or f in _MULAW for f in formats)
