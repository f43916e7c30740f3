"""``python -m bridge.local_agent --host 127.0.0.1 --port 8765``: run the echo agent alone."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal

from .options import AgentOptions, FunctionCallPlan
from .server import run_agent


async def _serve(host: str, port: int, options: AgentOptions) -> None:
    # SIGTERM (docker stop, systemd) closes the sessions cleanly, like Ctrl-C does.
    task = asyncio.current_task()
    assert task is not None
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await run_agent(host, port, options)


def parse_function_call(spec: str, speak_first: bool = True) -> tuple[int, FunctionCallPlan]:
    """``N:NAME`` or ``N:NAME:{json arguments}`` -> (response number, plan).

    Raises ValueError with a one-line reason.
    """
    # maxsplit 2: the JSON arguments may hold colons of their own.
    parts = spec.split(":", 2)
    if len(parts) < 2 or not parts[0].strip().isdigit() or not parts[1]:
        raise ValueError(f"expected N:NAME or N:NAME:JSON, got {spec!r}")
    arguments: object = {}
    if len(parts) == 3 and parts[2].strip():
        try:
            arguments = json.loads(parts[2])
        except json.JSONDecodeError as exc:
            raise ValueError(f"arguments of {spec!r} are not JSON: {exc}") from None
        if not isinstance(arguments, dict):
            raise ValueError(f"arguments of {spec!r} must be a JSON object")
    index = int(parts[0])
    if index < 1:
        raise ValueError(f"response numbers start at 1, got {index}")
    return index, FunctionCallPlan(parts[1], arguments, speak_first=speak_first)


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
    parser.add_argument(
        "--call-function",
        action="append",
        default=[],
        metavar="N:NAME[:JSON]",
        help="response N of each session speaks, then calls function NAME (if the session "
        "declared it) with these JSON arguments; repeatable",
    )
    parser.add_argument(
        "--call-function-only",
        action="append",
        default=[],
        metavar="N:NAME[:JSON]",
        help="like --call-function, but the call is the whole response (nothing spoken)",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    function_calls: dict[int, FunctionCallPlan] = {}
    specs = [(s, True) for s in args.call_function] + [(s, False) for s in args.call_function_only]
    for spec, speak_first in specs:
        try:
            index, plan = parse_function_call(spec, speak_first)
        except ValueError as exc:
            parser.error(str(exc))
        if index in function_calls:
            parser.error(f"response {index} already has a function call")
        function_calls[index] = plan
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
        function_calls=function_calls,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port, options))


if __name__ == "__main__":
    main()
