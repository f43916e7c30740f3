"""A fresh install, as the Docker image (or a user) gets it: build the wheel from exactly
the files the Dockerfile copies, install it into a new virtual environment (dependencies
from the package index, through pip's cache), start `phone-bridge serve` from there the
way the image does (its entrypoint and environment) on the built-in local agent, run the
image's HEALTHCHECK against it, place a simulated call with the installed `phone-bridge
simulate`, then stop the server with SIGTERM and see it drain and exit cleanly.

It uses Python 3.13 when one is available (the image's version, where `audioop-lts`
replaces the stdlib `audioop`), else the interpreter running the tests: set
PHONE_BRIDGE_TEST_PYTHON to choose. It needs the package index (or a warm pip cache)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest

from tests.deploy.files import (
    DEPLOY,
    ROOT,
    RUNTIME_VARIABLES,
    context_copies,
    parse_dockerfile,
)
from tests.helpers.settings_env import setting_names

pytestmark = pytest.mark.integration

INSTALL_TIMEOUT_S = 240.0
START_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
# pip talks only when something is wrong; its cache is reused across runs.
PIP_ENV = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


def interpreter() -> str:
    """The Python to install into: PHONE_BRIDGE_TEST_PYTHON, else a python3.13 that
    actually runs (on PATH, or installed by pyenv but not selected, whose shim then
    refuses to run), else ours."""
    chosen = os.environ.get("PHONE_BRIDGE_TEST_PYTHON")
    if chosen:
        return chosen
    candidates = [shutil.which("python3.13")]
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True, timeout=30)
        versions = Path(root.stdout.strip() or "/nonexistent") / "versions"
        candidates += sorted(map(str, versions.glob("3.13*/bin/python3.13")), reverse=True)
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "pass"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return candidate
    return sys.executable


def run(args: list[str | Path], timeout: float, **kwargs: object) -> str:
    result = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,  # type: ignore[arg-type]
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Variables that would make the install or the server use something other than what a new
# shell gets: the source tree on the path, or another interpreter's environment.
NOT_PASSED = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"}


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the bridge's own settings (credentials among them; read
    case-insensitively, as the bridge reads them) and without PYTHONPATH to the source
    tree. Everything else passes: pip's configuration (PIP_INDEX_URL, PIP_CERT, ...), the
    proxies (HTTP(S)_PROXY, NO_PROXY, either case) and the CA bundles (SSL_CERT_FILE,
    REQUESTS_CA_BUNDLE), so the install works behind a mirror or a proxy as pip does here."""
    bridge = setting_names()
    keep = {
        name: value
        for name, value in os.environ.items()
        if name.upper() not in bridge and name.upper() not in NOT_PASSED
    }
    return {**keep, **PIP_ENV, **extra}


def test_clean_env_passes_pips_network_settings_and_drops_the_bridges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    passed = {
        "PIP_INDEX_URL": "https://mirror.example/simple",
        "PIP_CERT": "/etc/ssl/mirror.pem",
        "HTTPS_PROXY": "http://proxy.example:3128",
        "http_proxy": "http://proxy.example:3128",
        "no_proxy": "localhost",
        "SSL_CERT_FILE": "/etc/ssl/bundle.pem",
        "REQUESTS_CA_BUNDLE": "/etc/ssl/bundle.pem",
    }
    dropped = {"OPENAI_API_KEY": "sk-x", "twilio_auth_token": "t", "PORT": "1", "PYTHONPATH": "."}
    for name, value in {**passed, **dropped}.items():
        monkeypatch.setenv(name, value)
    env = clean_env(PORT="8081")
    # Compared name by name: a failure must not print the rest of the environment.
    assert {name: env.get(name) for name in passed} == passed
    assert [name for name in dropped if name in env] == ["PORT"]
    assert env["PORT"] == "8081"  # what the caller sets still wins


def build_wheel(tmp_path: Path) -> Path:
    """The wheel, built from a copy of what the Dockerfile copies: a stale build/ or
    egg-info in the working tree cannot leak into it, and a file the package needs but
    the image leaves out fails here."""
    source = tmp_path / "source"
    source.mkdir()
    for _stage, name in context_copies(parse_dockerfile(DEPLOY / "Dockerfile")):
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, source / name)
    wheels = tmp_path / "wheels"
    run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", wheels, source],
        INSTALL_TIMEOUT_S,
        env=clean_env(),
    )
    (wheel,) = wheels.glob("phone_bridge-*.whl")
    return wheel


def wait_for_health(url: str, server: subprocess.Popen[str], log: list[str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert server.poll() is None, "serve exited early:\n" + "".join(log)
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} did not answer within {START_TIMEOUT_S} s:\n" + "".join(log))


def test_wheel_installs_into_a_new_venv_serves_and_completes_a_simulated_call(
    tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    python = interpreter()
    version = run([python, "-c", "import sys; print(sys.version.split()[0])"], 30).strip()
    record_property("interpreter", f"{python} ({version})")
    print(f"fresh install on Python {version}: {python}")  # shown with -rA or -s
    started = time.monotonic()

    wheel = build_wheel(tmp_path)
    venv = tmp_path / "venv"
    run([python, "-m", "venv", venv], 60)
    bin_dir = venv / "bin"
    run(
        [bin_dir / "python", "-m", "pip", "install", "--quiet", wheel],
        INSTALL_TIMEOUT_S,
        env=clean_env(),
    )
    # The installed package, not the source tree, and its audio module (audioop-lts on 3.13+).
    probe = "import audioop, bridge; print(bridge.__file__)"
    where = run([bin_dir / "python", "-c", probe], 30, cwd=tmp_path, env=clean_env())
    assert Path(where.strip()).is_relative_to(venv), where
    record_property("install_seconds", round(time.monotonic() - started, 1))

    # Started as the image starts it: its entrypoint and environment, with the port, the
    # interface and the records' directory moved to this machine's free ones. PORT comes
    # from the environment, as a host that assigns the port sets it.
    image = parse_dockerfile(DEPLOY / "Dockerfile").final
    (entrypoint,) = image.all("ENTRYPOINT")
    home = tmp_path / "home"  # the working directory: no .env file
    data = tmp_path / "data"  # stands in for the image's /data
    home.mkdir()
    data.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    image_env = {k: v for k, v in image.env().items() if not RUNTIME_VARIABLES.fullmatch(k)}
    records = data / Path(image_env["CALL_DB_PATH"]).name
    server_env = clean_env(
        **{**image_env, "PORT": str(port), "HOST": "127.0.0.1", "CALL_DB_PATH": str(records)}
    )
    command, *arguments = entrypoint.args
    server = subprocess.Popen(
        [bin_dir / command, *arguments],
        cwd=home,
        env=server_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log: list[str] = []
    assert server.stdout is not None
    reader = threading.Thread(target=lambda: log.extend(server.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        wait_for_health(f"{base}/healthz", server, log)
        assert any("LOCAL ECHO AGENT" in line for line in log), "".join(log)
        # The image's own HEALTHCHECK command, run as Docker runs it, with the venv first
        # on PATH as in the image.
        (healthcheck,) = image.all("HEALTHCHECK")
        check = healthcheck.args[1:]  # the exec form
        if not healthcheck.raw.rstrip().endswith("]"):
            check = ["/bin/sh", "-c", healthcheck.raw.split("CMD ", 1)[1]]  # the shell form
        check_env = {**server_env, "PATH": f"{bin_dir}{os.pathsep}{server_env['PATH']}"}
        result = subprocess.run(check, env=check_env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f"HEALTHCHECK failed: {result.stderr}"

        call = subprocess.run(
            [bin_dir / "phone-bridge", "simulate", f"{base}/voice", "--turns", "1",
             "--out", home / "heard.wav"],
            cwd=home, env=clean_env(), capture_output=True, text=True, timeout=CALL_TIMEOUT_S,
        )  # fmt: skip
        report = call.stdout + call.stderr
        assert call.returncode == 0, report + "\nserver log:\n" + "".join(log)
        assert "turn 1" in report and "first audio heard after" in report, report
        # The report's first line names the CallSid the simulator sent the webhook.
        sid = re.search(r"^call (CA[0-9a-f]{32}) ", call.stdout, re.MULTILINE)
        assert sid, report
        call_sid = sid[1]
        assert (home / "heard.wav").stat().st_size > 8000  # > 0.25 s of 16-bit audio heard
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
            raise
        reader.join(5)
    assert code == 0, "".join(log)
    assert any("drained" in line for line in log), "".join(log)
    # The call's record was written where the image keeps records, and it is that call's:
    # read with sqlite3 alone (the table is `calls`, see bridge/records.py), since a store
    # with no record in it is already 32 KiB.
    with closing(sqlite3.connect(f"{records.as_uri()}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT call_sid FROM calls").fetchall()
    assert rows == [(call_sid,)], rows
    record_property("total_seconds", round(time.monotonic() - started, 1))
