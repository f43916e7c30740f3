"""``python -m bridge.local_agent --host 127.0.0.1 --port 8765``: run the echo agent alone."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from .options import AgentOptions
from .server import run_agent


async def _serve(host: str, port: int, options: AgentOptions) -> None:
    # SIGTERM (docker stop, systemd) closes the sessions cleanly, like Ctrl-C does.
    task = asyncio.current_task()
    assert task is not None
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await run_agent(host, port, options)


def main(argv: list[str] | None = None) -> None:
    defaults = AgentOptions()
    parser = argparse.ArgumentParser(
        prog="phone-bridge agent",
        description="Local OpenAI-Realtime-compatible agent that echoes the caller's speech.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--chunk-ms", type=int, default=defaults.chunk_ms)
    parser.add_argument(
        "--speed", type=float, default=defaults.speed, help="x real time; 0 = no pacing"
    )
    parser.add_argument("--items-per-response", type=int, default=defaults.items_per_response)
    parser.add_argument("--stall-after-ms", type=int, default=None)
    parser.add_argument("--stall-ms", type=int, default=0)
    parser.add_argument(
        "--drop-after-ms",
        type=int,
        default=None,
        help="abort one session's connection after this much response audio",
    )
    parser.add_argument(
        "--max-session-s",
        type=float,
        default=None,
        help="expire sessions at this age, like the service's session limit",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    options = AgentOptions(
        chunk_ms=args.chunk_ms,
        speed=args.speed,
        items_per_response=args.items_per_response,
        stall_after_ms=args.stall_after_ms,
        stall_ms=args.stall_ms,
        drop_after_ms=args.drop_after_ms,
        max_session_s=args.max_session_s,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port, options))


if __name__ == "__main__":
    main()
