"""Schemas of the tools the bridge itself provides.

Only what the model is shown lives here: the call core carries these tools out itself
(hanging up, handing the call to Twilio, playing touch tones), so they have no handlers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

END_CALL = "end_call"
TRANSFER_CALL = "transfer_call"
SEND_DTMF = "send_dtmf"
BUILTIN_NAMES = (END_CALL, TRANSFER_CALL, SEND_DTMF)

# The characters bridge.dtmf.dtmf_mulaw plays; lower-case letters are left out so the model
# sees a single spelling.
DTMF_DIGITS_PATTERN = "^[0-9*#A-Dw]+$"


def _function(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "name": name, "description": description, "parameters": parameters}


def end_call_spec() -> dict[str, Any]:
    return _function(
        END_CALL,
        "Hang up the phone call. Use it when the conversation is over: the caller said "
        "goodbye, asked to hang up, or there is nothing left to do. First say a short "
        "goodbye out loud, in the same response, then call this; the line is cut as soon "
        "as that goodbye has been heard.",
        {"type": "object", "properties": {}},
    )


def transfer_call_spec(destinations: Sequence[str]) -> dict[str, Any]:
    """`destinations`: the names the model may choose from (e.g. "sales", "support")."""
    if not destinations:
        raise ValueError("transfer_call needs at least one destination")
    return _function(
        TRANSFER_CALL,
        "Transfer the phone call to a person or department. Use it when the caller asks "
        "for a person or a department, or when you cannot help with their request. The "
        "caller hears a short handoff message and then the transfer; you leave the call.",
        {
            "type": "object",
            "properties": {
                "destination": {
                    "type": "string",
                    "enum": list(destinations),
                    "description": "Where to transfer the call.",
                }
            },
            "required": ["destination"],
        },
    )


def send_dtmf_spec() -> dict[str, Any]:
    return _function(
        SEND_DTMF,
        "Press keys on the phone keypad, to work an automated phone menu (IVR) this call "
        "is talking to, e.g. 'press 1 for sales' or 'enter your account number followed "
        "by pound'. The keys are played as touch tones on the line.",
        {
            "type": "object",
            "properties": {
                "digits": {
                    "type": "string",
                    "pattern": DTMF_DIGITS_PATTERN,
                    "description": "Keys to press in order: 0-9, * and #, A-D; w waits "
                    "0.5 s before the next key.",
                }
            },
            "required": ["digits"],
        },
    )
