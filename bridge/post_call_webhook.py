"""The post-call webhook: each call's record, POSTed as JSON once it is complete, signed the
Standard Webhooks way (https://www.standardwebhooks.com: `webhook-id`, `webhook-timestamp`,
`webhook-signature`, HMAC-SHA256), retried with backoff for a bounded time.

Never on a call's path: the delivery is written with the record (one transaction), and a
single task delivers what is due, so a slow or failing receiver costs no call anything and
holds up no drain. Deliveries wait in the records database, so a restart resumes them;
one cut short by a shutdown is tried again, with the same `webhook-id`, so a receiver
that saw it already can tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
import orjson
from standardwebhooks import Webhook

from bridge.records.model import CallRecord, WebhookDelivery
from bridge.records.rows import timeline_rows, transcript_rows, turn_rows
from bridge.records.store import CallStore

log = logging.getLogger("bridge.post_call_webhook")

EVENT_TYPE = "call.completed"
# After the first attempt fails: then, every hour until the retry window closes.
RETRY_DELAYS_S = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0)
ATTEMPT_TIMEOUT_S = 10.0  # a receiver should answer at once and work afterwards
# While the receiver fails, no delivery is tried more often than this, after 1, 2, ...
# failures in a row: a backlog costs one attempt per pause, not one per call.
ENDPOINT_PAUSES_S = (5.0, 30.0, 120.0, 600.0)
# Past this many waiting, a new call's record is kept without its webhook (logged).
MAX_PENDING = 10_000
# How many due deliveries are read per pass, and how long an idle worker sleeps before
# looking again (a new call's record wakes it at once).
BATCH = 20
IDLE_CHECK_S = 60.0
# At shutdown, how long giving back the deliveries this worker held may take.
RELEASE_DEADLINE_S = 2.0


def payload_of(record: CallRecord) -> dict[str, object]:
    """What the receiver gets: the Standard Webhooks envelope around the call's record."""
    return {
        "type": EVENT_TYPE,
        "timestamp": _iso(record.ended_at),
        "data": {
            "call_sid": record.call_sid,
            "stream_sid": record.stream_sid,
            "from": record.from_number,
            "to": record.to_number,
            "profile": record.profile,
            "direction": record.direction,
            "started_at": _iso(record.started_at),
            "ended_at": _iso(record.ended_at),
            "duration_ms": round(record.duration_ms),
            "outcome": record.outcome,
            "end_reason": record.end_reason,
            "model": record.model,
            "turns": turn_rows(record.turns),
            "barge_ins": record.barge_ins,
            "reconnects": record.reconnects,
            "tokens": dict(record.tokens),
            "cost_usd": record.cost_usd,
            "transcript": transcript_rows(record.transcript),
            "timeline": timeline_rows(record.timeline),
            "recording": _recording_of(record),
        },
    }


def _recording_of(record: CallRecord) -> dict[str, object] | None:
    r = record.recording
    if r is None:
        return None
    return {
        "kind": r.kind,
        "status": r.status,
        "sid": r.sid,
        "url": r.url,
        "duration_s": r.duration_s,
        "error": r.error or None,
    }


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds")


def next_attempt_at(
    created_at: float, attempts: int, now: float, retry_for_s: float
) -> float | None:
    """When to try again after `attempts` failed ones, or None: the window has closed."""
    delay = RETRY_DELAYS_S[min(attempts - 1, len(RETRY_DELAYS_S) - 1)]
    at = now + delay
    return at if at <= created_at + retry_for_s else None


class PostCallWebhook:
    def __init__(
        self,
        url: str,
        secret: str,
        store: CallStore,
        *,
        retry_for_s: float = 86400.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url
        # What logs may show of it: a receiver's URL may carry a credential in its
        # user:password@ or its query.
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
        self.safe_url = f"{parts.scheme}://{parts.hostname}{port}{parts.path}"
        self._signer = Webhook(secret)
        self._store = store
        self._retry_for_s = retry_for_s
        self._http = http or httpx.AsyncClient(
            timeout=ATTEMPT_TIMEOUT_S,
            follow_redirects=False,
            headers={"user-agent": "phone-bridge"},
        )
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pending = 0  # deliveries waiting, as last read
        # Handed to this worker by the store (held from other replicas' workers) and not yet
        # attempted to an end: given back, on their own schedule, if they will not be now.
        self._held: dict[str, WebhookDelivery] = {}

    def delivery_for(self, record: CallRecord) -> WebhookDelivery | None:
        """The delivery of `record`, to be saved with it; None while MAX_PENDING wait
        already (the receiver has been down long: the record is kept all the same)."""
        if self._pending >= MAX_PENDING:
            log.error(
                "post-call webhook for %s not queued: %d deliveries wait already",
                record.call_sid,
                self._pending,
            )
            return None
        self._pending += 1
        now = time.time()
        return WebhookDelivery(
            message_id="msg_" + secrets.token_hex(12),
            call_sid=record.call_sid,
            body=orjson.dumps(payload_of(record)).decode(),
            created_at=now,
            next_attempt_at=now,
        )

    def wake(self) -> None:
        """A delivery was saved: deliver it now rather than at the next check."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="post-call-webhook")

    async def stop(self) -> None:
        """At shutdown: an attempt under way is cut short (it stays pending, and is tried
        again at the next start); nothing waits on the receiver."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):  # the records are away: the hold lapses itself
            async with asyncio.timeout(RELEASE_DEADLINE_S):
                await self._release_held()
        await self._http.aclose()

    async def _release_held(self) -> None:
        """Give the deliveries this worker holds but will not attempt now back to every
        worker (this replica's next start, or another replica), due as they were."""
        while self._held:
            _, d = self._held.popitem()
            await self._store.delivery_failed(
                d.message_id, d.attempts, d.next_attempt_at, d.last_error
            )

    async def _run(self) -> None:
        failures = 0  # attempts failed in a row, whichever delivery: the receiver is down
        while True:
            self._wake.clear()  # (before reading: a record saved from here on wakes it)
            wait = IDLE_CHECK_S
            try:
                self._pending = await self._store.pending_deliveries()
                due = await self._store.due_deliveries(time.time(), BATCH)
                self._held.update((d.message_id, d) for d in due)
                delivered_all = True
                for delivery in due:
                    taken = await self._deliver(delivery)
                    self._held.pop(delivery.message_id, None)
                    if taken is False:
                        failures, delivered_all = failures + 1, False
                        break
                    if taken:
                        failures = 0
                await self._release_held()  # the rest of a batch cut short by a failure
                if delivered_all and len(due) == BATCH:
                    continue  # more are due
                if failures:
                    # One attempt per pause while the receiver is down, whatever the
                    # backlog: the rest wait their turn (in the database).
                    wait = ENDPOINT_PAUSES_S[min(failures, len(ENDPOINT_PAUSES_S)) - 1]
                else:
                    next_at = await self._store.next_delivery_at()
                    if next_at is not None:
                        wait = max(0.0, next_at - time.time())
            except Exception as exc:  # the records database is away: try again later
                log.error("post-call webhooks: the call records failed: %s", exc)
            if failures:
                await asyncio.sleep(wait)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(wait, IDLE_CHECK_S))

    async def _deliver(self, delivery: WebhookDelivery) -> bool | None:
        """One attempt at `delivery`: whether the receiver took it; None if it was not
        asked (the delivery's window had closed: given up)."""
        now = time.time()
        if now > delivery.created_at + self._retry_for_s:
            await self._give_up(delivery, delivery.attempts, now, delivery.last_error)
            return None
        error = await self._post(delivery)
        if error is None:
            await self._store.delivery_done(delivery.message_id)
            log.info(
                "post-call webhook for %s delivered after %d attempts",
                delivery.call_sid,
                delivery.attempts + 1,
            )
            return True
        attempts = delivery.attempts + 1
        now = time.time()
        retry_at = next_attempt_at(delivery.created_at, attempts, now, self._retry_for_s)
        if retry_at is None:
            await self._give_up(delivery, attempts, now, error)
            return False
        await self._store.delivery_failed(delivery.message_id, attempts, retry_at, error)
        log.warning(
            "post-call webhook for %s failed (%s): attempt %d, next in %.0f s",
            delivery.call_sid,
            error,
            attempts,
            retry_at - now,
        )
        return False

    async def _post(self, delivery: WebhookDelivery) -> str | None:
        """POST it, signed now; None if the receiver took it (2xx), else why not. The
        answer's body is never read, and the whole attempt has a deadline."""
        signed_at = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery.message_id,
            "webhook-timestamp": str(int(signed_at.timestamp())),
            "webhook-signature": self._signer.sign(delivery.message_id, signed_at, delivery.body),
        }
        try:
            async with asyncio.timeout(ATTEMPT_TIMEOUT_S):
                request = self._http.stream(
                    "POST", self.url, content=delivery.body, headers=headers
                )
                async with request as answer:
                    status = answer.status_code
        except TimeoutError:
            return f"no answer within {ATTEMPT_TIMEOUT_S:g} s"
        except Exception as exc:  # refused, reset, a bad TLS certificate, ...
            error = type(exc).__name__ + (f": {exc}" if str(exc) else "")
            return error.replace(self.url, self.safe_url)
        return None if 200 <= status < 300 else f"HTTP {status}"

    async def _give_up(
        self, delivery: WebhookDelivery, attempts: int, now: float, error: str
    ) -> None:
        await self._store.delivery_done(delivery.message_id)
        log.error(
            "post-call webhook for %s given up after %d attempts over %.0f s: %s",
            delivery.call_sid,
            attempts,
            now - delivery.created_at,
            error or "not tried",
        )
