"""A real PostgreSQL server for the tests and the benchmark: Debian's `postgresql`
binaries, `initdb` and `pg_ctl` into a temporary directory, listening on loopback.

PostgreSQL refuses to run as root; as root, the server runs as `nobody`. Where the binaries
are missing, `postgres_bindir()` says so and the tests that need a server are skipped
(.ci/run installs them, so CI always runs those tests).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg

MISSING = (
    "PostgreSQL tests need the server's initdb and pg_ctl (Debian: apt-get install "
    "postgresql; .ci/run installs it)"
)
START_TIMEOUT_S = 30


def postgres_bindir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, or Debian's /usr/lib/postgresql/<version>/bin
    (the newest), which the package does not put on PATH."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    found = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")
    if not found:
        return None
    newest = max(found, key=lambda path: int(Path(path).parts[-3].split(".")[0]))
    return Path(newest).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One server in its own directory. `durable=False` (tests) turns fsync off: nothing
    here must survive the machine, and the suite runs faster."""

    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        self.bindir = bindir
        self.durable = durable
        self.password = "pw-" + secrets.token_hex(12)
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="phone-bridge-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)
            self._user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}

    def _run(self, *args: str, timeout: float = START_TIMEOUT_S + 10) -> None:
        done = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **self._user,
        )
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}{log}")

    def init(self) -> None:
        password_file = self.root / "password"
        password_file.write_text(self.password + "\n")
        if self._user:
            os.chown(password_file, self._user["user"], self._user["group"])
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--no-locale",
            "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={password_file}",
            "--no-sync",
        )  # fmt: skip
        password_file.unlink()

    def start(self) -> None:
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.root}",
            "-c max_connections=200",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w",
            "-t", str(START_TIMEOUT_S), "-o", " ".join(options), "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """`fast`: connections are cut, as when a managed database fails over."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, database: str = "postgres", **query: str) -> str:
        extra = "".join(f"&{k}={v}" for k, v in query.items())
        return (
            f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{database}"
            f"?sslmode=disable{extra}"
        )

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database; its URL."""
        name = name or "t_" + secrets.token_hex(6)
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1].split("?")[0]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")  # (it may not be running)
        shutil.rmtree(self.root, ignore_errors=True)


def started_server(*, durable: bool = False) -> PostgresServer:
    """A new server, initialised and running (the caller destroys it). RuntimeError if
    the binaries are missing or it does not start."""
    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError(MISSING)
    server = PostgresServer(bindir, durable=durable)
    try:
        server.init()
        server.start()
    except BaseException:
        server.destroy()
        raise
    return server
