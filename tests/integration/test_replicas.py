"""Several replicas on one PostgreSQL database, as the Kubernetes deployment runs them:
three `phone-bridge serve` processes, simulated calls spread across them, a database
restart in the middle. Every call's record is there once, any replica's console lists
every call and every live call, and Twilio's status for a call one replica answered,
posted to another, lands in its record."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import pytest
from twilio.request_validator import RequestValidator

from bridge.records.postgres import PostgresCallStore
from bridge.records.write_behind import SPILL_PREFIX
from bridge.simulator import CallReport, SimulatorOptions, simulate_call
from tests.helpers.postgres_server import PostgresServer
from tests.helpers.running_bridge import AUTH_TOKEN, eventually, running_bridge
from tests.helpers.serve_process import ServeProcess, env_for_cli, free_port, run_cli
from tests.helpers.twilio_side import simulated_call

pytestmark = pytest.mark.integration

PASSWORD = "replica-console-password"


def replica_env(url: str, name: str, spill: Path, **extra: str) -> dict[str, str]:
    return env_for_cli(
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        CALL_DB_URL=url,
        CALL_DB_SPILL_DIR=str(spill),
        CONSOLE_PASSWORD=PASSWORD,
        REPLICA_NAME=name,
        LOG_FORMAT="text",
        **extra,
    )


@asynccontextmanager
async def console(replica: ServeProcess) -> AsyncIterator[httpx.AsyncClient]:
    """A logged-in console session on one replica."""
    async with httpx.AsyncClient(base_url=replica.base_url, timeout=10) as http:
        login = await http.post("/console/login", data={"password": PASSWORD, "next": "/console"})
        assert login.status_code == 303, login.text
        yield http


async def call(replica: ServeProcess, turns: int = 1) -> CallReport:
    options = SimulatorOptions(
        webhook_url=replica.base_url + "/voice",
        auth_token=AUTH_TOKEN,
        turns=turns,
        utterance_ms=600,
        pause_ms=200,
        turn_timeout_s=10,
        max_duration_s=40,
    )
    return await simulate_call(options)


async def stored(url: str) -> dict[str, int]:
    """Each stored call's sid, and how many rows it has."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute("SELECT call_sid, count(*) FROM calls GROUP BY call_sid")
        return {sid: int(n) for sid, n in await cursor.fetchall()}


def signed(url: str, form: dict[str, str]) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(url, form)}


async def test_three_replicas_share_one_database_through_a_restart(
    private_postgres: PostgresServer, tmp_path: Path
) -> None:
    url = private_postgres.create_database()
    names = ["replica-a", "replica-b", "replica-c"]
    async with AsyncExitStack() as stack:
        # Started together: their migrations meet at the advisory lock.
        a, b, c = await asyncio.gather(
            *(
                stack.enter_async_context(
                    ServeProcess(tmp_path, replica_env(url, name, tmp_path / name))
                )
                for name in names
            )
        )
        console_b = await stack.enter_async_context(console(b))
        console_c = await stack.enter_async_context(console(c))

        # A call in progress on A is listed, live, by B's console, saying A serves it.
        long_call = asyncio.create_task(call(a, turns=4))

        async def live_on_a() -> list[dict[str, object]]:
            calls = (await console_b.get("/console/api/live")).json()["calls"]
            return [c for c in calls if c["replica"] == "replica-a"]

        [live] = await eventually(live_on_a, 15, "A's call among B's live calls", every=0.2)
        long_sid = str(live["call_sid"])
        assert "replica-a" in (await console_c.get("/console")).text
        live_page = await console_c.get(f"/console/calls/{long_sid}")
        assert live_page.status_code == 200 and "in progress" in live_page.text

        # Calls spread across the three; the database restarts while they are going on.
        short_calls = [asyncio.create_task(call(r)) for r in (a, b, c, a, b, c)]
        await asyncio.sleep(1.0)
        private_postgres.stop()

        async def records_waiting() -> bool:
            """Some replica holds a finished call's record for the database that is away."""
            async with httpx.AsyncClient() as http:
                for replica in (a, b, c):
                    text = (await http.get(replica.base_url + "/metrics")).text
                    queued = re.search(r"^phone_bridge_records_queued (\S+)$", text, re.M)
                    if queued is not None and float(queued[1]) > 0:
                        return True
            return False

        # Calls end meanwhile: their records wait in memory until the database is back.
        await eventually(records_waiting, 20, "a record waiting for the database", every=0.2)
        private_postgres.start()
        reports = [await long_call, *await asyncio.gather(*short_calls)]
        assert all(r.completed for r in reports), [r.end_reason for r in reports]
        sids = {r.call_sid for r in reports}
        assert len(sids) == 7

        async def all_stored() -> dict[str, int]:
            rows = await stored(url)
            return rows if set(rows) >= sids else {}

        rows = await eventually(all_stored, 30, "every call's record", every=0.2)
        assert rows == dict.fromkeys(sids, 1)  # every record present, once

        # The console of one replica lists every replica's calls.
        listed = (await console_c.get("/console/calls")).text
        assert all(sid in listed for sid in sids)

        # Twilio's status for the call A answered, posted to B, lands in its record.
        form = {"CallSid": long_sid, "CallStatus": "completed", "CallDuration": "42"}
        status_url = b.base_url + "/call-status"
        async with httpx.AsyncClient() as http:
            answer = await http.post(status_url, data=form, headers=signed(status_url, form))
            assert answer.status_code == 204
            # A webhook replayed to C for a call A served is recognised there.
            voice = c.base_url + "/voice"
            replay = {"CallSid": long_sid, "From": "+15550001111", "To": "+15550002222"}
            replayed = await http.post(voice, data=replay, headers=signed(voice, replay))
            assert replayed.status_code == 409

        async def status_kept() -> bool:
            check = PostgresCallStore(url)
            await check.open()
            try:
                record = await check.get(long_sid)
            finally:
                await check.close()
            return record is not None and (record.final_status, record.duration_s) == (
                "completed",
                42,
            )

        await eventually(status_kept, 10, "the status in A's call's record", every=0.2)
        for replica in (a, b, c):
            assert not replica.logged("Traceback")
            assert private_postgres.password not in "".join(replica.log)


async def test_what_a_stopping_replica_could_not_write_is_imported_at_the_next_start(
    private_postgres: PostgresServer, tmp_path: Path
) -> None:
    url = private_postgres.create_database()
    spill = tmp_path / "spill"
    env = replica_env(url, "replica-a", spill, SHUTDOWN_GRACE_S="1")
    async with ServeProcess(tmp_path, env) as first:
        private_postgres.stop()  # a failover, say, just as a deploy stops this pod
        report = await call(first)
        assert report.completed  # the call never noticed
        assert first.process is not None
        first.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(first.process.wait(), 30) == 0
    assert first.logged("the next start imports them")
    assert [p.name.startswith(SPILL_PREFIX) for p in spill.iterdir()] == [True]

    private_postgres.start()
    async with ServeProcess(tmp_path, env) as second:

        async def imported() -> bool:
            return report.call_sid in await stored(url) and not any(spill.iterdir())

        await eventually(imported, 20, "the spilled record in the database", every=0.2)
        assert second.logged("importing 1 write(s)")


async def test_a_replica_refuses_to_start_on_a_database_a_newer_version_migrated(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    import psycopg

    url = postgres_server.create_database()
    store = PostgresCallStore(url)
    await store.open()
    await store.close()
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE phone_bridge_schema SET version = version + 1")
    env = replica_env(url, "replica-old", tmp_path)
    code, output = await run_cli("serve", "--port", str(free_port()), cwd=tmp_path, env=env)
    assert code == 2 and "Traceback" not in output, output
    [line] = output.strip().splitlines()
    assert line.startswith("phone-bridge: cannot start: CALL_DB_URL: ") and "newer" in line
    assert postgres_server.password not in line and "postgres:***@" in line
    postgres_server.drop_database(url)


async def test_while_the_database_is_away_calls_are_answered_at_once_and_the_console_says_so(
    private_postgres: PostgresServer, tmp_path: Path
) -> None:
    url = private_postgres.create_database()
    settings = {
        "call_db_url": url,
        "call_db_spill_dir": str(tmp_path),
        "console_password": PASSWORD,
    }
    async with running_bridge(**settings) as bridge:  # type: ignore[arg-type]
        private_postgres.stop()
        # The webhook is answered without waiting long on the records (the replay check).
        voice = bridge.base_url + "/voice"
        form = {"CallSid": "CA" + "7" * 32, "From": "+15550001111", "To": "+15550002222"}
        async with httpx.AsyncClient() as http:
            began = time.monotonic()
            answer = await http.post(voice, data=form, headers=signed(voice, form))
            assert answer.status_code == 200 and "<Stream" in answer.text
            assert time.monotonic() - began < 1.5
        report, _ = await simulated_call(bridge, turns=1)
        assert report.completed
        async with httpx.AsyncClient(base_url=bridge.base_url, timeout=10) as http:
            await http.post("/console/login", data={"password": PASSWORD, "next": "/console"})
            away = await http.get("/console/calls")
            assert away.status_code == 503 and "cannot be reached right now" in away.text
            assert "Traceback" not in away.text and private_postgres.password not in away.text
            assert (await http.get("/console")).status_code == 200  # live calls: this replica's
            # This replica still finds the call it could not write yet.
            assert (await http.get(f"/console/calls/{report.call_sid}")).status_code == 200

            private_postgres.start()

            async def listed() -> bool:
                page = await http.get("/console/calls")
                return page.status_code == 200 and report.call_sid in page.text

            await eventually(
                listed, 30, "the call in the records once the database is back", every=0.2
            )
