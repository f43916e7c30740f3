"""What the bridge asks of a Realtime session, rendered for each dialect."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.realtime.dialects import Dialect
from bridge.transcode import AudioFormat

# How each dialect names the audio formats.
_GA_FORMATS: dict[AudioFormat, dict[str, Any]] = {
    AudioFormat.PCMU: {"type": "audio/pcmu"},
    AudioFormat.PCMA: {"type": "audio/pcma"},
    AudioFormat.PCM16: {"type": "audio/pcm", "rate": 24000},
}
_BETA_FORMATS = {
    AudioFormat.PCMU: "g711_ulaw",
    AudioFormat.PCMA: "g711_alaw",
    AudioFormat.PCM16: "pcm16",
}


@dataclass(frozen=True, slots=True)
class SessionSettings:
    voice: str = "marin"
    instructions: str = ""
    vad_threshold: float = 0.5
    vad_prefix_padding_ms: int = 300
    vad_silence_ms: int = 500
    interrupt_response: bool = True
    transcription_model: str | None = None
    # Function tools ({"type": "function", "name", "description", "parameters"}).
    tools: tuple[dict[str, Any], ...] = ()


def _turn_detection(settings: SessionSettings) -> dict[str, Any]:
    return {
        "type": "server_vad",
        "threshold": settings.vad_threshold,
        "prefix_padding_ms": settings.vad_prefix_padding_ms,
        "silence_duration_ms": settings.vad_silence_ms,
        "create_response": True,
        "interrupt_response": settings.interrupt_response,
    }


def session_update(
    settings: SessionSettings, dialect: Dialect, audio_format: AudioFormat = AudioFormat.PCMU
) -> dict[str, Any]:
    """The `session.update` event for a phone call: `audio_format` both ways, server VAD."""
    if dialect is Dialect.BETA:
        session: dict[str, Any] = {
            "modalities": ["text", "audio"],
            "voice": settings.voice,
            "instructions": settings.instructions,
            "input_audio_format": _BETA_FORMATS[audio_format],
            "output_audio_format": _BETA_FORMATS[audio_format],
            "turn_detection": _turn_detection(settings),
        }
        if settings.transcription_model:
            session["input_audio_transcription"] = {"model": settings.transcription_model}
        _add_tools(session, settings)
        return {"type": "session.update", "session": session}
    audio_input: dict[str, Any] = {
        "format": dict(_GA_FORMATS[audio_format]),
        "turn_detection": _turn_detection(settings),
    }
    if settings.transcription_model:
        audio_input["transcription"] = {"model": settings.transcription_model}
    session = {
        # No "model": the URL chose it, and a different one here would be refused.
        "type": "realtime",
        "output_modalities": ["audio"],
        "instructions": settings.instructions,
        "audio": {
            "input": audio_input,
            "output": {"format": dict(_GA_FORMATS[audio_format]), "voice": settings.voice},
        },
    }
    _add_tools(session, settings)
    return {"type": "session.update", "session": session}


def _add_tools(session: dict[str, Any], settings: SessionSettings) -> None:
    """Tools are named the same way in both dialects."""
    if settings.tools:
        session["tools"] = [dict(tool) for tool in settings.tools]
        session["tool_choice"] = "auto"


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


def formats_confirmed(session: dict[str, Any], dialect: Dialect, audio_format: AudioFormat) -> bool:
    """False if the confirmed session states an input or output format other than the one
    asked for (PCM at a rate other than 24 kHz included): its audio would play as noise.

    A session that does not state its formats (a terse gateway) gets the benefit of the doubt.
    """
    if dialect is Dialect.BETA:
        expected = _BETA_FORMATS[audio_format]
        stated = [session.get("input_audio_format"), session.get("output_audio_format")]
        return all(f is None or f == expected for f in stated)
    wanted = _GA_FORMATS[audio_format]
    audio = session.get("audio") or {}
    for direction in ("input", "output"):
        stated = (audio.get(direction) or {}).get("format")
        if not isinstance(stated, dict) or stated.get("type") is None:
            continue
        if stated.get("type") != wanted["type"]:
            return False
        if "rate" in wanted and stated.get("rate", wanted["rate"]) != wanted["rate"]:
            return False
    return True
