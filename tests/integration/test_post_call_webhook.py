"""The post-call webhook over loopback: a real receiver verifies each post's Standard
Webhooks signature; failed posts are retried with the same webhook-id; deliveries wait in
the records across a restart; a receiver that never answers holds up no call and no
shutdown."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from pathlib import Path

import pytest

from bridge import post_call_webhook
from bridge.post_call_webhook import PostCallWebhook
from bridge.records.store import SQLiteCallStore
from tests.helpers.records import record
from tests.helpers.running_bridge import running_bridge, stored_record, wait_until
from tests.helpers.twilio_side import simulated_call
from tests.helpers.webhook_receiver import SECRET, webhook_receiver

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(post_call_webhook, "RETRY_DELAYS_S", (0.1,))
    monkeypatch.setattr(post_call_webhook, "ENDPOINT_PAUSES_S", (0.1,))


def pending(db: Path) -> list[tuple[str, int, str]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT call_sid, attempts, last_error FROM webhook_deliveries")
        return list(rows.fetchall())
    finally:
        conn.close()


async def test_the_record_is_posted_signed_and_a_failing_receiver_gets_it_again() -> None:
    async with (
        webhook_receiver(fail_first=2) as receiver,
        running_bridge(
            post_call_webhook_url=receiver.url, post_call_webhook_secret=SECRET
        ) as bridge,
    ):
        report, _ = await simulated_call(bridge, turns=2, barge_in_after_ms=600)
        record = await stored_record(bridge, report.call_sid)
        await wait_until(lambda: receiver.verified, 10, "the webhook to be delivered")

    [message_id] = set(receiver.attempts)  # three posts of one message: a receiver dedupes
    assert len(receiver.attempts) == 3 and message_id.startswith("msg_")
    assert receiver.refused == []
    [body] = receiver.verified
    assert body["type"] == "call.completed"
    data = body["data"]
    assert (data["call_sid"], data["outcome"]) == (report.call_sid, "caller_hung_up")
    assert data["barge_ins"] == record.barge_ins == 1
    assert [t["truncated_at_ms"] for t in data["turns"]] == [
        t.truncated_at_ms for t in record.turns
    ]
    assert [line["text"] for line in data["transcript"]] == [
        line.text for line in record.transcript
    ]
    assert [e["moment"] for e in data["timeline"]] == [e.moment.value for e in record.timeline]


async def test_a_delivery_waits_in_the_records_across_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    async with webhook_receiver() as receiver:
        down = receiver.url  # the receiver is gone again once this block ends
    async with running_bridge(
        call_db_path=str(db), post_call_webhook_url=down, post_call_webhook_secret=SECRET
    ) as bridge:
        report, _ = await simulated_call(bridge, turns=1)
        await stored_record(bridge, report.call_sid)
        await wait_until(lambda: pending(db) and pending(db)[0][1] >= 1, 10, "a failed attempt")
    [(call_sid, attempts, error)] = pending(db)
    assert call_sid == report.call_sid and attempts >= 1 and "Connect" in error

    async with (
        webhook_receiver() as receiver,
        running_bridge(
            call_db_path=str(db),
            post_call_webhook_url=receiver.url,
            post_call_webhook_secret=SECRET,
        ),
    ):
        await wait_until(lambda: receiver.verified, 10, "the delivery to resume")
        await wait_until(lambda: not pending(db), 5, "the delivery to be forgotten")
    assert receiver.verified[0]["data"]["call_sid"] == report.call_sid


async def test_a_receiver_that_never_answers_holds_up_no_call_and_no_shutdown(
    tmp_path: Path,
) -> None:
    db = tmp_path / "calls.db"
    async with webhook_receiver(hang=True) as receiver:
        async with running_bridge(
            call_db_path=str(db),
            post_call_webhook_url=receiver.url,
            post_call_webhook_secret=SECRET,
        ) as bridge:
            first, _ = await simulated_call(bridge, turns=1)
            # The post is under way, and will never be answered.
            await asyncio.wait_for(receiver.arrived.wait(), 10)
            second, _ = await simulated_call(bridge, turns=1)  # another call goes ahead
            assert second.completed and second.heard_audio
            leaving = time.monotonic()
        assert time.monotonic() - leaving < 3.0
    # Both wait for the next start: the one cut short, and the one queued behind it.
    assert sorted(sid for sid, _, _ in pending(db)) == sorted([first.call_sid, second.call_sid])


async def test_while_the_receiver_fails_a_backlog_costs_one_attempt_per_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(post_call_webhook, "ENDPOINT_PAUSES_S", (0.3,))
    monkeypatch.setattr(post_call_webhook, "RETRY_DELAYS_S", (0.0,))  # all due at once
    store = SQLiteCallStore(":memory:")
    await store.open()
    async with webhook_receiver(fail_first=1000) as receiver:
        webhook = PostCallWebhook(receiver.url, SECRET, store)
        for k in range(5):
            sid = f"CA{k:032d}"
            await store.save(record(sid), webhook.delivery_for(record(sid)))
        webhook.start()
        try:
            await wait_until(lambda: len(receiver.attempts) >= 3, 10, "three attempts")
        finally:
            await webhook.stop()
    await store.close()
    # Not five posts at once: one, then one per pause (less the event loop's timer
    # resolution, which may wake it a millisecond early).
    gaps = [b - a for a, b in itertools.pairwise(receiver.arrived_at[:3])]
    assert all(gap >= 0.29 for gap in gaps), gaps


async def test_past_its_bound_a_new_record_is_kept_without_its_webhook(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(post_call_webhook, "MAX_PENDING", 2)
    store = SQLiteCallStore(":memory:")
    await store.open()
    webhook = PostCallWebhook("https://crm.example.com/calls", SECRET, store)
    try:
        deliveries = [webhook.delivery_for(record(f"CA{k:032d}")) for k in range(3)]
    finally:
        await webhook.stop()
        await store.close()
    assert [d is not None for d in deliveries] == [True, True, False]
    assert "not queued: 2 deliveries wait already" in caplog.text
