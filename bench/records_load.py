"""Call records under load, on several replicas sharing one PostgreSQL, through an outage.

    .venv/bin/python bench/records_load.py [--calls 200] [--replicas 3] [--concurrency 6]
        [--outage-s 30] [--outage-at-s 25]

Starts a PostgreSQL server of its own (Debian's initdb and pg_ctl, in a temporary
directory; fsync on, as a real one), `--replicas` `phone-bridge serve` processes on it
(each on the built-in local echo agent), and places `--calls` simulated calls spread over
them round robin, `--concurrency` at a time. `--outage-at-s` into the load the database is
stopped (`pg_ctl -m fast`: every connection cut, as in a failover) for `--outage-s`, then
started again.

Then `--burst` records per replica written all at once (the replicas' store code, in this
process) show the store's own pace, with each save timed to its commit.

Prints, from the replicas' own metrics (phone_bridge_record_write_seconds, records_queued,
record_write_failures, records_spilled): the records written per second (over the run, and
the best second: the queue draining after the outage), the write latency's p50 and p99
(interpolated in the histogram's buckets, as Prometheus' histogram_quantile does), the
queue's peak, and then, from the database, whether every call's record is there, once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.simulator import SimulatorOptions, simulate_call  # noqa: E402
from tests.helpers.postgres_server import PostgresServer, started_server  # noqa: E402
from tests.helpers.settings_env import without_settings  # noqa: E402

AUTH_TOKEN = "records-load-auth-token"
METRIC = re.compile(r"^(phone_bridge_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_replica(name: str, url: str, spill: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = without_settings(
        os.environ,
        PYTHONPATH=str(ROOT),
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        CALL_DB_URL=url,
        CALL_DB_SPILL_DIR=str(spill),
        REPLICA_NAME=name,
        LOG_LEVEL="warning",
        LOG_FORMAT="text",
        SHUTDOWN_GRACE_S="1",
    )
    log = open(spill.parent / f"{name}.log", "wb")  # noqa: SIM115 (the process's, till it ends)
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=spill.parent,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return process, f"http://127.0.0.1:{port}"


async def wait_healthy(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"replica exited with {process.returncode}")
            try:
                if (await http.get(base + "/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{base} never became healthy")


async def scrape(http: httpx.AsyncClient, base: str) -> dict[str, float]:
    """The replica's record metrics: name (with labels) -> value."""
    found: dict[str, float] = {}
    text = (await http.get(base + "/metrics")).text
    for line in text.splitlines():
        match = METRIC.match(line)
        if match and "record" in match[1]:
            found[match[1] + (match[2] or "")] = float(match[3])
    return found


def write_buckets(metrics: list[dict[str, float]]) -> dict[float, float]:
    """The replicas' write-latency histograms, added up: upper bound -> count."""
    buckets: dict[float, float] = defaultdict(float)
    for m in metrics:
        for name, value in m.items():
            if name.startswith("phone_bridge_record_write_seconds_bucket"):
                buckets[float(name.split('le="')[1].rstrip('"}'))] += value
    return buckets


def quantile(q: float, buckets: dict[float, float]) -> float:
    """histogram_quantile over cumulative bucket counts (upper bound -> count)."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total == 0:
        return float("nan")
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return bounds[-1]


async def run(args: argparse.Namespace) -> int:
    server: PostgresServer = started_server(durable=True)
    work = Path(tempfile.mkdtemp(prefix="records-load-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        url = server.create_database("records_load")
        bases = []
        for i in range(args.replicas):
            spill = work / f"spill-{i}"
            spill.mkdir()
            process, base = start_replica(f"replica-{chr(97 + i)}", url, spill)
            processes.append(process)
            bases.append(base)
        await asyncio.gather(*(wait_healthy(b, p) for b, p in zip(bases, processes, strict=True)))
        print(
            f"{args.calls} calls over {args.replicas} replicas, {args.concurrency} at a time; "
            f"PostgreSQL stopped {args.outage_at_s:g} s in, for {args.outage_s:g} s"
        )

        limit = asyncio.Semaphore(args.concurrency)
        reports = []

        async def one_call(i: int) -> None:
            async with limit:
                options = SimulatorOptions(
                    webhook_url=bases[i % len(bases)] + "/voice",
                    auth_token=AUTH_TOKEN,
                    turns=1,
                    utterance_ms=600,
                    pause_ms=200,
                    turn_timeout_s=15,
                    max_duration_s=60,
                )
                reports.append(await simulate_call(options))

        written: list[tuple[float, float]] = []  # (time, records written so far)
        queued_peak = 0.0
        queue_seen: list[tuple[float, float]] = []  # (time, writes queued on all replicas)
        outage: list[float] = []

        async def watch(http: httpx.AsyncClient) -> None:
            nonlocal queued_peak
            while True:
                metrics = await asyncio.gather(*(scrape(http, b) for b in bases))
                count = sum(m.get("phone_bridge_record_write_seconds_count", 0) for m in metrics)
                queued = sum(m.get("phone_bridge_records_queued", 0) for m in metrics)
                written.append((time.monotonic(), count))
                queue_seen.append((time.monotonic(), queued))
                queued_peak = max(queued_peak, queued)
                await asyncio.sleep(0.2)

        before: list[dict[str, float]] = []

        async def database_outage() -> None:
            await asyncio.sleep(args.outage_at_s)
            async with httpx.AsyncClient(timeout=10) as http:
                before.extend(await asyncio.gather(*(scrape(http, b) for b in bases)))
            outage.append(time.monotonic())
            await asyncio.to_thread(server.stop, "fast")
            await asyncio.sleep(args.outage_s)
            await asyncio.to_thread(server.start)
            outage.append(time.monotonic())

        async with httpx.AsyncClient(timeout=10) as http:
            watcher = asyncio.create_task(watch(http))
            started = time.monotonic()
            breaker = asyncio.create_task(database_outage())
            await asyncio.gather(*(one_call(i) for i in range(args.calls)))
            await breaker
            calls_done = time.monotonic()
            # Every record in: the queues empty on every replica.
            deadline = time.monotonic() + 120
            while True:
                metrics = await asyncio.gather(*(scrape(http, b) for b in bases))
                queued = sum(m.get("phone_bridge_records_queued", 0) for m in metrics)
                if queued == 0 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            drained = time.monotonic()
            await asyncio.sleep(0.5)
            watcher.cancel()
            metrics = await asyncio.gather(*(scrape(http, b) for b in bases))

        buckets, steady = write_buckets(metrics), write_buckets(before)
        failures = spilled = count = 0.0
        for m in metrics:
            failures += m.get("phone_bridge_record_write_failures_total", 0)
            spilled += m.get("phone_bridge_records_spilled_total", 0)
            count += m.get("phone_bridge_record_write_seconds_count", 0)

        import psycopg

        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT call_sid, count(*) FROM calls GROUP BY call_sid").fetchall()
        stored = {sid: n for sid, n in rows}
        sids = {r.call_sid for r in reports}
        missing = sids - set(stored)
        doubled = [sid for sid, n in stored.items() if n != 1]
        completed = sum(r.completed for r in reports)

        best = 0.0
        for i, (t, n) in enumerate(written):
            earlier = [(t0, n0) for t0, n0 in written[:i] if t - t0 >= 1.0]
            if earlier:
                t0, n0 = earlier[-1]
                best = max(best, (n - n0) / (t - t0))
        span = drained - started
        back = outage[1]
        emptied = next((t for t, q in queue_seen if t > back and q == 0), drained)
        print(f"calls completed: {completed} of {len(reports)} (each caller heard its answer)")
        print(f"records in the database:  {len(set(stored) & sids)} of {len(sids)}; missing "
              f"{len(missing)}, stored more than once {len(doubled)}")  # fmt: skip
        print(f"writes (records + statuses): {count:.0f}; attempts that found the database "
              f"away {failures:.0f}; spilled to disk {spilled:.0f}")  # fmt: skip
        print(f"records written per second: {count / span:.1f} over the run ({span:.1f} s), "
              f"{best:.1f} in the best second (the queue draining after the outage)")  # fmt: skip
        print(f"write latency: p50 {quantile(0.5, buckets) * 1000:.1f} ms, "
              f"p99 {quantile(0.99, buckets) * 1000:.1f} ms over the run; before the outage "
              f"p50 {quantile(0.5, steady) * 1000:.1f} ms, "
              f"p99 {quantile(0.99, steady) * 1000:.1f} ms")  # fmt: skip
        print(f"queued at most: {queued_peak:.0f} writes (in memory, across the replicas); "
              f"all written {emptied - back:.1f} s after the database came back "
              f"(calls done {calls_done - started:.1f} s in)")  # fmt: skip
        if args.burst:
            await burst(url, args.replicas, args.burst)
        return 0 if not missing and not doubled and completed == len(reports) else 1
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        server.destroy()


async def burst(url: str, replicas: int, per_replica: int) -> None:
    """The store's own pace: `replicas` stores (the replicas' code, in this one process)
    each writing `per_replica` call records at once, each save timed to its commit."""
    from bridge.core.summary import TranscriptLine
    from bridge.records.model import TurnTiming
    from bridge.records.postgres import PostgresCallStore
    from bridge.records.write_behind import WriteBehindStore
    from tests.helpers.records import record

    lines = tuple(
        TranscriptLine("caller" if i % 2 else "assistant", "a sentence of a call " * 6, at=i * 2.0)
        for i in range(12)
    )
    turns = tuple(TurnTiming(i, i * 4000.0, i * 4000.0 + 700, i * 4000.0 + 760) for i in range(6))
    spill = Path(tempfile.mkdtemp(prefix="records-burst-"))
    stores = [
        WriteBehindStore(PostgresCallStore(url), spill, concurrency=5) for _ in range(replicas)
    ]
    await asyncio.gather(*(s.open() for s in stores))
    latencies: list[float] = []

    async def timed(store: WriteBehindStore, sid: str) -> None:
        began = time.monotonic()
        assert await store.save(record(sid, transcript=lines, turns=turns))
        latencies.append(time.monotonic() - began)

    began = time.monotonic()
    await asyncio.gather(
        *(
            timed(store, f"CAburst{r:02d}{i:05d}")
            for r, store in enumerate(stores)
            for i in range(per_replica)
        )
    )
    took = time.monotonic() - began
    await asyncio.gather(*(s.close() for s in stores))
    latencies.sort()
    total = len(latencies)
    print(
        f"burst: {total} records ({replicas} stores x {per_replica}, 12 transcript lines each) "
        f"in {took:.2f} s: {total / took:.0f} records/s; from save() to commit p50 "
        f"{latencies[total // 2] * 1000:.1f} ms, p99 {latencies[int(total * 0.99)] * 1000:.1f} ms "
        "(queued behind each other: all at once)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--outage-s", type=float, default=30.0)
    parser.add_argument("--outage-at-s", type=float, default=25.0)
    parser.add_argument(
        "--burst", type=int, default=200, help="then each store writes this many at once (0: no)"
    )
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
