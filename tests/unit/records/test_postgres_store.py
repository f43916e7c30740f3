"""What only a database shared by several replicas has to get right: replicas starting at
once, writes about one call landing on different replicas at the same moment, its URL's
password, and a database a newer version migrated. A real PostgreSQL server throughout."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest

from bridge.records.postgres import (
    PostgresCallStore,
    safe_url,
    schema_problem,
    url_problem,
)
from bridge.records.store import StoreUnavailable
from tests.helpers.postgres_server import PostgresServer
from tests.unit.records.test_record_store import T0, make_record


@pytest.fixture
def database(postgres_server: PostgresServer) -> Iterator[str]:
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


async def test_replicas_starting_together_migrate_once_and_all_open(database: str) -> None:
    replicas = [PostgresCallStore(database) for _ in range(6)]
    await asyncio.gather(*(r.open() for r in replicas))
    try:
        await replicas[0].save(make_record("CA1"))
        assert all([await r.has("CA1") for r in replicas])
    finally:
        await asyncio.gather(*(r.close() for r in replicas))
    with psycopg.connect(database) as conn:
        versions = conn.execute("SELECT version FROM phone_bridge_schema").fetchall()
    assert versions == [(PostgresCallStore.SCHEMA_VERSION,)]  # one row: migrated once


async def test_a_status_landing_on_one_replica_as_another_saves_is_never_lost(
    database: str,
) -> None:
    # Twilio's final status reaches replica B at the very moment replica A writes the
    # call's record: whichever commits first, the record ends up with the status.
    a, b = PostgresCallStore(database), PostgresCallStore(database)
    await a.open()
    await b.open()
    try:
        sids = [f"CA{i:03d}" for i in range(40)]
        await asyncio.gather(
            *(a.save(make_record(sid)) for sid in sids),
            *(b.record_status(sid, "completed", 77) for sid in sids),
        )
        for sid in sids:
            got = await b.get(sid)
            assert got is not None and (got.final_status, got.duration_s) == ("completed", 77)
        assert len(await a.search(limit=100)) == 40
    finally:
        await a.close()
        await b.close()


async def test_text_postgresql_cannot_hold_is_kept_readable(database: str) -> None:
    store = PostgresCallStore(database)
    await store.open()
    try:
        assert await store.save(make_record(from_number="+1415\x00555", profile="a\x00b"))
        got = await store.get("CA0001")
        assert got is not None and got.from_number == "+1415\ufffd555"
        assert [c.call_sid for c in await store.search("a\x00b")] == ["CA0001"]
    finally:
        await store.close()


def test_the_url_is_shown_without_its_password() -> None:
    url = "postgresql://bridge:s3cr%2Ft@db.example.com:6432/calls?sslmode=verify-full"
    assert safe_url(url) == "postgresql://bridge:***@db.example.com:6432/calls?sslmode=verify-full"
    shown = safe_url("postgres://db/calls?password=hunter22&sslmode=require")
    assert "hunter22" not in shown and "sslmode=require" in shown
    # libpq reads an unencoded # or ? into the password, where a URL parser stops: none of
    # it is shown, whatever the URL parser would have made of it.
    assert safe_url("postgresql://u:pa#ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert "ss" not in safe_url("postgresql://u:p?a@ss@h/db").removeprefix("postgresql://u")
    assert safe_url("postgresql://nobody@/calls?host=/run/pg") == (
        "postgresql://nobody@/calls?host=/run/pg"
    )
    assert url_problem(url) is None
    assert url_problem("mysql://db/calls") is not None
    assert url_problem("postgresql://db/calls?sslmode=") is None


async def test_an_unreachable_server_is_unavailable_not_an_error_and_says_no_password(
    postgres_server: PostgresServer,
) -> None:
    # Nothing listens on this port: the address of a database that is down.
    url = postgres_server.url().replace(f":{postgres_server.port}/", ":9/")
    store = PostgresCallStore(url + "&connect_timeout=1")
    with pytest.raises(StoreUnavailable) as exc:
        await store.open()
    assert postgres_server.password not in str(exc.value)
    assert "127.0.0.1:9" in str(exc.value)
    await store.close()
    assert await schema_problem(url, timeout_s=2) is None  # down is no reason not to start


async def test_serves_check_refuses_a_newer_schema_in_one_line(database: str) -> None:
    store = PostgresCallStore(database)
    await store.open()
    await store.save(make_record(started_at=T0))
    await store.close()
    assert await schema_problem(database) is None
    with psycopg.connect(database) as conn:
        conn.execute("UPDATE phone_bridge_schema SET version = 99")
    problem = await schema_problem(database)
    assert problem is not None and "schema version 99" in problem and "upgrade" in problem
    assert "pw-" not in problem and "\n" not in problem
