"""What Twilio's side may send: a message rate, and caller audio that is valid and no
faster than real time. Checked per message, so each check costs a fraction of a
microsecond and decodes nothing."""

from __future__ import annotations

import re

from bridge.audio import MULAW_RATE
from bridge.core.call_config import StreamLimits

# The base64 alphabet and padding, checked without decoding anything (~0.5 µs a frame).
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class Budget:
    """A token bucket: `rate` per second, up to `capacity` at once."""

    __slots__ = ("at", "capacity", "level", "rate")

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate, self.capacity, self.level = rate, capacity, capacity
        self.at: float | None = None  # when it was last drawn on

    def take(self, amount: float, now: float) -> bool:
        if self.at is not None:
            self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now
        if self.level < amount:
            return False
        self.level -= amount
        return True


class InputGuard:
    """The limits of one Media Streams socket, from its first message to its last."""

    __slots__ = ("_audio", "_messages")

    def __init__(self, limits: StreamLimits) -> None:
        self._messages = Budget(limits.max_messages_per_s, 2 * limits.max_messages_per_s)
        # Counted in base64 characters (4 per 3 bytes), so no frame is decoded to count it.
        chars_per_s = MULAW_RATE * 4 / 3
        self._audio = Budget(
            chars_per_s * limits.max_audio_speed, chars_per_s * limits.audio_burst_s
        )

    def message_allowed(self, now: float) -> bool:
        """One more message from Twilio's side; False once they come as a flood."""
        return self._messages.take(1, now)

    @staticmethod
    def valid_audio(payload: str) -> bool:
        """Base64 (so it also needs no JSON escaping when spliced into a message)."""
        return bool(payload) and not len(payload) % 4 and _BASE64.fullmatch(payload) is not None

    def audio_allowed(self, payload: str, now: float) -> bool:
        """Within real time (with slack for bursts); the excess is dropped."""
        return self._audio.take(len(payload), now)

    @property
    def newest_audio_at(self) -> float | None:
        """When the newest caller frame that was let through arrived."""
        return self._audio.at
