"""The `phone-bridge` command as a user runs it: a real process, real sockets."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest

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


async def test_serve_without_credentials_runs_on_the_local_agent_and_takes_a_call(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = clean_env(PYTHONPATH=str(Path(__file__).parents[2]))
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "serve", "--host", "127.0.0.1", "--port", str(port),
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    log: list[str] = []
    try:
        assert server.stdout is not None
        async with asyncio.timeout(20):
            while not any("Application startup complete" in line for line in log):
                line = (await server.stdout.readline()).decode()
                assert line, "serve exited early:\n" + "".join(log)
                log.append(line)
        assert any("LOCAL ECHO AGENT" in line for line in log)
        assert any("signatures are NOT checked" in line for line in log)

        code, output = await run_cli(
            "simulate", f"http://127.0.0.1:{port}/voice", "--turns", "1",
            "--out", str(tmp_path / "heard.wav"), cwd=tmp_path, env=env,
        )  # fmt: skip
        assert code == 0, output
        assert "turn 1" in output and "first audio heard after" in output
        assert (tmp_path / "heard.wav").stat().st_size > 8000  # > 0.25 s of 16-bit audio
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 10)


async def test_serve_refuses_bad_settings_with_one_line_per_problem(tmp_path: Path) -> None:
    env = clean_env(PYTHONPATH=str(Path(__file__).parents[2]))
    code, output = await run_cli(
        "serve", cwd=tmp_path, env={**env, "PORT": "eighty", "REALTIME_DIALECT": "v2"}
    )
    assert code == 2
    assert "PORT:" in output and "REALTIME_DIALECT:" in output

    key = "sk-proj-must-never-be-printed"
    code, output = await run_cli("serve", cwd=tmp_path, env={**env, "OPENAI_API_KEY": key})
    assert code == 2
    assert "TWILIO_AUTH_TOKEN" in output and key not in output
