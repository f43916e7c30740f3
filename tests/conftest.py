"""Fixtures every kind of test may ask for."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.object_storage import (
    RecordingsBucket,
    S3Server,
    new_bucket,
    start_s3_server,
    use_test_credentials,
)
from tests.helpers.postgres_server import (
    MISSING,
    PostgresServer,
    postgres_bindir,
    started_server,
)
from tests.helpers.settings_env import setting_names


@pytest.fixture
def no_settings_in_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """None of the machine's settings (its variables, a .env file in the working
    directory) leaks into the test: it runs in an empty directory, with every variable the
    bridge reads unset."""
    monkeypatch.chdir(tmp_path)
    names = setting_names()
    for name in list(os.environ):
        if name.upper() in names:
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """An S3 server on loopback, one per test process (see tests/helpers/object_storage.py)."""
    server = start_s3_server()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> RecordingsBucket:
    """A bucket of its own on it, reached with credentials from the environment."""
    use_test_credentials(monkeypatch, tmp_path)
    return new_bucket(s3_server)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for this test process (each xdist worker has its own);
    tests take a database each (`PostgresServer.create_database`). Skipped, saying why,
    where the binaries are missing."""
    yield from _postgres()


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own, which it may stop and start (an outage)."""
    yield from _postgres()


def _postgres() -> Iterator[PostgresServer]:
    if postgres_bindir() is None:
        pytest.skip(MISSING)
    server = started_server()
    try:
        yield server
    finally:
        server.destroy()
