"""The Realtime protocol, both ways, one codec per dialect: server events in as call
events, the call's actions out as client events. Every message the bridge sends to a
Realtime session is built here.

The two dialects, GA and the deprecated beta, name some server events differently and
shape the session differently; the codec of each gives the call core the same events and
takes the same actions, so the core never asks which one it talks to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import orjson

from bridge.core.actions import (
    AddMessage,
    AddToolOutput,
    AppendAudio,
    CancelResponse,
    ConfigureSession,
    CreateResponse,
    DeleteItem,
    DisableTurnDetection,
    ToBackend,
    TruncateItem,
)
from bridge.core.call_config import SessionSettings
from bridge.core.events import (
    AssistantTranscribed,
    AudioDelta,
    AudioDone,
    BackendError,
    BackendEvent,
    BackendEventInvalid,
    CallerTranscribed,
    FunctionCallRequested,
    InputCommitted,
    ItemTruncated,
    ResponseCreated,
    ResponseDone,
    SessionCreated,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
)
from bridge.realtime.dialects import Dialect
from bridge.transcode import AudioFormat

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
_GA_FORMAT_OF = {"audio/pcmu": AudioFormat.PCMU, "audio/pcma": AudioFormat.PCMA}
_BETA_FORMAT_OF = {name: fmt for fmt, name in _BETA_FORMATS.items()}
# What a response.create's metadata carries: the purpose the bridge asked it for.
_PURPOSE_KEY = "phone_bridge"
_APPEND_PREFIX = '{"type":"input_audio_buffer.append","audio":"'
_DELTA = "response.output_audio.delta"


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _optional_text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class RealtimeCodec:
    """The GA dialect; `BetaCodec` changes what differs."""

    dialect = Dialect.GA
    _names: ClassVar[dict[str, str]] = {}  # server event names that differ, to GA names
    _assistant_text = "output_text"

    def __init__(self) -> None:
        self._decoders: dict[str, Callable[[dict[str, Any]], BackendEvent | None]] = {
            "input_audio_buffer.speech_started": lambda e: SpeechStarted(
                _number(e.get("audio_start_ms"))
            ),
            "input_audio_buffer.speech_stopped": lambda e: SpeechStopped(
                _number(e.get("audio_end_ms"))
            ),
            "input_audio_buffer.committed": lambda e: InputCommitted(_text(e.get("item_id"))),
            "conversation.item.input_audio_transcription.completed": self._caller_transcribed,
            "response.output_audio_transcript.done": self._assistant_transcribed,
            "response.created": self._response_created,
            "response.output_audio.done": lambda e: AudioDone(_text(e.get("item_id"))),
            "response.done": self._response_done,
            "response.function_call_arguments.done": self._function_call,
            "response.output_item.done": self._finished_function_call,
            "session.created": lambda e: SessionCreated(self._model(e)),
            "session.updated": self._session_updated,
            "error": self._error,
            "conversation.item.truncated": lambda e: ItemTruncated(
                _optional_text(e.get("item_id")), e.get("audio_end_ms")
            ),
        }

    # --- server events in --------------------------------------------------------------------

    def decode(self, text: str | bytes) -> BackendEvent | None:
        """One server event as a call event; None for the many the call does not need."""
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError:
            return BackendEventInvalid("is not JSON")
        if not isinstance(event, dict):
            return BackendEventInvalid("is not an object")
        kind = event.get("type")
        if not isinstance(kind, str):
            return None
        kind = self._names.get(kind, kind)
        if kind == _DELTA:  # 50 a second: first, and inline
            response_id, item_id = event.get("response_id"), event.get("item_id")
            content_index, delta = event.get("content_index"), event.get("delta")
            return AudioDelta(
                response_id if type(response_id) is str and response_id else None,
                item_id if type(item_id) is str else str(item_id or ""),
                content_index if type(content_index) is int else 0,
                delta if type(delta) is str else "",
            )
        decoder = self._decoders.get(kind)
        return decoder(event) if decoder is not None else None

    @staticmethod
    def _model(event: dict[str, Any]) -> str | None:
        return _optional_text(_dict(event.get("session")).get("model"))

    @staticmethod
    def _caller_transcribed(event: dict[str, Any]) -> BackendEvent:
        transcript = event.get("transcript")
        return CallerTranscribed(
            _text(event.get("item_id")),
            transcript if isinstance(transcript, str) else None,
            event.get("usage"),  # counted even without a transcript: it was paid for
        )

    @staticmethod
    def _assistant_transcribed(event: dict[str, Any]) -> BackendEvent | None:
        transcript, item_id = event.get("transcript"), _text(event.get("item_id"))
        if not isinstance(transcript, str) or not item_id:
            return None
        return AssistantTranscribed(item_id, transcript)

    @staticmethod
    def _response_created(event: dict[str, Any]) -> BackendEvent:
        response = _dict(event.get("response"))
        purpose = _dict(response.get("metadata")).get(_PURPOSE_KEY)
        return ResponseCreated(_optional_text(response.get("id")), _optional_text(purpose))

    @staticmethod
    def _response_done(event: dict[str, Any]) -> BackendEvent:
        response = _dict(event.get("response"))
        return ResponseDone(
            _optional_text(response.get("id")),
            _optional_text(response.get("status")),
            response.get("status_details"),
            response.get("usage"),
        )

    @staticmethod
    def _function_call(event: dict[str, Any]) -> BackendEvent | None:
        """The arguments are complete: the call, if this event names its function (beta's
        schema has no `name` here, though its servers send one; without it, the call is
        read from its item's response.output_item.done instead)."""
        if not event.get("name"):
            return None
        return _function_call(event, event)

    @staticmethod
    def _finished_function_call(event: dict[str, Any]) -> BackendEvent | None:
        """A response's output item is done: a function call, if it is one that completed
        (an interrupted response's call is `incomplete`, and is not carried out). The core
        takes each call_id once, whichever of the two events names it first."""
        item = _dict(event.get("item"))
        if item.get("type") != "function_call" or item.get("status", "completed") != "completed":
            return None
        return _function_call(item, event)

    @staticmethod
    def _error(event: dict[str, Any]) -> BackendEvent:
        error = _dict(event.get("error"))
        code = error.get("code") or error.get("type")
        message = error.get("message")
        return BackendError(
            None if code is None else str(code), None if message is None else str(message)
        )

    def _session_updated(self, event: dict[str, Any]) -> BackendEvent:
        session = _dict(event.get("session"))
        stated_in, stated_out, turn_detection = self._session_facts(session)
        return SessionUpdated(
            model=_optional_text(session.get("model")),
            input_format=stated_in,
            output_format=stated_out,
            # No server VAD: nothing interrupts but the bridge.
            interrupts_by_itself=isinstance(turn_detection, dict)
            and bool(turn_detection.get("interrupt_response", True)),
        )

    def _session_facts(
        self, session: dict[str, Any]
    ) -> tuple[AudioFormat | str | None, AudioFormat | str | None, object]:
        """The formats a confirmed session states each way, and its turn detection."""
        audio = _dict(session.get("audio"))
        stated = [_ga_format(_dict(audio.get(way)).get("format")) for way in ("input", "output")]
        turn_detection = _dict(audio.get("input")).get("turn_detection")
        return stated[0], stated[1], turn_detection

    # --- client events out -------------------------------------------------------------------

    @staticmethod
    def append_audio(payload: str) -> str:
        """The caller's audio (base64: spliced in, it needs no escaping)."""
        return _APPEND_PREFIX + payload + '"}'

    def encode(self, action: ToBackend) -> str:
        """Any other message for the session."""
        if isinstance(action, AppendAudio):
            return self.append_audio(action.payload)
        if isinstance(action, CreateResponse):
            if action.instructions is None and action.purpose is None:
                return '{"type":"response.create"}'
            response: dict[str, Any] = {}
            if action.instructions is not None:
                response["instructions"] = action.instructions
            if action.purpose is not None:
                response["metadata"] = {_PURPOSE_KEY: action.purpose}
            return _dumps({"type": "response.create", "response": response})
        if isinstance(action, CancelResponse):
            return '{"type":"response.cancel"}'
        if isinstance(action, TruncateItem):
            return _dumps(
                {
                    "type": "conversation.item.truncate",
                    "item_id": action.item_id,
                    "content_index": action.content_index,
                    "audio_end_ms": action.audio_end_ms,
                }
            )
        if isinstance(action, DeleteItem):
            return _dumps({"type": "conversation.item.delete", "item_id": action.item_id})
        if isinstance(action, AddMessage):
            part = self._assistant_text if action.role == "assistant" else "input_text"
            item = {
                "type": "message",
                "role": action.role,
                "content": [{"type": part, "text": action.text}],
            }
            return _dumps({"type": "conversation.item.create", "item": item})
        if isinstance(action, AddToolOutput):
            item = {"type": "function_call_output", "call_id": action.call_id}
            item["output"] = action.output
            return _dumps({"type": "conversation.item.create", "item": item})
        if isinstance(action, ConfigureSession):
            return _dumps(self.session_update(action.settings, action.audio_format))
        if isinstance(action, DisableTurnDetection):
            return _dumps(self.turn_detection_off())
        raise TypeError(f"not a message for the Realtime session: {action!r}")

    def session_update(self, settings: SessionSettings, fmt: AudioFormat) -> dict[str, Any]:
        """The `session.update` for a phone call: `fmt` both ways, the turn detection and
        noise reduction asked for."""
        audio_input: dict[str, Any] = {
            "format": dict(_GA_FORMATS[fmt]),
            "turn_detection": _turn_detection(settings),
        }
        if settings.transcription_model:
            audio_input["transcription"] = {"model": settings.transcription_model}
        noise_reduction = _noise_reduction(settings)
        if noise_reduction is not None:
            audio_input["noise_reduction"] = noise_reduction
        session: dict[str, Any] = {
            # No "model": the URL chose it, and a different one here would be refused.
            "type": "realtime",
            "output_modalities": ["audio"],
            "instructions": settings.instructions,
            "audio": {
                "input": audio_input,
                "output": {"format": dict(_GA_FORMATS[fmt]), "voice": settings.voice},
            },
        }
        _add_tools(session, settings)
        return {"type": "session.update", "session": session}

    def turn_detection_off(self) -> dict[str, Any]:
        """A `session.update` that stops server VAD, so nothing the caller says interrupts."""
        return {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        }


class BetaCodec(RealtimeCodec):
    """The deprecated beta dialect (OpenAI-Beta: realtime=v1, Azure's preview API)."""

    dialect = Dialect.BETA
    _names: ClassVar[dict[str, str]] = _BETA_TO_GA
    _assistant_text = "text"

    def _session_facts(
        self, session: dict[str, Any]
    ) -> tuple[AudioFormat | str | None, AudioFormat | str | None, object]:
        stated = [
            _beta_format(session.get(key)) for key in ("input_audio_format", "output_audio_format")
        ]
        return stated[0], stated[1], session.get("turn_detection")

    def session_update(self, settings: SessionSettings, fmt: AudioFormat) -> dict[str, Any]:
        session: dict[str, Any] = {
            "modalities": ["text", "audio"],
            "voice": settings.voice,
            "instructions": settings.instructions,
            "input_audio_format": _BETA_FORMATS[fmt],
            "output_audio_format": _BETA_FORMATS[fmt],
            "turn_detection": _turn_detection(settings),
        }
        if settings.transcription_model:
            session["input_audio_transcription"] = {"model": settings.transcription_model}
        noise_reduction = _noise_reduction(settings)
        if noise_reduction is not None:
            session["input_audio_noise_reduction"] = noise_reduction
        _add_tools(session, settings)
        return {"type": "session.update", "session": session}

    def turn_detection_off(self) -> dict[str, Any]:
        return {"type": "session.update", "session": {"turn_detection": None}}


def codec_for(dialect: Dialect) -> RealtimeCodec:
    return BetaCodec() if dialect is Dialect.BETA else RealtimeCodec()


def _dumps(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


def _function_call(call: dict[str, Any], event: dict[str, Any]) -> FunctionCallRequested:
    """A function call from where it is described (`call`: call_id, name, arguments) in
    one of the response's events."""
    arguments = call.get("arguments")
    return FunctionCallRequested(
        _optional_text(call.get("call_id")),
        str(call.get("name") or ""),
        arguments if isinstance(arguments, str) else "{}",
        _optional_text(event.get("response_id")),
    )


def _turn_detection(settings: SessionSettings) -> dict[str, Any]:
    """The same in both dialects: server VAD's tunables, or semantic VAD's eagerness."""
    common = {
        "create_response": settings.create_response,
        "interrupt_response": settings.interrupt_response,
    }
    if settings.turn_detection == "semantic_vad":
        return {"type": "semantic_vad", "eagerness": settings.vad_eagerness, **common}
    return {
        "type": "server_vad",
        "threshold": settings.vad_threshold,
        "prefix_padding_ms": settings.vad_prefix_padding_ms,
        "silence_duration_ms": settings.vad_silence_ms,
        **common,
    }


def _noise_reduction(settings: SessionSettings) -> dict[str, str] | None:
    """None: left as the service has it (off)."""
    if settings.noise_reduction in ("near_field", "far_field"):
        return {"type": settings.noise_reduction}
    return None


def _add_tools(session: dict[str, Any], settings: SessionSettings) -> None:
    """Tools are named the same way in both dialects."""
    if settings.tools:
        session["tools"] = [dict(tool) for tool in settings.tools]
        session["tool_choice"] = "auto"


def _ga_format(stated: object) -> AudioFormat | str | None:
    """A GA `format` object as one of ours, or a description of what it is instead. A
    session that does not state its formats (a terse gateway) gets the benefit of the
    doubt (None)."""
    if not isinstance(stated, dict) or stated.get("type") is None:
        return None
    kind = stated.get("type")
    if kind == "audio/pcm":
        rate = stated.get("rate", 24000)
        return AudioFormat.PCM16 if rate == 24000 else f"audio/pcm at {rate} Hz"
    return _GA_FORMAT_OF.get(str(kind), str(kind))


def _beta_format(stated: object) -> AudioFormat | str | None:
    if stated is None:
        return None
    return _BETA_FORMAT_OF.get(str(stated), str(stated))
