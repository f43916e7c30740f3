"""Which calls the bridge takes: a concurrency limit, one stream per call, and draining
before shutdown.

A line is held from the webhook's answer (a reservation, keyed by the CallSid) until the
call's stream is admitted, and then until it ends. A WebSocket upgrade holds no line by
itself: only a `start` carrying a valid, unredeemed stream token turns the reservation of
its CallSid into a call (`admit`). So neither replayed webhooks (their CallSid already has
its reservation) nor upgrades that never say `start` can take lines from real callers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.call_runner import CallRunner

log = logging.getLogger("bridge.admission")

# After the goodbyes are requested, how long to wait for the calls to hang up.
GOODBYE_WAIT_S = 20.0
# An answered webhook holds a line until its stream connects, or this long.
RESERVATION_TTL_S = 30.0
# CallSids answered here are remembered this long (at most MAX_REMEMBERED of them), so a
# replay of a webhook for a call that already went on or ended is told apart from a call.
REMEMBER_S = 4 * 3600.0
MAX_REMEMBERED = 100_000


@dataclass(slots=True)
class _Answered:
    """A CallSid this instance answered: how, and whether its stream came."""

    twiml: str  # the answer, while a webhook sent again may need it
    reserved_until: float | None  # while its stream has not come: when its line lapses
    answered_at: float
    streamed: bool = False  # its stream was admitted: no other stream may be
    busy: bool = False  # it was answered busy: no stream is its


class CallRegistry:
    """The calls in progress on this instance, and the lines promised to answered ones."""

    def __init__(self, max_calls: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_calls = max_calls
        self.active: set[CallRunner] = set()
        self.draining = False
        self._changed = asyncio.Event()
        self._clock = clock
        self._answered: OrderedDict[str, _Answered] = OrderedDict()  # oldest first
        self._reserved = 0  # entries of _answered with a live reservation
        # (lapses at, CallSid) in the order made: with one TTL for all, also in time order.
        self._reservations: deque[tuple[float, str]] = deque()
        self._live: dict[str, CallRunner] = {}  # CallSid -> its admitted stream
        self._call_sids: dict[CallRunner, str] = {}  # ... and back

    def __len__(self) -> int:
        return len(self.active)

    @property
    def reserved(self) -> int:
        """Lines held for answered calls whose stream has not come yet."""
        self._expire(self._clock())
        return self._reserved

    @property
    def accepting(self) -> bool:
        """Whether a new call may be answered with a media stream."""
        return not self.draining and len(self.active) + self.reserved < self.max_calls

    def earlier_answer(self, call_sid: str) -> str | None:
        """The TwiML already given to `call_sid`, while its line is still held for it (or
        it was answered busy): a webhook sent again (Twilio retrying one whose answer it
        never got, or a replay) gets the same answer, with the same single-use token, and
        no second line."""
        self._expire(self._clock())
        answered = self._answered.get(call_sid)
        if answered is None or not (answered.busy or answered.reserved_until is not None):
            return None
        return answered.twiml

    def known(self, call_sid: str) -> bool:
        """This instance already answered `call_sid` and its stream came (it is live or
        over), or its line lapsed unused: Twilio does not ask again about such a call, so
        a webhook for it is a replay."""
        self._expire(self._clock())
        answered = self._answered.get(call_sid)
        return call_sid in self._live or (answered is not None and answered.reserved_until is None)

    def answered_at(self, call_sid: str) -> float | None:
        """When this instance answered `call_sid`'s voice webhook (monotonic), if it did."""
        answered = self._answered.get(call_sid)
        return answered.answered_at if answered is not None else None

    def answered_busy(self, call_sid: str, twiml: str) -> None:
        """`call_sid` heard busy: so will a webhook for it sent again, and no stream may
        start for it."""
        now = self._clock()
        self._expire(now)
        if call_sid not in self._answered:
            self._answered[call_sid] = _Answered(twiml, None, now, busy=True)
            self._forget_past_capacity()

    def reserve(self, call_sid: str, twiml: str) -> None:
        """`call_sid` was answered with a media stream: hold its line until its stream
        comes (or RESERVATION_TTL_S), and keep the answer for a webhook sent again."""
        now = self._clock()
        self._expire(now)
        previous = self._answered.pop(call_sid, None)
        if previous is not None and previous.reserved_until is not None:
            self._reserved -= 1
        self._answered[call_sid] = _Answered(twiml, now + RESERVATION_TTL_S, now)
        self._reservations.append((now + RESERVATION_TTL_S, call_sid))
        self._reserved += 1
        self._forget_past_capacity()

    def admit(self, call_sid: str, runner: CallRunner) -> str | None:
        """A stream with a valid token for `call_sid` started: give it the line reserved
        for it (or a free one: its webhook may have reached another replica). Returns why
        it is refused, or None once admitted."""
        now = self._clock()
        self._expire(now)
        if call_sid in self._live:
            return "a stream for this call is already live"
        answered = self._answered.get(call_sid)
        if answered is not None and answered.streamed:
            return "this call had its stream already"  # a replay of its token or webhook
        if answered is not None and answered.busy:
            return "this call was answered busy"
        if answered is not None and answered.reserved_until is not None:
            answered.reserved_until = None
            self._reserved -= 1
        elif len(self.active) + self._reserved >= self.max_calls:
            return f"all {self.max_calls} lines are taken"
        if answered is None:
            answered = self._answered[call_sid] = _Answered("", None, now)
        answered.streamed = True
        answered.twiml = ""  # no webhook will get it again
        self._live[call_sid] = runner
        self._call_sids[runner] = call_sid
        self.active.add(runner)
        self._changed.set()
        return None

    def discard(self, runner: CallRunner) -> None:
        """`runner` ended (admitted or not)."""
        call_sid = self._call_sids.pop(runner, None)
        if call_sid is not None:
            self.active.discard(runner)
            del self._live[call_sid]
            self._changed.set()

    def _expire(self, now: float) -> None:
        """Free the lines of answered calls whose stream never came, and forget CallSids
        answered long ago (both oldest first: each stops at the first one still kept)."""
        reservations = self._reservations
        while reservations and reservations[0][0] <= now:
            lapses_at, call_sid = reservations.popleft()
            answered = self._answered.get(call_sid)
            if answered is not None and answered.reserved_until == lapses_at:
                answered.reserved_until = None  # answered, but its stream never came
                self._reserved -= 1
        while self._answered:
            oldest = next(iter(self._answered.values()))
            if now - oldest.answered_at < REMEMBER_S:
                break
            self._forget_oldest()

    def _forget_past_capacity(self) -> None:
        while len(self._answered) > MAX_REMEMBERED:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        _, answered = self._answered.popitem(last=False)
        if answered.reserved_until is not None:
            self._reserved -= 1

    async def drain(self, grace_s: float, goodbye: str) -> None:
        """Stop taking calls; let those in progress finish for `grace_s`, then have the
        assistant say `goodbye` on each and hang up."""
        self.draining = True
        log.warning(
            "draining: no new calls; %d in progress get %.0f s to finish", len(self), grace_s
        )
        if not await self._wait_until_idle(grace_s):
            log.warning("grace period over: saying goodbye on %d calls", len(self))
            await asyncio.gather(*(runner.say_goodbye(goodbye) for runner in self.active))
            if not await self._wait_until_idle(GOODBYE_WAIT_S):
                log.error("%d calls did not end after their goodbye", len(self))
        log.warning("drained")

    async def _wait_until_idle(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.active:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return False
        return True
