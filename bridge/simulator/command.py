"""`phone-bridge simulate`: call a bridge as Twilio would, print what the caller heard."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from bridge.arguments import OneLineErrorParser
from bridge.simulator.caller import simulate_call
from bridge.simulator.report import format_report
from bridge.simulator.simulator_options import SimulatorError, SimulatorOptions


def keypad_entry(text: str) -> tuple[int, str]:
    """`TURN:DIGITS` (e.g. `2:1234#`) for --keypad; the digits are checked by validate()."""
    turn, sep, digits = text.partition(":")
    if not sep or not turn.strip().isdigit() or not digits:
        raise argparse.ArgumentTypeError(f"expected TURN:DIGITS (e.g. 2:1234#), got {text!r}")
    return int(turn), digits


def add_bridge_arguments(parser: argparse.ArgumentParser, metavar: str) -> None:
    """The bridge to call, and how to sign for it (simulate and replay alike)."""
    parser.add_argument(
        "webhook_url",
        metavar=metavar,
        help="the bridge's voice webhook, e.g. http://127.0.0.1:8080/voice",
    )
    parser.add_argument(
        "--auth-token",
        default=os.environ.get("TWILIO_AUTH_TOKEN"),
        help="sign requests with X-Twilio-Signature (default: $TWILIO_AUTH_TOKEN)",
    )


def build_parser(prog: str = "phone-bridge simulate") -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog=prog,
        description=(
            "Act as Twilio against a running bridge: POST the voice webhook, open the "
            "<Connect><Stream> it answers, speak, listen like a phone and report each turn."
        ),
    )
    add_bridge_arguments(parser, "WEBHOOK_URL")
    parser.add_argument(
        "--wav",
        help="caller audio: split into utterances at pauses of 400 ms or more, one per turn "
        "(cycling); default: synthetic speech",
    )
    parser.add_argument("--turns", type=int, default=2, help="caller turns (default 2)")
    parser.add_argument(
        "--utterance-ms", type=int, default=1200, help="synthetic utterance length (1200)"
    )
    parser.add_argument("--pause-ms", type=int, default=500, help="silence before turn 1 (500)")
    parser.add_argument(
        "--answer-idle-ms",
        type=int,
        default=800,
        help="an answer is over after this long with nothing playing (800)",
    )
    parser.add_argument(
        "--barge-in-after",
        type=int,
        metavar="MS",
        help="speak over each answer (but the last) after hearing this many ms of it",
    )
    parser.add_argument(
        "--backchannel-after",
        type=int,
        metavar="MS",
        help='say a short "mm-hm" over each answer after hearing this many ms of it (not '
        "a turn: the answer should pause and go on)",
    )
    parser.add_argument(
        "--backchannel-ms",
        type=int,
        default=200,
        metavar="MS",
        help="how long the mm-hm lasts (200)",
    )
    parser.add_argument(
        "--keypad",
        type=keypad_entry,
        action="append",
        default=[],
        metavar="TURN:DIGITS",
        help="on turn TURN press these keys instead of speaking, 250 ms apart "
        "(0-9 * # A-D; repeatable), e.g. --keypad 2:1234#",
    )
    parser.add_argument(
        "--out",
        metavar="FILE",
        help="write what the caller heard as a WAV (checked before dialling)",
    )
    parser.add_argument("--from", dest="from_number", default="+15550001111", help="caller")
    parser.add_argument("--to", dest="to_number", default="+15550002222", help="called number")
    parser.add_argument("--get", action="store_true", help="call the webhook with GET")
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="give up on the whole call after this many seconds (120)",
    )
    parser.add_argument(
        "--turn-timeout",
        type=float,
        default=15.0,
        metavar="S",
        help="stop waiting for an answer this long after the caller spoke (15)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def options_from_args(args: argparse.Namespace) -> SimulatorOptions:
    keypad: dict[int, str] = {}
    for turn, digits in args.keypad:
        if turn in keypad:
            raise SimulatorError(f"--keypad given twice for turn {turn}")
        keypad[turn] = digits
    return SimulatorOptions(
        webhook_url=args.webhook_url,
        auth_token=args.auth_token or None,
        from_number=args.from_number,
        to_number=args.to_number,
        wav_path=args.wav,
        utterance_ms=args.utterance_ms,
        turns=args.turns,
        pause_ms=args.pause_ms,
        answer_idle_ms=args.answer_idle_ms,
        barge_in_after_ms=args.barge_in_after,
        backchannel_after_ms=args.backchannel_after,
        backchannel_ms=args.backchannel_ms,
        turn_timeout_s=args.turn_timeout,
        max_duration_s=args.timeout,
        out_path=args.out,
        method="GET" if args.get else "POST",
        keypad=keypad,
    )


def main(argv: list[str] | None = None) -> int:
    """Run one simulated call; 0 when it completed, 2 for options that cannot work (one line
    naming the flag, before dialling), 1 with a one-line error otherwise."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = options_from_args(args)
        options.validate()
    except SimulatorError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    if args.verbose:
        # Only the simulator's own progress, not every library's connection chatter.
        logging.getLogger("bridge.simulator").setLevel(logging.INFO)
    try:
        report = asyncio.run(simulate_call(options))
    except SimulatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 1
    _print_to_reader(format_report(report))
    if report.wav_error is not None:
        print(
            f"error: could not write --out {options.out_path}: {report.wav_error}", file=sys.stderr
        )
        return 1
    if report.completed:
        return 0
    if report.closed_by_bridge:
        # 1008 is what a bridge answers to a bad X-Twilio-Signature on the upgrade.
        hints = {
            1000: " - a normal close: the bridge hung up or transferred the call",
            1008: " - policy violation: wrong --auth-token?",
        }
        hint = hints.get(report.close_code or 0, "")
        print(
            f"error: the bridge closed the stream early (code {report.close_code}){hint}",
            file=sys.stderr,
        )
    else:
        print("error: the call hit --timeout before the script finished", file=sys.stderr)
    return 1


def _print_to_reader(text: str) -> None:
    """Print the report; a reader that stopped reading (`| head`, a pager quit early) is
    not an error worth a traceback."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python flushes stdout again at exit and would complain there: point it at
        # /dev/null, where nothing can break.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
