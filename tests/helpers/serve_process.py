"""`phone-bridge serve` (and the other commands) in a process of its own, as an operator
runs them: for the tests of the command line, and of several replicas."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

from tests.helpers.running_bridge import wait_until
from tests.helpers.settings_env import without_settings

REPO = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    return without_settings(os.environ, **extra)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def run_cli(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 60
) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", *args,
        cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), timeout)
    return process.returncode or 0, output.decode()


class ServeProcess:
    """`phone-bridge serve` in its own process, its log collected as it is written."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.cwd, self.env = cwd, env
        self.log: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ServeProcess:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "serve", "--host", "127.0.0.1",
            "--port", str(self.port), cwd=self.cwd, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        await self.wait_for_log("Application startup complete", 20)
        return self

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.log.append(line.decode())

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.log)

    async def wait_for_log(self, text: str, timeout: float) -> None:
        await wait_until(
            lambda: self.logged(text) or (self._reader is not None and self._reader.done()),
            timeout,
            f"{text!r} in the log",
        )
        assert self.logged(text), "serve exited early:\n" + "".join(self.log)

    async def __aexit__(self, *exc: object) -> None:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.kill()
        await asyncio.wait_for(self.process.wait(), 10)
        if self._reader is not None:
            await self._reader


def env_for_cli(**extra: str) -> dict[str, str]:
    return clean_env(PYTHONPATH=str(REPO), **extra)
