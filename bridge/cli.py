"""The `phone-bridge` command: serve, call, configure-number, simulate, replay, agent."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from bridge import __version__
from bridge.arguments import OneLineErrorParser, listen_problem, port_number

if TYPE_CHECKING:
    from twilio.http import HttpClient

    from bridge.settings import Settings

# The exit status of a command that could not do what was asked.
FAILED = 2


def _print_problems(problems: list[str], doing: str) -> int:
    if len(problems) == 1:
        return _fail(f"cannot {doing}: {problems[0]}")
    print(f"phone-bridge: cannot {doing}, there are {len(problems)} problems:", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
    return FAILED


def _fail(message: str) -> int:
    print(f"phone-bridge: {message}", file=sys.stderr)
    return FAILED


def _settings(doing: str, serving: bool = False, **overrides: object) -> Settings | int:
    """The settings, or the exit status after printing what is wrong with them. `serving`:
    what only the server needs is checked too (its records file or database)."""
    from bridge.records.backends import records_problems
    from bridge.settings import ConfigError, load_settings

    checks = [records_problems] if serving else []
    try:
        return load_settings(checks=checks, **overrides)
    except ConfigError as exc:
        return _print_problems(exc.problems, doing)


def _serve(args: argparse.Namespace, twilio_http: HttpClient | None) -> int:
    from bridge.app import create_app
    from bridge.draining_server import DrainingServer, server_config
    from bridge.logs import configure_logging
    from bridge.settings import ConfigError

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = _settings("start", serving=True, **overrides)
    if isinstance(settings, int):
        return settings
    problem = listen_problem(settings.host, settings.port)
    if problem is not None:
        # Named as the operator gave it: the flag, or the variable.
        given_as_flag = getattr(args, problem.about) is not None
        name = f"--{problem.about}" if given_as_flag else problem.about.upper()
        return _fail(f"cannot start: {name}: {problem.text}")
    configure_logging(settings.log_level, settings.log_format)
    try:
        app = create_app(settings, twilio_http=twilio_http)
    except ConfigError as exc:  # a profile file or tools module that cannot work
        return _print_problems(exc.problems, "start")
    DrainingServer(server_config(app, settings), app, settings).run()
    return 0


def _call(args: argparse.Namespace, twilio_http: HttpClient | None) -> int:
    from bridge.outbound import OutboundCallError, place_outbound_call
    from bridge.profiles import load_profiles
    from bridge.settings import ConfigError
    from twiml.rest import TwilioRest

    settings = _settings("place the call")
    if isinstance(settings, int):
        return settings
    try:
        profiles = load_profiles(settings)
    except ConfigError as exc:
        return _print_problems(exc.problems, "place the call")
    token = settings.twilio_auth_token
    rest = TwilioRest(token.get_secret_value(), twilio_http) if token is not None else None
    placing = place_outbound_call(
        settings,
        rest,
        args.to,
        profile=args.profile,
        instructions=args.instructions,
        machine_detection=args.machine_detection,
        profiles=profiles,
    )
    call_sid = _run_twilio(placing, OutboundCallError, "place the call")
    if isinstance(call_sid, int):
        return call_sid
    print(call_sid)
    return 0


def _run_twilio(coroutine: Coroutine[Any, Any, Any], refusal: type[Exception], doing: str) -> Any:
    """Run a REST coroutine; Twilio's and our refusals become one line each and exit code 2."""
    from twilio.base.exceptions import TwilioRestException

    try:
        return asyncio.run(coroutine)
    except refusal as exc:
        problems = getattr(exc, "problems", None)
        return _print_problems(problems, doing) if problems else _fail(str(exc))
    except TwilioRestException as exc:
        return _fail(f"cannot {doing}: Twilio refused: {exc.msg} (error {exc.code})")
    except (TimeoutError, OSError) as exc:
        return _fail(f"could not reach Twilio's API: {exc}")


def _configure_number(args: argparse.Namespace, twilio_http: HttpClient | None) -> int:
    from bridge.profiles import E164
    from twiml.rest import NumberSetupError, TwilioRest
    from twiml.webhooks import CALL_STATUS_PATH, VOICE_PATH

    settings = _settings("configure the number")
    if isinstance(settings, int):
        return settings
    number = args.number.strip()
    # Everything in the way at once: the number as typed first (finding a typo needs no
    # credentials), then what the bridge is missing.
    problems = []
    if not E164.fullmatch(number):
        problems.append(f"{number!r} is not an E.164 number (+ and the country code: +15551234567)")
    for name, value in (
        ("TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
        ("TWILIO_AUTH_TOKEN", settings.twilio_auth_token),
        ("PUBLIC_URL", settings.public_url),
    ):
        if not value:
            problems.append(f"{name}: required to configure a number")
    if problems:
        return _print_problems(problems, "configure the number")
    assert settings.twilio_auth_token is not None and settings.twilio_account_sid
    public_url = settings.public_url or ""
    if not public_url.startswith("https://"):
        print(
            f"phone-bridge: warning: PUBLIC_URL {public_url} is not https; Twilio's media "
            "stream needs wss://, so calls will fail until it is",
            file=sys.stderr,
        )
    rest = TwilioRest(settings.twilio_auth_token.get_secret_value(), twilio_http)
    configuring = rest.configure_number(
        settings.twilio_account_sid,
        number,
        voice_url=public_url + VOICE_PATH,
        status_callback=public_url + CALL_STATUS_PATH,
    )
    change = _run_twilio(configuring, NumberSetupError, "configure the number")
    if isinstance(change, int):
        return change
    if change.changed:
        print(f"{change.phone_number} ({change.sid}) now points at this bridge:")
    else:
        print(f"{change.phone_number} ({change.sid}) already points at this bridge; no change:")
    for line in change.lines():
        print(f"  {line}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from bridge.settings import Settings

    defaults = Settings.model_fields
    parser = OneLineErrorParser(
        prog="phone-bridge", description="Phone an AI: Twilio Media Streams <-> OpenAI Realtime."
    )
    parser.add_argument("--version", action="version", version=f"phone-bridge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineErrorParser)

    serve = commands.add_parser(
        "serve",
        help="run the bridge (settings from the environment and .env)",
        description="Run the bridge. Every other setting comes from environment variables "
        "or a .env file in the working directory: see .env.example for each one with its "
        "default. With no Realtime backend configured, calls go to the built-in local echo "
        "agent.",
    )
    serve.add_argument(
        "--host",
        help="interface to listen on; overrides HOST "
        f"(default: HOST, else {defaults['host'].default})",
    )
    serve.add_argument(
        "--port",
        type=port_number,
        help=f"port to listen on; overrides PORT (default: PORT, else {defaults['port'].default})",
    )
    serve.set_defaults(run=_serve)

    call = commands.add_parser(
        "call", help="place an outbound call through Twilio that connects to this bridge"
    )
    call.add_argument("to", help="the number to call (E.164, e.g. +15551234567) or a sip: address")
    call.add_argument("--profile", help="the agent profile to use (default: the default one)")
    call.add_argument(
        "--instructions", help="this call's own instructions, instead of the profile's"
    )
    call.add_argument(
        "--no-machine-detection",
        dest="machine_detection",
        action="store_false",
        help="connect whoever or whatever answers (default: machines get MACHINE_MESSAGE)",
    )
    call.set_defaults(run=_call)

    configure = commands.add_parser(
        "configure-number",
        help="point a Twilio number's voice URL and status callback at PUBLIC_URL",
    )
    configure.add_argument("number", help="the Twilio number (E.164, e.g. +15551234567)")
    configure.set_defaults(run=_configure_number)

    # The simulator, the replay and the agent own their options (main hands them the rest).
    commands.add_parser(
        "simulate",
        help="act as Twilio: call a running bridge and print a per-turn timeline",
        add_help=False,
    )
    commands.add_parser(
        "replay",
        help="play a recorded call's caller into a running bridge and print what changed",
        add_help=False,
    )
    commands.add_parser(
        "agent", help="run the local echo agent alone (a Realtime server)", add_help=False
    )
    return parser


def main(argv: list[str] | None = None, twilio_http: HttpClient | None = None) -> int:
    """The command line. `twilio_http` replaces the twilio SDK's HTTP client (tests)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:
        from bridge.simulator import main as simulate_main

        return simulate_main(argv[1:])
    if argv[:1] == ["replay"]:
        from bridge.replay import main as replay_main

        return replay_main(argv[1:])
    if argv[:1] == ["agent"]:
        from bridge.local_agent.__main__ import main as agent_main

        return agent_main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.run(args, twilio_http)


if __name__ == "__main__":
    sys.exit(main())
