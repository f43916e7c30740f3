"""The last thing the caller hears: a goodbye, or a transfer's handoff line.

Once begun, nothing the caller says can interrupt it (turn detection is turned off), and
the call ends only after it was heard in full (its marks came back), or at its deadline.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.core.actions import HangUp, Transfer

GOODBYE_LEAD = "End the call now by saying exactly the following, and nothing else: "
# When the model ends the call without having said goodbye, it is asked for one.
OWN_GOODBYE_INSTRUCTIONS = (
    "The call is ending now. Say a brief, friendly goodbye to the caller in one short "
    "sentence, and nothing else."
)
# Marks the goodbye's response.create, so its response is told apart from any other.
GOODBYE_PURPOSE = "goodbye"


@dataclass(slots=True)
class LastWords:
    instructions: str  # for its response.create
    deadline: float
    # What follows once it was heard: hang up, or hand the call to a transfer's TwiML.
    then: HangUp | Transfer
    requested: bool = False  # its response.create was sent (or the model spoke it already)
    response_id: str | None = None
    generated: bool = False  # the model finished it; it ends once heard
