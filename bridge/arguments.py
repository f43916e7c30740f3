"""Checked command-line values, shared by every `phone-bridge` subcommand.

Each is an argparse `type`: a bad value becomes argparse's own one-line error naming the
flag (`argument --speed: must be 0 or more, not -1`) and exit status 2, never a traceback
from deep inside the command.
"""

from __future__ import annotations

import argparse
import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NoReturn

MAX_PORT = 65535


def _number(text: str, kind: Callable[[str], float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):  # nan, inf
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def positive_int(text: str) -> int:
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def port_number(text: str) -> int:
    value = int(_number(text, int))
    if not 1 <= value <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to {MAX_PORT}, not {value}")
    return value


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the flag (the full usage is a
    screenful for some commands; `--help` shows it), with exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@dataclass(frozen=True, slots=True)
class ListenProblem:
    """Why a server cannot listen: `about` says which setting to change."""

    about: Literal["host", "port"]
    text: str


def listen_problem(host: str, port: int) -> ListenProblem | None:
    """Why a server could not listen on `host`:`port`, or None if it can.

    Tried before a server starts, so that a host that is no address of this machine or a
    port already taken is one line naming the setting, not an error after the server said
    it had started. (Another process could still take the port in between; the server's
    own bind reports that rare case.)
    """
    try:
        found = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else "not a host name"
        return ListenProblem(
            "host", f"{host} is neither an address of this machine nor a host name ({reason})"
        )
    family, kind, protocol, _, address = found[0]  # what the server binds, too
    with socket.socket(family, kind, protocol) as probe:
        # As the server sets it: a port left in TIME_WAIT by an earlier run is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except PermissionError:
            return ListenProblem(
                "port", f"port {port} needs privileges this user does not have (below 1024)"
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return ListenProblem(
                    "port", f"port {port} on {host} is already in use by another program"
                )
            if exc.errno == errno.EADDRNOTAVAIL:
                return ListenProblem("host", f"{host} is not an address of this machine")
            return ListenProblem("port", f"cannot listen on {host}:{port} ({exc.strerror})")
    return None
