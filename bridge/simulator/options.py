"""What a simulated call does, and the one error type the simulator raises."""

from __future__ import annotations

from dataclasses import dataclass, field

# The keys of a DTMF keypad, as Twilio reports them in `dtmf.digit`.
KEYPAD_DIGITS = "0123456789*#ABCD"


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
    turn_timeout_s: float = 15.0  # give up waiting for an answer after this long
    max_duration_s: float = 120.0
    out_path: str | None = None  # WAV of everything the caller heard
    method: str = "POST"  # or GET, as a Twilio number's Voice URL method can be
    # Turn number (1-based) -> keys the caller presses on that turn instead of speaking,
    # e.g. {2: "1234#"}: one Twilio `dtmf` message per key, KEY_INTERVAL_MS apart.
    keypad: dict[int, str] = field(default_factory=dict)

    def validate(self) -> None:
        if self.method.upper() not in ("POST", "GET"):
            raise SimulatorError(f"method must be POST or GET, not {self.method!r}")
        if self.turns < 1:
            raise SimulatorError("turns must be at least 1")
        if self.utterance_ms < 20:
            raise SimulatorError("utterance_ms must be at least 20")
        if min(self.pause_ms, self.answer_idle_ms) < 0:
            raise SimulatorError("pause_ms and answer_idle_ms must not be negative")
        if self.barge_in_after_ms is not None and self.barge_in_after_ms < 0:
            raise SimulatorError("barge_in_after_ms must not be negative")
        if self.turn_timeout_s <= 0 or self.max_duration_s <= 0:
            raise SimulatorError("timeouts must be positive")
        for turn, digits in self.keypad.items():
            if isinstance(turn, bool) or not isinstance(turn, int) or not 1 <= turn <= self.turns:
                raise SimulatorError(
                    f"keypad turn {turn!r} is not one of the call's turns (1 to {self.turns})"
                )
            if (
                not isinstance(digits, str)
                or not digits
                or any(d not in KEYPAD_DIGITS for d in digits)
            ):
                raise SimulatorError(
                    f"keypad keys for turn {turn} must be 0-9, *, # or A-D, not {digits!r}"
                )
