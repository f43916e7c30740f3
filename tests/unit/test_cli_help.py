"""`--help` of the commands a newcomer runs first: every flag explained, with its default."""

from __future__ import annotations

import argparse

import pytest

from bridge.cli import build_parser as build_cli_parser
from bridge.local_agent.__main__ import build_parser as build_agent_parser


def subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[name]


PARSERS = {
    "agent": build_agent_parser,
    "serve": lambda: subcommand(build_cli_parser(), "serve"),
}


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_every_flag_is_described_with_its_default(command: str) -> None:
    parser = PARSERS[command]()
    flags = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert flags
    for action in flags:
        described = parser._get_formatter()._expand_help(action) if action.help else ""
        assert len(described) > 15, (command, action.option_strings)
        assert "(default: " in described, (command, action.option_strings, described)


def test_help_shows_the_defaults_themselves() -> None:
    agent_help = " ".join(build_agent_parser().format_help().split())
    assert "(default: 8765)" in agent_help and "(default: 4.0)" in agent_help
    serve_help = " ".join(subcommand(build_cli_parser(), "serve").format_help().split())
    assert "else 0.0.0.0" in serve_help and "else 8080" in serve_help
