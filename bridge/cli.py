"""The `phone-bridge` command: serve, simulate, agent."""

from __future__ import annotations

import argparse
import sys

from bridge import __version__


def _serve(args: argparse.Namespace) -> int:
    from bridge.app import create_app
    from bridge.config import ConfigError, load_settings
    from bridge.logs import configure_logging
    from bridge.server import DrainingServer, server_config

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        print("phone-bridge: cannot start, the configuration has problems:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    app = create_app(settings)
    DrainingServer(server_config(app, settings), app, settings).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="phone-bridge", description="Phone an AI: Twilio Media Streams <-> OpenAI Realtime."
    )
    parser.add_argument("--version", action="version", version=f"phone-bridge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the bridge (settings from env and .env)")
    serve.add_argument("--host", help="overrides HOST")
    serve.add_argument("--port", type=int, help="overrides PORT")
    serve.set_defaults(run=_serve)

    commands.add_parser(
        "simulate",
        help="act as Twilio: call a running bridge and print a per-turn timeline",
        add_help=False,
    )

    commands.add_parser(
        "agent", help="run the local echo agent alone (a Realtime server)", add_help=False
    )

    argv = sys.argv[1:] if argv is None else argv
    # The simulator and the agent own their options; hand them the rest of the line.
    if argv[:1] == ["simulate"]:
        from bridge.simulator import main as simulate_main

        return simulate_main(argv[1:])
    if argv[:1] == ["agent"]:
        from bridge.local_agent.__main__ import main as agent_main

        agent_main(argv[1:])
        return 0
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
