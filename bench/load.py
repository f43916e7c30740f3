"""Load test: the bridge under N concurrent simulated calls, against a naive baseline.

    .venv/bin/python bench/load.py [--calls 1,50,100,200] [--seconds 20]
        [--modes bridge,bridge-pcm16,bridge-recording,naive] [--profile DIR]

For each N, a run per mode, each with its own processes on 127.0.0.1:
- direct: the callers talk to the stand-in agent itself (Twilio protocol), no bridge: the
  path latency without a bridge, subtracted from the others;
- bridge: callers -> `phone-bridge serve` (mu-law passthrough) -> stand-in agent;
- bridge-pcm16: the same, transcoding to PCM16 24 kHz for the stand-in (frames matched by
  their index, as a resampler cannot carry the frame marker);
- bridge-recording: bridge, with RECORDING=bridge (every call written to a stereo WAV);
  bridge-recording-flac and bridge-recording-opus: the same in RECORDING_FORMAT flac, opus;
- naive: callers -> bench/naive_bridge.py -> stand-in agent;
- relay: callers -> bench/tcp_relay.py -> stand-in agent (direct protocol): bytes passed on
  unparsed, the floor under any bridge written in Python on this event loop.
The stand-in (bench/load_agent.py) plays answers at real-time pace with a barge-in on every
second one; callers (bench/load_caller.py, 4 processes) send 20 ms frames at real-time pace
and play answers at real-time pace, echoing marks as Twilio does. Writes
bench/load-results.md too. --profile runs py-spy on each server (pip install py-spy, or
the `bench` extra) and prints where its time went; profiling disturbs the latencies.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
from load_frames import CALL_HEADER

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PY = sys.executable
CALLER_PROCS = 4
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
CORES = os.cpu_count() or 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} not open after {timeout} s")


def cpu_split_s(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK  # utime, stime


def cpu_s(pid: int) -> float:
    return sum(cpu_split_s(pid))


def procs_cpu_s(procs: list[subprocess.Popen]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += cpu_s(p.pid)
    return total


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


# bench/attack.py's bridge checks signatures, as a deployment does.
BENCH_AUTH_TOKEN = "load-bench-auth-token"


def start_server(
    mode: str, port: int, agent_port: int, log: Path, signed: bool = False
) -> subprocess.Popen | None:
    agent_url = f"ws://127.0.0.1:{agent_port}/v1/realtime?model=gpt-realtime"
    if mode in ("bridge", "bridge-pcm16") or mode.startswith("bridge-recording"):
        env = dict(os.environ)
        if mode == "bridge-pcm16":
            env.update(
                REALTIME_AUDIO_FORMAT="pcm16",
                REALTIME_HEADERS=orjson.dumps({CALL_HEADER: "{call_sid}"}).decode(),
            )
        else:
            env["REALTIME_AUDIO_FORMAT"] = "pcmu"
        # The stand-in's barge-ins are a speech_started and, 300 ms on, a speech_stopped with
        # no transcript: INTERRUPTIONS=confirm (the default) would take each for an "mm-hm"
        # and resume the answer. The bench measures the audio path and the clear, which
        # both modes share: it runs them as the interruptions they are meant to be.
        env["INTERRUPTIONS"] = "immediate"
        if mode.startswith("bridge-recording"):  # RECORDING=bridge: every call to a file
            env.update(RECORDING="bridge", RECORDINGS_DIR=str(log.parent / f"recordings-{port}"))
            env["RECORDING_FORMAT"] = mode.removeprefix("bridge-recording").strip("-") or "wav"
        env.update(
            PORT=str(port),
            HOST="127.0.0.1",
            REALTIME_URL=agent_url,
            OPENAI_API_KEY="sk-local-bench",
            ALLOW_UNSIGNED_TWILIO="true",
            TWILIO_AUTH_TOKEN="",
            CALL_DB_PATH="",
            MAX_CONCURRENT_CALLS="1000",
            LOG_LEVEL="warning",
            LOG_FORMAT="text",
        )
        if signed:
            env.update(
                TWILIO_AUTH_TOKEN=BENCH_AUTH_TOKEN,
                ALLOW_UNSIGNED_TWILIO="false",
                PUBLIC_URL=f"http://127.0.0.1:{port}",
                # Every route an outsider can post to is on.
                CONSOLE_PASSWORD="load-bench-console-password",
                OPERATOR_TOKEN="load-bench-operator-token-0123456789",
            )
        cmd = [str(ROOT / ".venv/bin/phone-bridge"), "serve", "--port", str(port)]
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=log.open("wb"))
    if mode == "naive":
        cmd = [PY, str(BENCH / "naive_bridge.py"), str(port), agent_url]
        return subprocess.Popen(cmd, cwd=ROOT, stderr=log.open("wb"))
    if mode == "relay":
        cmd = [PY, str(BENCH / "tcp_relay.py"), str(port), str(agent_port)]
        return subprocess.Popen(cmd, cwd=ROOT, stderr=log.open("wb"))
    return None


def start_profiler(server: subprocess.Popen, seconds: float, out: Path) -> subprocess.Popen:
    """py-spy on the server for most of the window (raw collapsed stacks)."""
    cmd = [str(Path(PY).parent / "py-spy"), "record", "--pid", str(server.pid)]
    cmd += ["--duration", str(int(seconds * 0.8))]
    cmd += ["--rate", "500", "--format", "raw", "--nonblocking", "-o", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_summary(raw: Path, top: int = 25) -> list[str]:
    """Where the server's samples went: the functions with the most samples of their own,
    then those with the most samples under them (idle samples left out)."""
    own: dict[str, int] = {}
    under: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f.split(":")[0] + ")" if ":" in f else f for f in stack.split(";")]
        if not frames[-1].strip() or frames[-1].startswith(("Runner.run", "run (")):
            continue  # waiting in the event loop
        n = int(count)
        total += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            under[frame] = under.get(frame, 0) + n
    if not total:
        return ["  (no busy samples)"]
    lines = [f"  {total} busy samples; own time:"]
    for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"    {n / total:6.1%}  {name[:110]}")
    lines.append("  including callees:")
    for name, n in sorted(under.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"    {n / total:6.1%}  {name[:110]}")
    return lines


class PeakRss:
    """The largest RSS a process reaches, sampled every 20 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                self.peak = max(self.peak, rss_bytes(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run(
    mode: str,
    n: int,
    seconds: float,
    tmp: Path,
    profile_dir: Path | None = None,
    signed: bool = False,
    during: list[list[str]] = (),  # type: ignore[assignment]
) -> dict:
    """One run of `mode` with `n` calls. `signed`: the bridge checks Twilio signatures and
    the callers sign; `during`: commands run alongside the calls' window (an attacker),
    each given the bridge's port, T0 and the window's length as its last arguments."""
    agent_port, port = free_port(), free_port()
    setup = 3.0 + n * 0.03
    log = tmp / f"{mode}-{n}-server.log"
    server = start_server(mode, port, agent_port, log, signed)
    procs: list[subprocess.Popen] = []
    peak = None
    try:
        t0 = time.monotonic() + setup + (4.0 if server else 0.5)
        agent_out = tmp / f"{mode}-{n}-agent.json"
        flags = ["pcm16"] if mode == "bridge-pcm16" else []
        agent_cmd = [PY, str(BENCH / "load_agent.py"), str(agent_port), str(t0), str(seconds)]
        agent = subprocess.Popen([*agent_cmd, str(agent_out), *flags])
        procs.append(agent)
        if server is not None:
            wait_port(port, server)
            url = f"ws://127.0.0.1:{port}/" + ("" if mode == "relay" else "media-stream")
        else:
            url = f"ws://127.0.0.1:{agent_port}/"
        wait_port(agent_port, agent)
        rss0 = rss_bytes(server.pid) if server else 0
        peak = PeakRss(server.pid) if server else None
        caller_env = dict(os.environ)
        if signed:
            caller_env.update(
                LOAD_AUTH_TOKEN=BENCH_AUTH_TOKEN, LOAD_PUBLIC_URL=f"http://127.0.0.1:{port}"
            )
        for cmd in during:
            procs.append(subprocess.Popen([*cmd, str(port), str(t0), str(seconds)]))
        outs = []
        per = [n // CALLER_PROCS + (1 if i < n % CALLER_PROCS else 0) for i in range(CALLER_PROCS)]
        first = 1
        for i, count in enumerate(per):
            if not count:
                continue
            out = tmp / f"{mode}-{n}-caller{i}.json"
            outs.append(out)
            cmd = [PY, str(BENCH / "load_caller.py"), url, str(first), str(count), str(t0)]
            procs.append(subprocess.Popen([*cmd, str(seconds), str(out), *flags], env=caller_env))
            first += count
        time.sleep(max(0.0, t0 - time.monotonic()))
        cpu0 = cpu_split_s(server.pid) if server else (0.0, 0.0)
        profiler = None
        if server is not None and profile_dir is not None:
            profile_out = profile_dir / f"{mode}-{n}.txt"
            profiler = start_profiler(server, seconds, profile_out)
        gen0 = procs_cpu_s(procs)
        time.sleep(max(0.0, t0 + seconds - time.monotonic()))
        cpu1 = cpu_split_s(server.pid) if server else (0.0, 0.0)
        if profiler is not None:
            profiler.wait(timeout=30)
            print(f"profile of {mode} at N={n} ({profile_out}):", *profile_summary(profile_out),
                  sep="\n")  # fmt: skip
        gen1 = procs_cpu_s(procs)
        rss1 = rss_bytes(server.pid) if server else 0
        for p in procs:
            p.wait(timeout=60 + n * 0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        rss_peak = peak.stop() if peak is not None else 0
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
    log_lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    problems = [ln for ln in log_lines if "ERROR" in ln or "Traceback" in ln]
    for ln in problems[:5]:
        print(f"  [{mode} N={n} server log] {ln}", file=sys.stderr)
    agent_res = orjson.loads(agent_out.read_bytes())
    callers: dict = {}
    late = False
    for out in outs:
        data = orjson.loads(out.read_bytes())
        callers.update(data["calls"])
        late = late or data["late_start"]
    up, down, clear = [], [], []
    lost = reordered = errors = barges = clears = 0
    for cid, c in callers.items():
        a = agent_res["calls"].get(cid)
        if c["error"]:
            errors += 1
        down += c["latencies"]
        if a is None:
            lost += c["sent"]
            continue
        up += a["latencies"]
        if flags:  # transcoded: the k-th frame sent is the k-th received
            up += [
                round((got - sent) * 1000, 3)
                for sent, got in zip(c["sent_at"], a["received_at"], strict=False)
            ]
            down += [round((got - sent) * 1000, 3)
                     for sent, got in zip(a["sent_at"], c["received_at"], strict=False)
                     if sent >= t0]  # fmt: skip
        lost += (c["sent"] - a["received"]) + (a["sent_answers_frames"] - c["received"])
        reordered += a["reordered"] + c["reordered"]
        barges += len(a["barges"])
        clears += len(c["clears"])
        for sent, got in zip(a["barges"], c["clears"], strict=False):
            clear.append((got - sent) * 1000)
    return {
        "mode": mode,
        "gen_cores": (gen1 - gen0) / seconds,
        "server_cores": (sum(cpu1) - sum(cpu0)) / seconds,
        "server_system_share": (cpu1[1] - cpu0[1]) / max(1e-9, sum(cpu1) - sum(cpu0)),
        "log_errors": len(problems),
        "n": n,
        "calls_seen": len(agent_res["calls"]),
        "errors": errors,
        "late_start": late,
        "cpu_ms_per_call_s": (sum(cpu1) - sum(cpu0)) * 1000 / (n * seconds) if server else 0.0,
        "rss_per_call_kb": (rss1 - rss0) / n / 1024 if server else 0.0,
        "rss_mb": rss1 / 2**20,
        "rss_start_mb": rss0 / 2**20,
        "rss_peak_mb": rss_peak / 2**20,
        "up": up,
        "down": down,
        "clear": clear,
        "barges": barges,
        "clears": clears,
        "lost": lost,
        "reordered": reordered,
    }


def ratio(a: float, b: float) -> str:
    if b == 0 or a != a or b != b:
        return "-"
    return f"{a / b:.2f}x"


def summarise(n: int, direct: dict, runs: list[dict]) -> list[str]:
    base = {k: pct(direct[k], p) for k in ("up", "down") for p in (50, 99)}
    base = {
        "up50": pct(direct["up"], 50),
        "up99": pct(direct["up"], 99),
        "down50": pct(direct["down"], 50),
        "down99": pct(direct["down"], 99),
    }
    rows = []
    figures = {}
    for r in runs:
        figures[r["mode"]] = f = {
            "cpu": r["cpu_ms_per_call_s"],
            "rss": r["rss_per_call_kb"],
            "up50": pct(r["up"], 50) - base["up50"],
            "up99": pct(r["up"], 99) - base["up99"],
            "down50": pct(r["down"], 50) - base["down50"],
            "down99": pct(r["down"], 99) - base["down99"],
            "clear50": pct(r["clear"], 50),
            "clear99": pct(r["clear"], 99),
        }
        f["lost"], f["reordered"] = r["lost"], r["reordered"]
    naive = figures.get("naive", {})
    for r in runs:
        f = figures[r["mode"]]

        def cell(key: str, fmt: str, f: dict = f, mode: str = r["mode"]) -> str:
            text = format(f[key], fmt)
            if mode != "naive" and naive:
                text += f" ({ratio(f[key], naive[key])})"
            return text

        log_note = f", {r['log_errors']} log errors" if r["log_errors"] else ""
        log_note += (
            f"; server {r['server_cores']:.2f} cores ({r['server_system_share']:.0%} in the "
            f"kernel), load generator {r['gen_cores']:.2f} "
            f"cores, {(r['server_cores'] + r['gen_cores']) / CORES:.0%} of the {CORES} CPUs"
        )
        rows.append(
            f"| {n} | {r['mode']} | {cell('cpu', '.3f')} | {cell('rss', '.0f')} "
            f"| {cell('up50', '.2f')} / {cell('up99', '.2f')} "
            f"| {cell('down50', '.2f')} / {cell('down99', '.2f')} "
            f"| {cell('clear50', '.2f')} / {cell('clear99', '.2f')} "
            f"| {r['lost']} / {r['reordered']} "
            f"| {r['calls_seen']}/{n}, {r['errors']} err, {r['clears']}/{r['barges']} clr"
            f"{', LATE START' if r['late_start'] else ''}"
            f"{log_note} |"
        )
    rows.append(
        f"| {n} | direct (no bridge) | - | - | {base['up50']:.2f} / {base['up99']:.2f} abs "
        f"| {base['down50']:.2f} / {base['down99']:.2f} abs "
        f"| {pct(direct['clear'], 50):.2f} / {pct(direct['clear'], 99):.2f} abs "
        f"| {direct['lost']} / {direct['reordered']} "
        f"| {direct['calls_seen']}/{n}, {direct['errors']} err; load generator "
        f"{direct['gen_cores']:.2f} cores |"
    )
    return rows


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines()
                  if ln.startswith("model name")), platform.machine())  # fmt: skip
    return (
        f"{os.cpu_count()} CPUs, {model}; Python {platform.python_version()}; {platform.platform()}"
    )


HEADER = """\
Method: every process on 127.0.0.1. Callers send one 20 ms mu-law frame per call every 20 ms
(absolute schedule) and play answers at real-time pace, echoing marks when played and all at
once on clear. The stand-in agent answers every 4 s per call with 1.5 s of audio at real-time
pace; every second answer is barged into after 500 ms (speech_started). Frames carry (call,
seq, CLOCK_MONOTONIC send time) in their first bytes. Latency up = caller->agent, down =
agent->caller, p50/p99 over all frames of the window, minus the same percentile of the
direct run (callers talking to the stand-in with no bridge, same N). Clear = speech_started
sent by the agent -> clear received by the caller (absolute). CPU = server process
utime+stime over the window / (N x seconds). Memory = RSS growth from before the calls to the
end of the window / N. Lost = frames sent minus frames received, both directions (answer
frames the stand-in sent, caller frames it got); reordered = out-of-sequence frames.
bridge-pcm16: the bridge transcodes to PCM16 24 kHz for the stand-in, which answers in
PCM16; a resampler cannot carry the marker, so the k-th frame received is matched with the
k-th sent (order is not checked: reordered reads 0). relay: a TCP relay that parses
nothing (bench/tcp_relay.py), the floor. Cells of other servers show (ratio to naive).
Notes give the CPU (in cores) of the server, the share of it spent in the kernel, and the
CPU of the load generator (stand-in + callers); near 100% of the CPUs in all, the figures
measure CPU contention on this machine, not the server alone.
Columns: N | server | CPU ms per call-s | KB RSS per call
| added up ms p50/p99 | added down ms p50/p99 | clear ms p50/p99 | lost / reordered | notes"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", default="1,50,100,200")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--modes", default="bridge,naive", help="servers to measure")
    parser.add_argument(
        "--profile", type=Path, help="py-spy each server into this folder and print a summary"
    )
    args = parser.parse_args()
    counts = [int(x) for x in args.calls.split(",")]
    modes = args.modes.split(",")
    table = [
        "| N | server | CPU ms/call-s | RSS KB/call | added up p50/p99 ms "
        "| added down p50/p99 ms | clear p50/p99 ms | lost/reord | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print(machine())
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory(prefix="bridge-load-") as tmpdir:
        tmp = Path(tmpdir)
        for n in counts:
            direct = run("direct", n, args.seconds, tmp)
            runs = [run(mode, n, args.seconds, tmp, args.profile) for mode in modes]
            rows = summarise(n, direct, runs)
            table += rows
            print("\n".join(rows), flush=True)
    print()
    print("\n".join(table))
    text = (
        f"# Bridge load test\n\n`{' '.join(sys.argv)}` ({args.seconds:g} s per run)\n\n"
        f"Machine: {machine()}\n\n```\n{HEADER}\n```\n\n" + "\n".join(table) + "\n"
    )
    (BENCH / "load-results.md").write_text(text)
    ok = all("| 0 / 0 |" in row for row in table[2:])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
