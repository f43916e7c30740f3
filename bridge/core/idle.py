"""A caller who has gone quiet: when to check on them, and when to hang up.

The clock starts once the caller has heard everything the assistant said (its marks came
back, not when it was generated) and nothing is on its way: no answer, no tool, no keys,
nobody speaking (the call says when it is so). After `prompt_s` of that, the assistant
checks in; once that check-in has been heard, `hangup_s` more and the call says goodbye.
Speech or a key from the caller starts everything over. 0 turns either step off.
"""

from __future__ import annotations

from enum import Enum


class IdleStep(Enum):
    NONE = "none"
    CHECK_IN = "check in"  # ask the model to see whether the caller is still there
    HANG_UP = "hang up"  # say goodbye and hang up (outcome caller_idle)


class IdleWatch:
    __slots__ = ("_checked_in", "_quiet_since", "hangup_s", "prompt_s")

    def __init__(self, prompt_s: float, hangup_s: float) -> None:
        self.prompt_s = prompt_s
        self.hangup_s = hangup_s
        self._quiet_since: float | None = None
        self._checked_in = False

    def caller_active(self) -> None:
        """The caller spoke or pressed a key: not idle, and any check-in is answered."""
        self._quiet_since = None
        self._checked_in = False

    def tick(self, quiet: bool, now: float) -> IdleStep:
        """What is due at `now`, the call being `quiet` (see the module) or not."""
        if not quiet:
            self._quiet_since = None
            return IdleStep.NONE
        if self._quiet_since is None:
            self._quiet_since = now
        quiet_s = now - self._quiet_since
        if not self._checked_in and self.prompt_s and quiet_s >= self.prompt_s:
            self._checked_in = True
            self._quiet_since = None  # the check-in is said and heard before the next wait
            return IdleStep.CHECK_IN
        if (self._checked_in or not self.prompt_s) and self.hangup_s and quiet_s >= self.hangup_s:
            return IdleStep.HANG_UP
        return IdleStep.NONE
