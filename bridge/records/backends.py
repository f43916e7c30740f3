"""Which store keeps the call records, as the settings say: PostgreSQL (CALL_DB_URL),
shared by every replica, or a SQLite file (CALL_DB_PATH) for a single instance."""

from __future__ import annotations

import asyncio

from bridge.records.store import CallStore, SQLiteCallStore, call_db_problems
from bridge.settings import Settings


def store_for(settings: Settings) -> CallStore | None:
    """The store the settings name, not yet open; None when records are off."""
    if settings.call_db_url:
        from bridge.records.postgres import PostgresCallStore

        return PostgresCallStore(
            settings.call_db_url,
            pool_size=settings.call_db_pool_size,
            statement_timeout_ms=settings.call_db_statement_timeout_ms,
        )
    if settings.call_db_path:
        return SQLiteCallStore(settings.call_db_path)
    return None


def records_problems(settings: Settings) -> list[str]:
    """`serve`'s check of the records: a SQLite file that cannot hold them, or a database a
    newer phone-bridge migrated. A database that cannot be reached now is not one: calls
    are taken, and the records wait for it."""
    if settings.call_db_url:
        from bridge.records.postgres import schema_problem

        problem = asyncio.run(schema_problem(settings.call_db_url))
        return [f"CALL_DB_URL: {problem}"] if problem else []
    return call_db_problems(settings.call_db_path)
