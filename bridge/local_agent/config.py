"""The session configuration: one canonical form, parsed from and rendered to each dialect.

GA nests audio settings (``audio.input.format.type``) and requires ``session.type``; beta is
flat (``input_audio_format``). Updates change only the fields sent; a bad update is rejected
whole, like the real service, so the session never ends up half-updated.
"""

from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any

from . import formats
from .server_events import (
    BETA,
    GA,
    RealtimeError,
    invalid_type,
    invalid_value,
    missing_parameter,
    unknown_parameter,
    voice_locked,
)

VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)
MODALITIES = ("text", "audio")

_SERVER_VAD_DEFAULTS: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
_SEMANTIC_VAD_DEFAULTS: dict[str, Any] = {
    "type": "semantic_vad",
    "eagerness": "auto",
    "create_response": True,
    "interrupt_response": True,
}

_GA_KEYS = {
    "type",
    "model",
    "output_modalities",
    "instructions",
    "audio",
    "tools",
    "tool_choice",
    "max_output_tokens",
    "tracing",
    "truncation",
    "prompt",
    "include",
}
_BETA_KEYS = {
    "model",
    "modalities",
    "instructions",
    "voice",
    "input_audio_format",
    "output_audio_format",
    "input_audio_transcription",
    "input_audio_noise_reduction",
    "turn_detection",
    "tools",
    "tool_choice",
    "temperature",
    "max_response_output_tokens",
    "speed",
    "tracing",
}
# Echoed back by clients that copy session.created; the service owns them, so ignore.
_READ_ONLY_KEYS = {"id", "object", "expires_at", "client_secret"}


@dataclass
class VadSettings:
    threshold: float
    prefix_padding_ms: int
    silence_duration_ms: int
    create_response: bool
    interrupt_response: bool


@dataclass
class SessionConfig:
    session_id: str
    model: str
    expires_at: int
    instructions: str = ""
    voice: str = "alloy"
    input_format: str = formats.PCM16
    output_format: str = formats.PCM16
    turn_detection: dict[str, Any] | None = field(
        default_factory=lambda: dict(_SERVER_VAD_DEFAULTS)
    )
    output_modalities: list[str] = field(default_factory=lambda: ["audio"])
    tools: list[Any] = field(default_factory=list)
    tool_choice: Any = "auto"
    transcription: dict[str, Any] | None = None
    noise_reduction: dict[str, Any] | None = None
    temperature: float = 0.8
    max_output_tokens: int | str = "inf"
    speed: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def initial(
        cls, session_id: str, model: str, dialect: str, lifetime_s: float | None = None
    ) -> SessionConfig:
        """``lifetime_s``: the session's length limit, when the agent enforces one."""
        if lifetime_s is None:
            lifetime_s = 1800 if dialect == BETA else 3600
        expires_at = math.ceil(time.time() + lifetime_s)
        return cls(session_id=session_id, model=model, expires_at=expires_at)

    def vad(self) -> VadSettings | None:
        td = self.turn_detection
        if td is None:
            return None
        # semantic_vad has no tunables of its own here; the energy VAD uses server defaults.
        return VadSettings(
            threshold=float(td.get("threshold", _SERVER_VAD_DEFAULTS["threshold"])),
            prefix_padding_ms=int(td.get("prefix_padding_ms", 300)),
            silence_duration_ms=int(td.get("silence_duration_ms", 500)),
            create_response=bool(td.get("create_response", True)),
            interrupt_response=bool(td.get("interrupt_response", True)),
        )

    # --- rendering ------------------------------------------------------------------------

    def render(self, dialect: str) -> dict[str, Any]:
        return self._render_beta() if dialect == BETA else self._render_ga()

    def _render_ga(self) -> dict[str, Any]:
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": self.session_id,
            "model": self.model,
            "output_modalities": list(self.output_modalities),
            "instructions": self.instructions,
            "tools": copy.deepcopy(self.tools),
            "tool_choice": copy.deepcopy(self.tool_choice),
            "max_output_tokens": self.max_output_tokens,
            "tracing": self.extra.get("tracing"),
            "truncation": self.extra.get("truncation", "auto"),
            "prompt": self.extra.get("prompt"),
            "expires_at": self.expires_at,
            "audio": {
                "input": {
                    "format": formats.to_ga(self.input_format),
                    "transcription": copy.deepcopy(self.transcription),
                    "noise_reduction": copy.deepcopy(self.noise_reduction),
                    "turn_detection": copy.deepcopy(self.turn_detection),
                },
                "output": {
                    "format": formats.to_ga(self.output_format),
                    "voice": self.voice,
                    "speed": self.speed,
                },
            },
            "include": self.extra.get("include"),
        }

    def _render_beta(self) -> dict[str, Any]:
        td = copy.deepcopy(self.turn_detection)
        if td is not None:
            td.pop("idle_timeout_ms", None)
        modalities = ["audio", "text"] if "audio" in self.output_modalities else ["text"]
        return {
            "id": self.session_id,
            "object": "realtime.session",
            "model": self.model,
            "expires_at": self.expires_at,
            "modalities": modalities,
            "instructions": self.instructions,
            "voice": self.voice,
            "input_audio_format": formats.to_beta(self.input_format),
            "output_audio_format": formats.to_beta(self.output_format),
            "input_audio_transcription": copy.deepcopy(self.transcription),
            "input_audio_noise_reduction": copy.deepcopy(self.noise_reduction),
            "turn_detection": td,
            "tools": copy.deepcopy(self.tools),
            "tool_choice": copy.deepcopy(self.tool_choice),
            "temperature": self.temperature,
            "max_response_output_tokens": self.max_output_tokens,
            "speed": self.speed,
            "tracing": self.extra.get("tracing"),
        }

    # --- updating -------------------------------------------------------------------------

    def updated(self, dialect: str, session: object, assistant_audio: bool) -> SessionConfig:
        """A new config with ``session`` merged in, or RealtimeError with nothing changed."""
        if not isinstance(session, dict):
            raise invalid_type("session", "an object")
        new = replace(
            self,
            turn_detection=copy.deepcopy(self.turn_detection),
            output_modalities=list(self.output_modalities),
            extra=dict(self.extra),
        )
        if dialect == BETA:
            _apply_beta(new, session)
            voice_param = "session.voice"
        else:
            _apply_ga(new, session)
            voice_param = "session.audio.output.voice"
        if new.voice != self.voice and assistant_audio:
            err = voice_locked()
            err.param = voice_param
            raise err
        return new


def _check_keys(obj: dict[str, Any], allowed: set[str], prefix: str) -> None:
    for key in obj:
        if key not in allowed and key not in _READ_ONLY_KEYS:
            raise unknown_parameter(f"{prefix}.{key}")


def _expect_dict(value: object, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid_type(param, "an object")
    return value


def _expect_str(value: object, param: str) -> str:
    if not isinstance(value, str):
        raise invalid_type(param, "a string")
    return value


def _modalities(value: object, param: str) -> list[str]:
    if not isinstance(value, list):
        raise invalid_type(param, "an array of strings")
    for m in value:
        if m not in MODALITIES:
            raise invalid_value(m, MODALITIES, param)
    return list(value)


def _voice(value: object, param: str) -> str:
    if value not in VOICES:
        raise invalid_value(value, VOICES, param)
    return str(value)


def _max_tokens(value: object, param: str) -> int | str:
    if value == "inf":
        return "inf"
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
        raise RealtimeError(
            f"Invalid '{param}': expected an integer between 1 and 4096, or 'inf'.",
            "invalid_value",
            param,
        )
    return value


def _turn_detection(value: object, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    td = _expect_dict(value, param)
    kind = td.get("type", "server_vad")
    if kind == "server_vad":
        merged = dict(_SERVER_VAD_DEFAULTS)
    elif kind == "semantic_vad":
        merged = dict(_SEMANTIC_VAD_DEFAULTS)
    else:
        raise invalid_value(kind, ("server_vad", "semantic_vad"), f"{param}.type")
    _check_keys(td, set(merged), param)
    merged.update(td)
    if "threshold" in merged:
        threshold = merged["threshold"]
        if not isinstance(threshold, int | float) or not 0.0 <= threshold <= 1.0:
            raise RealtimeError(
                f"Invalid '{param}.threshold': expected a number between 0 and 1.",
                "invalid_value",
                f"{param}.threshold",
            )
    for key in ("prefix_padding_ms", "silence_duration_ms"):
        if key in merged and (not isinstance(merged[key], int) or merged[key] < 0):
            raise invalid_type(f"{param}.{key}", "a non-negative integer")
    return merged


def _ga_format(value: object, param: str) -> str:
    fmt = _expect_dict(value, param)
    if "type" not in fmt:
        raise missing_parameter(f"{param}.type")
    kind = fmt["type"]
    if kind not in formats.GA_FORMAT_TYPES:
        raise invalid_value(kind, tuple(formats.GA_FORMAT_TYPES), f"{param}.type")
    _check_keys(fmt, {"type", "rate"} if kind == "audio/pcm" else {"type"}, param)
    if kind == "audio/pcm":
        # pcm takes exactly 24 kHz; observed as integer_below_min_value for 16000.
        fmt_rate = fmt.get("rate", formats.PCM16_RATE)
        if fmt_rate != formats.PCM16_RATE:
            code, word, op = (
                ("integer_below_min_value", "below minimum", ">=")
                if isinstance(fmt_rate, int) and fmt_rate < formats.PCM16_RATE
                else ("integer_above_max_value", "above maximum", "<=")
            )
            raise RealtimeError(
                f"Invalid '{param}.rate': integer {word} value. Expected a value {op} "
                f"{formats.PCM16_RATE}, but got {fmt_rate} instead.",
                code,
                f"{param}.rate",
            )
    return formats.GA_FORMAT_TYPES[kind]


def _apply_ga(cfg: SessionConfig, session: dict[str, Any]) -> None:
    if "type" not in session:
        raise missing_parameter("session.type")
    if session["type"] == "transcription":
        raise RealtimeError(
            "Passing a transcription session update event to a realtime session is not allowed.",
            "invalid_value",
            "session.type",
        )
    if session["type"] != "realtime":
        raise invalid_value(session["type"], ("realtime", "transcription"), "session.type")
    _check_keys(session, _GA_KEYS, "session")
    if "model" in session:
        cfg.model = _expect_str(session["model"], "session.model")
    if "instructions" in session:
        cfg.instructions = _expect_str(session["instructions"], "session.instructions")
    if "output_modalities" in session:
        cfg.output_modalities = _modalities(
            session["output_modalities"], "session.output_modalities"
        )
    _apply_tools(cfg, session, GA)
    if "max_output_tokens" in session:
        cfg.max_output_tokens = _max_tokens(
            session["max_output_tokens"], "session.max_output_tokens"
        )
    for key in ("tracing", "truncation", "prompt", "include"):
        if key in session:
            cfg.extra[key] = copy.deepcopy(session[key])
    if "audio" not in session:
        return
    audio = _expect_dict(session["audio"], "session.audio")
    _check_keys(audio, {"input", "output"}, "session.audio")
    if "input" in audio:
        inp = _expect_dict(audio["input"], "session.audio.input")
        _check_keys(
            inp,
            {"format", "transcription", "noise_reduction", "turn_detection"},
            "session.audio.input",
        )
        if "format" in inp:
            cfg.input_format = _ga_format(inp["format"], "session.audio.input.format")
        if "turn_detection" in inp:
            cfg.turn_detection = _turn_detection(
                inp["turn_detection"], "session.audio.input.turn_detection"
            )
        if "transcription" in inp:
            cfg.transcription = copy.deepcopy(inp["transcription"])
        if "noise_reduction" in inp:
            cfg.noise_reduction = copy.deepcopy(inp["noise_reduction"])
    if "output" in audio:
        out = _expect_dict(audio["output"], "session.audio.output")
        _check_keys(out, {"format", "voice", "speed"}, "session.audio.output")
        if "format" in out:
            cfg.output_format = _ga_format(out["format"], "session.audio.output.format")
        if "voice" in out:
            cfg.voice = _voice(out["voice"], "session.audio.output.voice")
        if "speed" in out:
            cfg.speed = float(out["speed"])


def _beta_format(value: object, param: str) -> str:
    if value not in formats.BETA_FORMAT_NAMES:
        raise invalid_value(value, tuple(formats.BETA_FORMAT_NAMES), param)
    return formats.BETA_FORMAT_NAMES[str(value)]


def _apply_beta(cfg: SessionConfig, session: dict[str, Any]) -> None:
    _check_keys(session, _BETA_KEYS, "session")
    if "model" in session:
        cfg.model = _expect_str(session["model"], "session.model")
    if "instructions" in session:
        cfg.instructions = _expect_str(session["instructions"], "session.instructions")
    if "modalities" in session:
        mods = _modalities(session["modalities"], "session.modalities")
        cfg.output_modalities = ["audio"] if "audio" in mods else ["text"]
    if "voice" in session:
        cfg.voice = _voice(session["voice"], "session.voice")
    if "input_audio_format" in session:
        cfg.input_format = _beta_format(session["input_audio_format"], "session.input_audio_format")
    if "output_audio_format" in session:
        cfg.output_format = _beta_format(
            session["output_audio_format"], "session.output_audio_format"
        )
    if "turn_detection" in session:
        cfg.turn_detection = _turn_detection(session["turn_detection"], "session.turn_detection")
    if "input_audio_transcription" in session:
        cfg.transcription = copy.deepcopy(session["input_audio_transcription"])
    if "input_audio_noise_reduction" in session:
        cfg.noise_reduction = copy.deepcopy(session["input_audio_noise_reduction"])
    _apply_tools(cfg, session, BETA)
    if "temperature" in session:
        temp = session["temperature"]
        if not isinstance(temp, int | float) or isinstance(temp, bool):
            raise invalid_type("session.temperature", "a number")
        if not 0.6 <= temp <= 1.2:
            code, word, op, bound = (
                ("decimal_below_min_value", "below minimum", ">=", 0.6)
                if temp < 0.6
                else ("decimal_above_max_value", "above maximum", "<=", 1.2)
            )
            raise RealtimeError(
                f"Invalid 'session.temperature': decimal {word} value. Expected a value "
                f"{op} {bound}, but got {temp} instead.",
                code,
                "session.temperature",
            )
        cfg.temperature = float(temp)
    if "max_response_output_tokens" in session:
        cfg.max_output_tokens = _max_tokens(
            session["max_response_output_tokens"], "session.max_response_output_tokens"
        )
    if "speed" in session:
        cfg.speed = float(session["speed"])
    if "tracing" in session:
        cfg.extra["tracing"] = copy.deepcopy(session["tracing"])


# --- tools ------------------------------------------------------------------------------------

TOOL_CHOICES = ("none", "auto", "required")
FUNCTION_NAME_PATTERN = "^[a-zA-Z0-9_-]+$"
MAX_FUNCTION_NAME_CHARS = 64
_FUNCTION_NAME_RE = re.compile(FUNCTION_NAME_PATTERN)
_FUNCTION_TOOL_KEYS = {"type", "name", "description", "parameters"}
# GA also takes remote MCP servers; the agent keeps them but never calls them.
_MCP_TOOL_KEYS = {
    "type",
    "server_label",
    "server_url",
    "server_description",
    "connector_id",
    "authorization",
    "headers",
    "allowed_tools",
    "require_approval",
}


def function_names(tools: list[Any]) -> set[str]:
    """Names of the function tools in a (validated) tools list."""
    return {t["name"] for t in tools if isinstance(t, dict) and t.get("type") == "function"}


def _apply_tools(cfg: SessionConfig, session: dict[str, Any], dialect: str) -> None:
    if "tools" in session:
        cfg.tools = _tools(session["tools"], dialect)
    if "tool_choice" in session:
        cfg.tool_choice = _tool_choice(session["tool_choice"], dialect)
    if ("tools" in session or "tool_choice" in session) and isinstance(cfg.tool_choice, dict):
        forced = cfg.tool_choice
        if forced["type"] == "function" and forced["name"] not in function_names(cfg.tools):
            # Checked against the merged config, so an update that drops the forced tool
            # is refused as well. Wording modelled on the Responses API's.
            raise RealtimeError(
                f"Tool choice 'function' with name '{forced['name']}' not found in 'tools' "
                "parameter.",
                "invalid_value",
                "session.tool_choice.name",
            )


def _tools(value: object, dialect: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise invalid_type("session.tools", "an array")
    return [_tool(tool, f"session.tools[{i}]", dialect) for i, tool in enumerate(value)]


def _tool(value: object, param: str, dialect: str) -> dict[str, Any]:
    tool = _expect_dict(value, param)
    if "type" not in tool:
        raise missing_parameter(f"{param}.type")
    kinds = ("function", "mcp") if dialect == GA else ("function",)
    if tool["type"] not in kinds:
        raise invalid_value(tool["type"], kinds, f"{param}.type")
    if tool["type"] == "mcp":
        _check_keys(tool, _MCP_TOOL_KEYS, param)
        if "server_label" not in tool:
            raise missing_parameter(f"{param}.server_label")
        _expect_str(tool["server_label"], f"{param}.server_label")
        return copy.deepcopy(tool)
    _check_keys(tool, _FUNCTION_TOOL_KEYS, param)
    if "name" not in tool:
        raise missing_parameter(f"{param}.name")
    _function_name(tool["name"], f"{param}.name")
    if "description" in tool:
        _expect_str(tool["description"], f"{param}.description")
    if "parameters" in tool:
        schema = _expect_dict(tool["parameters"], f"{param}.parameters")
        # A function takes named arguments: its schema must describe an object.
        if schema.get("type", "object") != "object":
            raise RealtimeError(
                f"Invalid schema for function '{tool['name']}': schema must be a JSON Schema "
                f"of 'type: \"object\"', got 'type: \"{schema['type']}\"'.",
                "invalid_function_parameters",
                f"{param}.parameters",
            )
    return copy.deepcopy(tool)


def _function_name(value: object, param: str) -> str:
    name = _expect_str(value, param)
    if len(name) > MAX_FUNCTION_NAME_CHARS:
        raise RealtimeError(
            f"Invalid '{param}': string too long. Expected a string with maximum length "
            f"{MAX_FUNCTION_NAME_CHARS}, but got a string with length {len(name)} instead.",
            "string_above_max_length",
            param,
        )
    if not _FUNCTION_NAME_RE.match(name):
        raise RealtimeError(
            f"Invalid '{param}': string does not match pattern. Expected a string that "
            f"matches the pattern '{FUNCTION_NAME_PATTERN}'.",
            "invalid_value",
            param,
        )
    return name


def _tool_choice(value: object, dialect: str) -> str | dict[str, Any]:
    param = "session.tool_choice"
    if isinstance(value, str):
        if value not in TOOL_CHOICES:
            raise invalid_value(value, TOOL_CHOICES, param)
        return value
    if not isinstance(value, dict):
        raise invalid_type(param, "a string or an object")
    if "type" not in value:
        raise missing_parameter(f"{param}.type")
    kinds = ("function", "mcp") if dialect == GA else ("function",)
    if value["type"] not in kinds:
        raise invalid_value(value["type"], kinds, f"{param}.type")
    keys = {"type", "name"} if value["type"] == "function" else {"type", "server_label", "name"}
    _check_keys(value, keys, param)
    for key in sorted(keys - {"type"}):
        if key not in value:
            raise missing_parameter(f"{param}.{key}")
        _expect_str(value[key], f"{param}.{key}")
    return copy.deepcopy(value)
