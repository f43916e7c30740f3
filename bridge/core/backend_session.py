"""The Realtime session in use, and the ones after it: when it opened, whether it was
configured, and, once it is lost (or retired for a rollover), how a new one is sought
within the reconnect budget.

The budget is a bound: no attempt begins that could not begin within it, each attempt is
given what is left of it, and at its end the call ends. A session that stays silent after
opening (no session.created, or no session.updated) counts as lost at the setup timeout.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.core.actions import ReconnectBackend
from bridge.core.call_config import CallConfig

# First attempt at once, then backing off (seconds), the last delay repeating.
RECONNECT_DELAYS_S = (0.0, 0.25, 0.5, 1.0, 2.0)
# A restored session counts as healthy (the reconnect budget resets) once configured for
# this long; a backend that drops again sooner keeps using up the same budget.
HEALTHY_AFTER_S = 5.0


@dataclass(frozen=True, slots=True)
class WaitOut:
    """No attempt fits what is left of the budget: the call waits for its end."""


@dataclass(frozen=True, slots=True)
class BudgetSpent:
    """The budget is spent: the call ends with the apology."""


class SessionLifecycle:
    __slots__ = (
        "_attempts",
        "_config",
        "_configured_at",
        "_created",
        "_opened_at",
        "_rolling_over",
        "configured",
        "interrupts_by_itself",
        "last_loss",
        "lost_at",
        "model",
        "reconnects",
        "resume_answer",
        "rollovers",
    )

    def __init__(self, config: CallConfig) -> None:
        self._config = config
        self.configured = False  # the session in use confirmed its configuration
        self.interrupts_by_itself = True  # as it confirmed it (server VAD interrupt_response)
        self.model: str | None = None  # as the session reports it
        self.reconnects = 0  # attempts at a new session after a loss, over the call
        self.rollovers = 0  # sessions replaced, healthy, before the service's length limit
        self.lost_at: float | None = None  # when the session in use was lost or retired
        # Why the session was lost, or why the latest attempt at a new one failed; empty
        # while the only attempt replaces a healthy session (a rollover).
        self.last_loss = ""
        # The lost session was mid-answer (or the caller's question was unanswered): the
        # new one is asked to go on. Kept until a new session is configured.
        self.resume_answer = False
        self._opened_at: float | None = None
        self._created = False
        self._configured_at: float | None = None
        self._attempts = 0  # since the loss: picks the backoff
        self._rolling_over = False  # the next attempt replaces a healthy session

    @property
    def restoring(self) -> bool:
        """A session was lost and the one replacing it is not yet proven healthy."""
        return self.lost_at is not None

    def opened(self, now: float) -> None:
        self.configured = False
        self._opened_at, self._created = now, False

    def created(self, model: str | None) -> None:
        self._created = True
        if model:
            self.model = model

    def confirmed(self, model: str | None, interrupts_by_itself: bool, now: float) -> bool:
        """session.updated: True the first time, when the session becomes configured."""
        self._created = True  # (a session.updated implies it)
        if model:
            self.model = model
        self.interrupts_by_itself = interrupts_by_itself
        if self.configured:
            return False
        self.configured = True
        self._configured_at = now
        self.resume_answer = False  # a resume request sent with the config has landed
        return True

    def retire(self, now: float, mid_answer: bool, rollover: bool = False) -> None:
        """Leave the session in use (lost, or replaced by a rollover) for a new one. A
        restore that failed again keeps its budget and its backoff.

        A rollover's replacement is bound by the same budget (the caller waits on it just
        the same) but is not a reconnect: only the attempts after it failed count as such."""
        self.resume_answer = self.resume_answer or mid_answer
        self.configured = False
        self._rolling_over = rollover and self.lost_at is None
        if self.lost_at is None:
            self.lost_at = now
            self._attempts = 0
            self.last_loss = ""

    def next_attempt(self, reason: str, now: float) -> ReconnectBackend | WaitOut | BudgetSpent:
        """After a loss: another attempt at a session, if one can begin within the budget."""
        assert self.lost_at is not None  # set by retire
        if not self._rolling_over:
            self.last_loss = reason
        left = self.lost_at + self._config.reconnect_budget_s - now
        if left <= 0:
            return BudgetSpent()
        delay = RECONNECT_DELAYS_S[min(self._attempts, len(RECONNECT_DELAYS_S) - 1)]
        if delay >= left:
            return WaitOut()
        self._attempts += 1
        if self._rolling_over:
            self._rolling_over = False
            self.rollovers += 1
        else:
            self.reconnects += 1
        return ReconnectBackend(delay, reason, left)

    def tick(self, now: float) -> BudgetSpent | str | None:
        """The clock's checks: the budget's end (BudgetSpent), or a session silent past the
        setup timeout (what it never said, e.g. "no session.created within 5 s of
        connecting"). Also forgets a loss once the new session has held."""
        if (
            self.lost_at is not None
            and self.configured
            and self._configured_at is not None
            and now - self._configured_at >= HEALTHY_AFTER_S
        ):
            self.lost_at, self._attempts = None, 0  # restored, and it holds
        if (
            self.lost_at is not None
            and not self.configured
            and now - self.lost_at >= self._config.reconnect_budget_s
        ):
            return BudgetSpent()  # between sessions, or a new one not configured yet
        return None

    def silent(self, now: float) -> str | None:
        """Why the open but unconfigured session counts as lost, if it does by now."""
        opened_at = self._opened_at
        timeout = self._config.session_setup_timeout_s
        if self.configured or opened_at is None or now - opened_at < timeout:
            return None
        missing = "session.updated" if self._created else "session.created"
        return f"no {missing} within {timeout:g} s of connecting"

    def rollover_due(self, now: float, quiet: bool) -> float | None:
        """The session's age if it should be replaced now: it nears the service's length
        limit, and it is a quiet moment (or, past the grace period, regardless)."""
        after = self._config.rollover_after_s
        configured_at = self._configured_at
        if not after or not self.configured or configured_at is None:
            return None
        age = now - configured_at
        if age < after or (not quiet and age < after + self._config.rollover_grace_s):
            return None
        return age
