"""What a simulated call does, and the one error type the simulator raises."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# The keys of a DTMF keypad, as Twilio reports them in `dtmf.digit`.
KEYPAD_DIGITS = "0123456789*#ABCD"
MIN_UTTERANCE_MS = 20  # one frame


class SimulatorError(Exception):
    """A call that could not be set up or carried out; the message is one line for the CLI."""


@dataclass
class SimulatorOptions:
    webhook_url: str
    auth_token: str | None = None
    from_number: str = "+15550001111"
    to_number: str = "+15550002222"
    # Caller audio: a WAV split into utterances at pauses >= 400 ms (turn i speaks utterance
    # i, cycling), or, without a WAV, synthetic speech of utterance_ms per turn.
    wav_path: str | None = None
    utterance_ms: int = 1200
    turns: int = 2
    pause_ms: int = 500  # silence before the first utterance
    answer_idle_ms: int = 800  # an answer is over after this long with nothing playing
    barge_in_after_ms: int | None = None  # speak over an answer once this much was heard
    # Say a short "mm-hm" (backchannel_ms of speech) over each answer once this much of it
    # was heard: not a turn, so the answer should go on.
    backchannel_after_ms: int | None = None
    backchannel_ms: int = 200
    turn_timeout_s: float = 15.0  # give up waiting for an answer after this long
    max_duration_s: float = 120.0
    out_path: str | None = None  # WAV of everything the caller heard
    method: str = "POST"  # or GET, as a Twilio number's Voice URL method can be
    # Turn number (1-based) -> keys the caller presses on that turn instead of speaking,
    # e.g. {2: "1234#"}: one Twilio `dtmf` message per key, KEY_INTERVAL_MS apart.
    keypad: dict[int, str] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise SimulatorError, naming the command-line flag, for options that cannot work:
        before the call is placed, not after."""
        problem = webhook_url_problem(self.webhook_url)
        if problem is not None:
            raise SimulatorError(problem)
        if self.method.upper() not in ("POST", "GET"):
            raise SimulatorError(f"the webhook method must be POST or GET, not {self.method!r}")
        if self.turns < 1:
            raise SimulatorError("--turns must be at least 1")
        if self.utterance_ms < MIN_UTTERANCE_MS:
            raise SimulatorError(f"--utterance-ms must be at least {MIN_UTTERANCE_MS}")
        if self.pause_ms < 0:
            raise SimulatorError("--pause-ms must not be negative")
        if self.answer_idle_ms < 0:
            raise SimulatorError("--answer-idle-ms must not be negative")
        if self.barge_in_after_ms is not None and self.barge_in_after_ms < 0:
            raise SimulatorError("--barge-in-after must not be negative")
        if self.backchannel_after_ms is not None and self.backchannel_after_ms < 0:
            raise SimulatorError("--backchannel-after must not be negative")
        if self.backchannel_ms < MIN_UTTERANCE_MS:
            raise SimulatorError(f"--backchannel-ms must be at least {MIN_UTTERANCE_MS}")
        if self.turn_timeout_s <= 0:
            raise SimulatorError("--turn-timeout must be more than 0")
        if self.max_duration_s <= 0:
            raise SimulatorError("--timeout must be more than 0")
        for turn, digits in self.keypad.items():
            if isinstance(turn, bool) or not isinstance(turn, int) or not 1 <= turn <= self.turns:
                raise SimulatorError(
                    f"--keypad: turn {turn!r} is not one of the call's turns (1 to {self.turns})"
                )
            if (
                not isinstance(digits, str)
                or not digits
                or any(d not in KEYPAD_DIGITS for d in digits)
            ):
                raise SimulatorError(
                    f"--keypad: the keys for turn {turn} must be 0-9, *, # or A-D, not {digits!r}"
                )
        if self.out_path is not None:
            problem = new_file_problem(self.out_path)
            if problem is not None:
                raise SimulatorError(f"--out {self.out_path}: {problem}")


def webhook_url_problem(url: str) -> str | None:
    """What is wrong with a webhook URL as given, with what to write instead; None if it
    is an http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.hostname:
        return None
    if "://" not in url:
        # "127.0.0.1:8080/voice" or "localhost:8080/voice": the scheme was left out.
        return (
            f"WEBHOOK_URL {url!r} has no http:// or https://: write http://{url} (or https://{url})"
        )
    return (
        f"WEBHOOK_URL {url!r} is not an http:// or https:// URL (e.g. http://127.0.0.1:8080/voice)"
    )


def new_file_problem(path: str) -> str | None:
    """Why a file could not be written at `path`, or None; nothing is created to find out."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        return f"the directory {directory} does not exist"
    if os.path.isdir(path):
        return "that is a directory"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return "this user cannot write that file"
    if not os.path.exists(path) and not os.access(directory, os.W_OK | os.X_OK):
        return f"this user cannot create files in {directory}"
    return None
