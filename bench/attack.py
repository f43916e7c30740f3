"""What an outsider's requests cost the calls in progress: live-call latency and server
memory while an attacker posts to the bridge at full speed.

    .venv/bin/python bench/attack.py [--calls 5] [--seconds 15] [--attacks quiet,fields,...]

Each run starts `phone-bridge serve` with TWILIO_AUTH_TOKEN set (a deployment's setup), the
load test's stand-in agent and N signed simulated callers (bench/load.py's machinery: 20 ms
frames at real-time pace, per-frame latency both ways), and, for the length of the calls'
window, one attacker process:

- quiet: none (the reference figures);
- fields: one connection posting, back to back, 1.2 MiB bodies of 100,000 form fields with
  a bogus X-Twilio-Signature to /voice (a body the signature check has to read);
- huge: four connections posting 48 MiB bodies with no signature to /voice;
- status, calls, login: the `fields` body to /call-status, POST /calls, /console/login;
- slow: 64 connections that declare a 1000-byte body and send it a byte a second;
- spin: no requests, a process spinning on a CPU (a control: what the attacker's own CPU
  use does to the calls on this machine);
- elsewhere: the `fields` attack aimed at another process (a few lines of asyncio that
  answer 413 and close), not at the bridge: the control for what such traffic costs this
  machine's kernel and CPUs whoever receives it. The bridge's own share of an attack's
  cost is its figures minus this row's.

Prints, per run: added latency up and down (p50 / p99 / max, ms; minus nothing: compare
with the quiet run), peak RSS of the server, and what the attacker's requests got.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import orjson
from load import PY, free_port, machine, pct, run

FIELDS_BODY = ("&".join(f"f{i:05d}=v{i % 10}" for i in range(100_000))).encode()
FIELDS_BODY += b"&pad=" + b"x" * (1_200_000 - len(FIELDS_BODY) - 5)
HUGE_BYTES = 48 * 1024 * 1024
TARGETS = {
    "fields": ("/voice", 1, True),
    "huge": ("/voice", 4, False),
    "status": ("/call-status", 1, True),
    "calls": ("/calls", 1, True),
    "login": ("/console/login", 1, True),
    "slow": ("/voice", 64, True),
    "spin": ("", 0, False),
}
SLOW_BYTES = 1000


async def post(port: int, path: str, kind: str, statuses: Counter[str]) -> None:
    """One request of the attack; what it got goes into `statuses`."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        statuses[f"connect {type(exc).__name__}"] += 1
        await asyncio.sleep(0.01)
        return
    size = {"huge": HUGE_BYTES, "slow": SLOW_BYTES}.get(kind, len(FIELDS_BODY))
    signature = "" if kind == "huge" else "X-Twilio-Signature: bm90IGEgc2lnbmF0dXJl\r\n"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Authorization: Bearer wrong\r\n{signature}Content-Length: {size}\r\n\r\n"
    ).encode()
    try:
        writer.write(head)
        if kind == "slow":
            for _ in range(SLOW_BYTES):
                writer.write(b"a")
                await writer.drain()
                if reader.at_eof():
                    break
                with contextlib.suppress(TimeoutError):
                    line = await asyncio.wait_for(reader.readline(), 1.0)
                    if line:
                        statuses[line.split(b" ")[1].decode()] += 1
                        return
            statuses["slow: body sent in full, no answer"] += 1
            return
        body = FIELDS_BODY if kind != "huge" else b"a" * (1024 * 1024)
        sent = 0
        while sent < size:
            chunk = body[: size - sent]
            writer.write(chunk)
            sent += len(chunk)
            await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 30)
        statuses[line.split(b" ")[1].decode() if line else "no answer"] += 1
    except (OSError, TimeoutError, IndexError) as exc:
        # A server that answers early and closes cuts the rest of the body off.
        statuses[f"cut off ({type(exc).__name__})"] += 1
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def attack(kind: str, port: int, t0: float, seconds: float, out: Path) -> None:
    kind, _, elsewhere = kind.partition("@")
    if elsewhere:
        port = int(elsewhere)
    path, connections, _ = TARGETS[kind]
    statuses: Counter[str] = Counter()
    await asyncio.sleep(max(0.0, t0 - time.monotonic()))
    end = t0 + seconds

    if kind == "spin":
        while time.monotonic() < end:
            pass
        out.write_bytes(b"{}")
        return

    async def worker() -> None:
        while time.monotonic() < end:
            await post(port, path, kind, statuses)

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(connections))), seconds + 5)
    out.write_bytes(orjson.dumps(statuses))


async def sink(port: int) -> None:
    """Another process for the `elsewhere` control: reads a request's head, answers 413,
    closes."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 413 Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", port)
    await server.serve_forever()


def main() -> int:
    if sys.argv[1:2] == ["--sink"]:
        asyncio.run(sink(int(sys.argv[2])))
        return 0
    if sys.argv[1:2] == ["--attacker"]:
        kind, out, port, t0, seconds = sys.argv[2:7]
        asyncio.run(attack(kind, int(port), float(t0), float(seconds), Path(out)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument(
        "--attacks", default="quiet,spin,elsewhere,fields,huge,status,calls,login,slow"
    )
    args = parser.parse_args()
    print(machine())
    rows = [
        "| attack | up p50 / p99 / max ms | down p50 / p99 / max ms | server RSS start → peak MB "
        "| server CPU | attacker's requests |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="bridge-attack-") as tmpdir:
        tmp = Path(tmpdir)
        for kind in args.attacks.split(","):
            out = tmp / f"{kind}.json"
            aimed, sink_process = kind, None
            if kind == "elsewhere":
                sink_port = free_port()
                sink_process = subprocess.Popen([PY, __file__, "--sink", str(sink_port)])
                aimed = f"fields@{sink_port}"
            during = [] if kind == "quiet" else [[PY, __file__, "--attacker", aimed, str(out)]]
            try:
                r = run("bridge", args.calls, args.seconds, tmp, signed=True, during=during)
            finally:
                if sink_process is not None:
                    sink_process.kill()
            got = orjson.loads(out.read_bytes()) if out.exists() else {}
            answers = ", ".join(f"{n} × {status}" for status, n in sorted(got.items())) or "-"
            row = (
                f"| {kind} | {pct(r['up'], 50):.2f} / {pct(r['up'], 99):.2f} / "
                f"{max(r['up'], default=float('nan')):.1f} "
                f"| {pct(r['down'], 50):.2f} / {pct(r['down'], 99):.2f} / "
                f"{max(r['down'], default=float('nan')):.1f} "
                f"| {r['rss_start_mb']:.0f} → {r['rss_peak_mb']:.0f} "
                f"| {r['server_cores']:.0%} | {answers} |"
            )
            if r["errors"] or r["calls_seen"] != args.calls or r["lost"]:
                row += f" calls: {r['calls_seen']}/{args.calls} seen, {r['errors']} errors, "
                row += f"{r['lost']} frames lost"
            rows.append(row)
            print(row, flush=True)
    print()
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
