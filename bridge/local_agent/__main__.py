"""``python -m bridge.local_agent --host 127.0.0.1 --port 8765``: run the echo agent alone."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from bridge.arguments import (
    OneLineErrorParser,
    listen_problem,
    non_negative_float,
    non_negative_int,
    port_number,
    positive_float,
    positive_int,
)

from .agent_options import AgentOptions, FunctionCallPlan
from .server import REALTIME_PATH, run_agent


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
    arguments: dict[str, Any] = {}
    if len(parts) == 3 and parts[2].strip():
        try:
            parsed = json.loads(parts[2])
        except json.JSONDecodeError as exc:
            raise ValueError(f"arguments of {spec!r} are not JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise ValueError(f"arguments of {spec!r} must be a JSON object")
        arguments = parsed
    index = int(parts[0])
    if index < 1:
        raise ValueError(f"response numbers start at 1, got {index}")
    return index, FunctionCallPlan(parts[1], arguments, speak_first=speak_first)


LOG_LEVELS = ("debug", "info", "warning", "error")


def build_parser() -> argparse.ArgumentParser:
    defaults = AgentOptions()
    parser = OneLineErrorParser(
        prog="phone-bridge agent",
        description="A local OpenAI-Realtime-compatible server (both dialects) that answers "
        "each caller turn with the caller's own speech: try the bridge, or any Realtime "
        "client, without an OpenAI account. Its clients connect to "
        f"ws://HOST:PORT{REALTIME_PATH}.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=port_number, default=8765, help="port to listen on (default: %(default)s)"
    )
    # (flag, type, default, metavar, help): the tunables, each checked by its type.
    tunables: list[tuple[str, Callable[[str], object], object, str, str]] = [
        ("--chunk-ms", positive_int, defaults.chunk_ms, "MS", "audio per response delta, in ms"),
        (
            "--speed",
            non_negative_float,
            defaults.speed,
            "X",
            "send answers X times faster than real time; 0: as fast as possible",
        ),
        (
            "--items-per-response",
            positive_int,
            defaults.items_per_response,
            "N",
            "split each answer over N assistant items",
        ),
        (
            "--stall-after-ms",
            non_negative_int,
            None,
            "MS",
            "a model stall: pause each answer once, after this much of its audio was sent",
        ),
        ("--stall-ms", non_negative_int, defaults.stall_ms, "MS", "how long that pause lasts"),
        (
            "--drop-after-ms",
            non_negative_int,
            None,
            "MS",
            "a lost connection: abort the first session to send this much answer audio, "
            "without a close frame",
        ),
        (
            "--max-session-s",
            positive_float,
            None,
            "S",
            "end sessions at this age with session_expired, like the service's session limit",
        ),
    ]
    for flag, kind, default, metavar, text in tunables:
        shown = "%(default)s" if default is not None else "off"
        parser.add_argument(
            flag, type=kind, default=default, metavar=metavar, help=f"{text} (default: {shown})"
        )
    parser.add_argument(
        "--call-function",
        action="append",
        default=[],
        metavar="N:NAME[:JSON]",
        help="response N of each session speaks, then calls function NAME (if the session "
        "declared it) with these JSON arguments; repeatable (default: none)",
    )
    parser.add_argument(
        "--call-function-only",
        action="append",
        default=[],
        metavar="N:NAME[:JSON]",
        help="like --call-function, but the call is the whole response, nothing spoken "
        "(default: none)",
    )
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        default="info",
        help="how much to log: %(choices)s (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the agent until interrupted; 0 then, 2 (with one line saying why) if it cannot
    start."""
    parser = build_parser()
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
    problem = listen_problem(args.host, args.port)
    if problem is not None:
        return _cannot_start(f"--{problem.about}: {problem.text}")
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
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(args.host, args.port, options))
    except OSError as exc:  # the port was taken between the check and the bind
        return _cannot_start(f"--host/--port: cannot listen on {args.host}:{args.port} ({exc})")
    return 0


def _cannot_start(message: str) -> int:
    print(f"phone-bridge agent: cannot start: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
