"""The `phone-bridge` command as a user runs it: a real process, real sockets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.integration.harness import wait_until

pytestmark = pytest.mark.integration

CREDENTIALS = ("OPENAI_API_KEY", "TWILIO_AUTH_TOKEN", "REALTIME_URL", "PUBLIC_URL", "PORT")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIALS}
    return {**env, **extra}


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
    return clean_env(PYTHONPATH=str(Path(__file__).parents[2]), **extra)


async def test_serve_without_credentials_runs_on_the_local_agent_and_takes_a_call(
    tmp_path: Path,
) -> None:
    env = env_for_cli()
    async with ServeProcess(tmp_path, env) as server:
        assert server.logged("LOCAL ECHO AGENT")
        assert server.logged("signatures are NOT checked")
        code, output = await run_cli(
            "simulate", f"{server.base_url}/voice", "--turns", "1",
            "--out", str(tmp_path / "heard.wav"), cwd=tmp_path, env=env,
        )  # fmt: skip
    assert code == 0, output
    assert "turn 1" in output and "first audio heard after" in output
    assert (tmp_path / "heard.wav").stat().st_size > 8000  # > 0.25 s of 16-bit audio


async def test_sigterm_drains_new_callers_hear_busy_and_calls_end_with_a_goodbye(
    tmp_path: Path,
) -> None:
    env = env_for_cli(SHUTDOWN_GRACE_S="1", BUSY_MESSAGE="Closed for maintenance.")
    async with ServeProcess(tmp_path, env) as server, httpx.AsyncClient() as http:
        caller = asyncio.create_task(
            run_cli("simulate", f"{server.base_url}/voice", "--turns", "8", cwd=tmp_path, env=env)
        )
        await server.wait_for_log("opening the Realtime session", 20)
        assert server.process is not None
        signalled_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        await server.wait_for_log("draining", 5)
        assert (await http.get(server.base_url + "/readyz")).status_code == 503
        busy = await http.post(server.base_url + "/voice", data={"CallSid": "CA2"})
        assert "Closed for maintenance." in busy.text and "<Hangup" in busy.text
        assert "<Stream" not in busy.text

        code, output = await asyncio.wait_for(caller, 40)
        assert await asyncio.wait_for(server.process.wait(), 20) == 0
        stopped_after = time.monotonic() - signalled_at
    assert code == 1 and "closed" in output, output  # the bridge ended the call
    assert server.logged("ending the call with a goodbye: the server is shutting down")
    assert server.logged("call ended: the server is shutting down")  # heard, not timed out
    assert not server.logged("not heard in time")
    assert stopped_after < 15


async def test_serve_refuses_bad_settings_with_one_line_per_problem(tmp_path: Path) -> None:
    env = env_for_cli()
    code, output = await run_cli(
        "serve", cwd=tmp_path, env={**env, "PORT": "eighty", "REALTIME_DIALECT": "v2"}
    )
    assert code == 2
    assert "PORT:" in output and "REALTIME_DIALECT:" in output

    key = "sk-proj-must-never-be-printed"
    code, output = await run_cli("serve", cwd=tmp_path, env={**env, "OPENAI_API_KEY": key})
    assert code == 2
    assert "TWILIO_AUTH_TOKEN" in output and key not in output


async def test_the_agent_command_serves_the_realtime_protocol(tmp_path: Path) -> None:
    port = free_port()
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "agent", "--port", str(port), "--speed", "0",
        cwd=tmp_path, env=env_for_cli(), stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        url = f"ws://127.0.0.1:{port}/v1/realtime"
        deadline = time.monotonic() + 20
        while True:  # until it listens
            try:
                ws = await connect(url)
                break
            except OSError:
                assert time.monotonic() < deadline, "the agent never listened"
                await asyncio.sleep(0.05)
        first = json.loads(await asyncio.wait_for(ws.recv(), 5))
        await ws.close()
        assert first["type"] == "session.created"
    finally:
        agent.terminate()
        await asyncio.wait_for(agent.wait(), 10)
