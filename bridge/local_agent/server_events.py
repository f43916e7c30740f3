"""Server event names per dialect, ids, and the error events of the real service.

Error codes and messages copy what the real API sends (as captured in public client logs
and probes), so a client's error handling is exercised against the real wording.
"""

from __future__ import annotations

import secrets
import string
from typing import Any

GA = "ga"
BETA = "beta"

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 21) -> str:
    """Ids shaped like the service's: a prefix and random alphanumerics (21 for items and
    events, 16 for function call ids)."""
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))


# Logical names (the GA spelling) -> wire name per dialect. None: the dialect has no such event.
_BETA_NAMES: dict[str, str | None] = {
    "conversation.item.added": "conversation.item.created",
    "conversation.item.done": None,
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
}


def wire_name(dialect: str, name: str) -> str | None:
    if dialect == BETA:
        return _BETA_NAMES.get(name, name)
    return name


# Client events this agent understands, in the order the real service lists them.
CLIENT_EVENTS = (
    "session.update",
    "session.close",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "response.create",
    "response.cancel",
)


def quoted_list(values: list[str] | tuple[str, ...]) -> str:
    """The service's enumeration style: 'a', 'b', and 'c'."""
    quoted = [f"'{v}'" for v in values]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


class RealtimeError(Exception):
    """A client mistake, answered with an ``error`` event; the session goes on."""

    def __init__(
        self,
        message: str,
        code: str | None = None,
        param: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.error_type = error_type

    def body(self, client_event_id: str | None) -> dict[str, Any]:
        return {
            "type": self.error_type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "event_id": client_event_id,
        }


# --- the real service's errors -------------------------------------------------------------


def invalid_value(
    value: object, supported: list[str] | tuple[str, ...], param: str
) -> RealtimeError:
    return RealtimeError(
        f"Invalid value: '{value}'. Supported values are: {quoted_list(supported)}.",
        "invalid_value",
        param,
    )


def unknown_event(event_type: object) -> RealtimeError:
    return invalid_value(event_type, CLIENT_EVENTS, "type")


def missing_parameter(param: str) -> RealtimeError:
    return RealtimeError(
        f"Missing required parameter: '{param}'.", "missing_required_parameter", param
    )


def unknown_parameter(param: str) -> RealtimeError:
    return RealtimeError(f"Unknown parameter: '{param}'.", "unknown_parameter", param)


def invalid_type(param: str, expected: str) -> RealtimeError:
    return RealtimeError(f"Invalid type for '{param}': expected {expected}.", "invalid_type", param)


def invalid_json() -> RealtimeError:
    return RealtimeError("Invalid event: failed to parse JSON value.", "invalid_json")


def binary_frame() -> RealtimeError:
    return RealtimeError(
        "Expected a text WebSocket message; binary frames are not supported.", "invalid_event"
    )


def invalid_audio() -> RealtimeError:
    return RealtimeError(
        "Invalid 'audio'. Expected base64-encoded audio bytes.", "invalid_value", "audio"
    )


def commit_empty(buffered_ms: float) -> RealtimeError:
    return RealtimeError(
        "Error committing input audio buffer: buffer too small. Expected at least 100ms of "
        f"audio, but buffer only has {buffered_ms:.2f}ms of audio.",
        "input_audio_buffer_commit_empty",
    )


def active_response(response_id: str) -> RealtimeError:
    return RealtimeError(
        f"Conversation already has an active response in progress: {response_id}. "
        "Wait until the response is finished before creating a new one.",
        "conversation_already_has_active_response",
    )


def unknown_call_id(call_id: object) -> RealtimeError:
    """A function_call_output for a call the conversation does not hold. The service's
    wording and code; it sends param null, this agent names the field at fault."""
    return RealtimeError(
        f"Tool call ID '{call_id}' not found in conversation.",
        "invalid_tool_call_id",
        "item.call_id",
    )


def cancel_not_active() -> RealtimeError:
    return RealtimeError(
        "Cancellation failed: no active response found", "response_cancel_not_active"
    )


def truncate_item_not_found(item_id: object) -> RealtimeError:
    return RealtimeError(
        f"Item with item_id not found: {item_id}", "item_truncate_invalid_item_id", "item_id"
    )


def truncate_not_audio() -> RealtimeError:
    return RealtimeError(
        "Only model output audio messages can be truncated", "unsupported_content_type"
    )


def truncate_too_long(actual_ms: int, requested_ms: int) -> RealtimeError:
    # The real service sends this one with code null.
    return RealtimeError(
        f"Audio content of {actual_ms}ms is already shorter than {requested_ms}ms", None
    )


def item_missing(action: str, item_id: object, code: str) -> RealtimeError:
    return RealtimeError(
        f"Error {action} item: the item with id '{item_id}' does not exist.", code, "item_id"
    )


def content_type_must_be(value: object, expected: str, param: str) -> RealtimeError:
    """A message content part of a type its role does not take, when the role takes one."""
    return RealtimeError(
        f"Invalid value: '{value}'. Value must be '{expected}'.", "invalid_value", param
    )


def session_expired(limit_s: float) -> RealtimeError:
    """Sent when a session reaches its maximum duration, just before the service closes it
    with 1001 (going away) and the same message as the close reason."""
    return RealtimeError(
        f"Your session hit the maximum duration of {duration_words(limit_s)}.",
        "session_expired",
    )


def duration_words(seconds: float) -> str:
    """'60 minutes' as the service words its limits; a test's short limit in seconds."""
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute" if minutes == 1 else f"{minutes} minutes"
    return f"{seconds:g} second" if seconds == 1 else f"{seconds:g} seconds"


def voice_locked() -> RealtimeError:
    return RealtimeError(
        "Cannot update a conversation's voice if assistant audio is present.",
        "cannot_update_voice",
        "session.voice",
    )


def server_error() -> RealtimeError:
    return RealtimeError(
        "The server had an error while processing your request. Sorry about that!",
        None,
        error_type="server_error",
    )
