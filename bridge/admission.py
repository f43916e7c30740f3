"""Which calls the bridge takes: a concurrency limit, and draining before shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.media_stream import CallRunner

log = logging.getLogger("bridge.admission")

# After the goodbyes are requested, how long to wait for the calls to hang up.
GOODBYE_WAIT_S = 20.0
# An answered webhook holds a line until its stream connects, or this long.
RESERVATION_TTL_S = 30.0


class CallRegistry:
    """The calls in progress on this instance."""

    def __init__(self, max_calls: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_calls = max_calls
        self.active: set[CallRunner] = set()
        self.draining = False
        self._changed = asyncio.Event()
        self._clock = clock
        # Expiry times of calls answered with a stream that has not connected yet: without
        # them, a burst of webhooks would all see a free line.
        self._reserved: deque[float] = deque()

    def __len__(self) -> int:
        return len(self.active)

    @property
    def accepting(self) -> bool:
        """Whether a new call may be answered with a media stream."""
        now = self._clock()
        while self._reserved and self._reserved[0] <= now:
            self._reserved.popleft()  # answered, but its stream never came
        return not self.draining and len(self.active) + len(self._reserved) < self.max_calls

    def reserve(self) -> None:
        """A call was answered with a media stream: hold its line until the stream comes."""
        self._reserved.append(self._clock() + RESERVATION_TTL_S)

    @property
    def full(self) -> bool:
        return len(self.active) >= self.max_calls

    def add(self, runner: CallRunner) -> None:
        self.active.add(runner)
        if self._reserved:
            self._reserved.popleft()  # streams follow their answers: any one will do
        self._changed.set()

    def discard(self, runner: CallRunner) -> None:
        self.active.discard(runner)
        self._changed.set()

    async def drain(self, grace_s: float, goodbye: str) -> None:
        """Stop taking calls; let those in progress finish for `grace_s`, then have the
        assistant say `goodbye` on each and hang up."""
        self.draining = True
        log.warning(
            "draining: no new calls; %d in progress get %.0f s to finish", len(self), grace_s
        )
        if not await self._wait_until_idle(grace_s):
            log.warning("grace period over: saying goodbye on %d calls", len(self))
            await asyncio.gather(
                *(
                    runner.say_goodbye(goodbye, "the server is shutting down")
                    for runner in self.active
                )
            )
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
