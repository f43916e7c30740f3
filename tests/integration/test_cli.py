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

from tests.helpers.running_bridge import AUTH_TOKEN, running_bridge
from tests.helpers.serve_process import ServeProcess, env_for_cli, free_port, run_cli

pytestmark = pytest.mark.integration


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
        # The echo agent is nobody's paid model: the call's end says it cost nothing.
        await server.wait_for_log("call ended", 5)
        assert server.logged("no cost (the built-in local echo agent)")
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

    # All in one pass: the missing auth token is not held back until PORT is fixed.
    code, output = await run_cli(
        "serve", cwd=tmp_path, env={**env, "OPENAI_API_KEY": "sk-test", "PORT": "abc"}
    )
    assert code == 2
    assert "PORT:" in output and "TWILIO_AUTH_TOKEN:" in output, output

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


def one_line_error(code: int, output: str) -> str:
    """The output of a command that refused to start: exit 2 and one line saying why."""
    assert code == 2, output
    assert "Traceback" not in output, output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    return lines[0]


async def test_serve_says_in_one_line_where_it_cannot_listen_or_keep_records(
    tmp_path: Path,
) -> None:
    env = env_for_cli()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        results = await asyncio.gather(
            run_cli("serve", "--host", "127.0.0.1", "--port", port, cwd=tmp_path, env=env),
            run_cli("serve", cwd=tmp_path, env={**env, "HOST": "127.0.0.1", "PORT": port}),
            run_cli("serve", cwd=tmp_path, env={**env, "HOST": "999.1.1.1"}),
            run_cli("serve", "--port", "99999", cwd=tmp_path, env=env),
            run_cli(
                "serve", cwd=tmp_path, env={**env, "CALL_DB_PATH": str(tmp_path / "no" / "x.db")}
            ),
        )
    by_flag, by_variable, bad_host, bad_port, no_records = (one_line_error(*r) for r in results)
    assert f"--port: port {port} on 127.0.0.1 is already in use" in by_flag
    assert f"PORT: port {port} on 127.0.0.1 is already in use" in by_variable
    assert "HOST: 999.1.1.1 is neither an address of this machine nor a host name" in bad_host
    assert "argument --port: must be a port number from 1 to 65535, not 99999" in bad_port
    assert f"CALL_DB_PATH: the directory {tmp_path / 'no'} does not exist" in no_records
    assert "CALL_DB_PATH= (empty)" in no_records


AGENT_REFUSALS = [
    (["--speed", "-1"], "--speed"),
    (["--chunk-ms", "0"], "--chunk-ms"),
    (["--items-per-response", "0"], "--items-per-response"),
    (["--stall-after-ms", "-1"], "--stall-after-ms"),
    (["--drop-after-ms", "-1"], "--drop-after-ms"),
    (["--max-session-s", "-5"], "--max-session-s"),
    (["--port", "99999"], "--port"),
    (["--log-level", "loud"], "--log-level"),
    (["--host", "999.1.1.1"], "--host"),
]


async def test_the_agent_refuses_bad_values_in_one_line_naming_the_flag(tmp_path: Path) -> None:
    env = env_for_cli()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        cases = [*AGENT_REFUSALS, (["--port", port], "--port")]
        results = await asyncio.gather(
            *(run_cli("agent", *argv, cwd=tmp_path, env=env) for argv, _ in cases)
        )
    for (argv, flag), result in zip(cases, results, strict=True):
        line = one_line_error(*result)
        assert line.startswith("phone-bridge agent: "), (argv, line)
        assert flag in line, (argv, line)
    assert "already in use" in one_line_error(*results[-1])


async def test_simulate_into_a_reader_that_stops_early_ends_without_a_traceback(
    tmp_path: Path,
) -> None:
    """`phone-bridge simulate ... | head -4`: head leaves before the report is written."""
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before the report is written, as head is
    async with running_bridge() as bridge:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "simulate", bridge.webhook_url,
            "--auth-token", AUTH_TOKEN, "--turns", "1", "--utterance-ms", "300",
            "--answer-idle-ms", "300",
            cwd=tmp_path, env=env_for_cli(), stdout=writer, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        os.close(writer)
        assert process.stderr is not None
        errors = await asyncio.wait_for(process.stderr.read(), 30)
        code = await asyncio.wait_for(process.wait(), 10)
    assert code == 0, errors
    assert b"Traceback" not in errors and b"BrokenPipe" not in errors, errors
