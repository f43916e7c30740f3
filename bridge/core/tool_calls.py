"""The tools a call offers the model, and the calls in progress.

The operator's tools run outside the core (RunTool, reported back by ToolFinished); the
built-ins (end_call, transfer_call, send_dtmf) the core carries out itself. Arguments and
outputs are JSON strings by the function-calling contract (the model writes the one and
reads the other), which is why this module, alone in the core, reads and writes JSON: it
is the tools' payload, not the protocol's.
"""

from __future__ import annotations

from typing import Any

import orjson

from bridge.core.call_config import CallConfig
from bridge.dtmf import valid_digits
from bridge.tools.builtins import (
    END_CALL,
    SEND_DTMF,
    TRANSFER_CALL,
    end_call_spec,
    send_dtmf_spec,
    transfer_call_spec,
)

OK = '{"ok": true}'
CALL_ENDING = '{"error": "the call is ending"}'
NOT_DONE_INTERRUPTED = '{"error": "not done: the caller interrupted"}'
NOT_AVAILABLE = '{"error": "that tool is not available"}'
BAD_DIGITS = '{"error": "digits must be keys 0-9 * # A-D, and w for a 0.5 s pause"}'
ORPHANED_TOOL_MESSAGE = "The tool you called before the line dropped has returned: "


def error(message: str) -> str:
    return orjson.dumps({"error": message}).decode()


def transferring(destination: str) -> str:
    return orjson.dumps({"ok": True, "transferring_to": destination}).decode()


def _argument(arguments: str, name: str) -> object:
    try:
        parsed: Any = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return None
    return parsed.get(name) if isinstance(parsed, dict) else None


class ToolCalls:
    __slots__ = (
        "_builtins",
        "_operator_tools",
        "orphaned",
        "running",
        "seen",
        "session_tools",
        "started_at",
    )

    def __init__(self, config: CallConfig) -> None:
        self._operator_tools = {str(spec.get("name")) for spec in config.tools}
        builtins = []
        if END_CALL in config.builtin_tools:
            builtins.append(end_call_spec())
        if TRANSFER_CALL in config.builtin_tools and config.transfer_twiml:
            builtins.append(transfer_call_spec(list(config.transfer_twiml)))
        if SEND_DTMF in config.builtin_tools:
            builtins.append(send_dtmf_spec())
        self._builtins = {spec["name"] for spec in builtins}
        # What the session is told it may call.
        self.session_tools: tuple[dict[str, Any], ...] = (*builtins, *config.tools)
        self.seen: set[str] = set()  # every call_id taken: a call is carried out once
        self.running: dict[str, str] = {}  # call_id -> name, of the operator's tools at work
        # ... of tools called by a session since lost: their results reach the new one as
        # messages (it does not know those call_ids).
        self.orphaned: dict[str, str] = {}
        # call_id -> when it began, of every operator's tool at work (running or orphaned):
        # what the caller waits for.
        self.started_at: dict[str, float] = {}

    def started(self, call_id: str, name: str, now: float) -> None:
        self.running[call_id] = name
        self.started_at[call_id] = now

    def builtin(self, name: str) -> str | None:
        """`name` if it is a built-in this call offers."""
        return name if name in self._builtins else None

    def is_operator_tool(self, name: str) -> bool:
        return name in self._operator_tools

    def finished(self, call_id: str) -> tuple[str, str] | None:
        """A tool returned: ("running", its name) if its session is still the one in use,
        ("orphaned", its name) if called by a session since lost, or None (answered
        already, or unknown)."""
        self.started_at.pop(call_id, None)
        if call_id in self.orphaned:
            return "orphaned", self.orphaned.pop(call_id)
        if call_id in self.running:
            return "running", self.running.pop(call_id)
        return None

    def orphan_running(self) -> None:
        """The session in use is gone: its tools' results will be given as messages."""
        self.orphaned |= self.running
        self.running = {}

    @staticmethod
    def destination(arguments: str, destinations: list[str]) -> str | None:
        """transfer_call's destination, if it names one of `destinations` (or there is
        only one and it names none)."""
        chosen = _argument(arguments, "destination")
        if chosen is None and len(destinations) == 1:
            return destinations[0]
        return chosen if isinstance(chosen, str) and chosen in destinations else None

    @staticmethod
    def digits(arguments: str) -> str | None:
        """send_dtmf's keys, if they are keys it can play."""
        digits = _argument(arguments, "digits")
        if isinstance(digits, str) and digits and valid_digits(digits):
            return digits
        return None
