"""Live calls across replicas: each instance keeps a heartbeat row per call in progress in
the shared records (`CallStore.publish_live_calls`), so the console of any replica lists
every replica's calls, with the replica serving each, without talking to the other pods.

Rows are written off the audio path (a task that reads the calls' summaries once a
second and writes only when the set of calls changed, or every HEARTBEAT_S); a replica
that dies leaves rows nobody refreshes, which are ignored after STALE_AFTER_S and then
removed by the next heartbeat of any replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from bridge.records.model import LiveCallRow
from twiml.answer import PROFILE_PARAMETER

if TYPE_CHECKING:
    from bridge.admission import CallRegistry
    from bridge.records.store import CallStore

log = logging.getLogger("bridge.live_calls")

HEARTBEAT_S = 5.0
CHECK_S = 1.0
STALE_AFTER_S = 4 * HEARTBEAT_S
STOP_DEADLINE_S = 2.0


def live_call_rows(calls: CallRegistry, replica: str) -> list[LiveCallRow]:
    """This instance's calls in progress, as heartbeat rows."""
    rows = []
    for runner in list(calls.active):
        summary = runner.summary(timeline=False)
        if summary is None:
            continue  # (every call in `active` was admitted: it has one)
        parameters = summary.parameters
        rows.append(
            LiveCallRow(
                call_sid=summary.call_sid,
                replica=replica,
                started_at=runner.clock.wall,
                from_number=parameters.get("From", ""),
                to_number=parameters.get("To", ""),
                profile=parameters.get(PROFILE_PARAMETER, ""),
                phase=summary.phase,
                turns=len(summary.turns),
                barge_ins=len(summary.barge_ins),
            )
        )
    return rows


class LiveCallBeacon:
    """Keeps this replica's heartbeat rows current in the shared records."""

    def __init__(
        self,
        calls: CallRegistry,
        store: CallStore,
        replica: str,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        check_s: float = CHECK_S,
    ) -> None:
        self.calls = calls
        self.store = store
        self.replica = replica
        self.heartbeat_s = heartbeat_s
        self.check_s = check_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="live-call-beacon")

    async def stop(self) -> None:
        """Stop, and take this replica's rows away (its calls are over), within a deadline:
        a database that is away keeps them until they go stale."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        now = time.time()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(STOP_DEADLINE_S):
                await self.store.publish_live_calls(self.replica, [], now, now - STALE_AFTER_S)

    async def _run(self) -> None:
        published: frozenset[tuple[str, str]] | None = None
        published_at = 0.0
        failing = False
        while True:
            rows = live_call_rows(self.calls, self.replica)
            # A call beginning, ending or changing phase shows at once; the rest (turns,
            # barge-ins) with the next heartbeat.
            shape = frozenset((row.call_sid, row.phase) for row in rows)
            now = time.time()
            if shape != published or now - published_at >= self.heartbeat_s:
                try:
                    await self.store.publish_live_calls(
                        self.replica, rows, now, now - STALE_AFTER_S
                    )
                except Exception as exc:  # the database is away: the calls go on
                    if not failing:
                        log.warning("live calls: cannot update the shared records: %s", exc)
                    failing = True
                else:
                    published, published_at, failing = shape, now, False
            await asyncio.sleep(self.check_s)
