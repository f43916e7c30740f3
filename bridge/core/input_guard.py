"""What Twilio's side may send: a message rate, and caller audio that is valid and no
faster than real time. Checked per message, so each check costs a fraction of a
microsecond and decodes nothing."""

from __future__ import annotations

from bridge.audio import MULAW_RATE
from bridge.core.call_config import StreamLimits

# Audio is checked against the alphabet and padding, without decoding anything.
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def valid_audio(payload: str) -> bool:
    """Standard base64, padded to 4s (so it needs no JSON escaping when spliced in)."""
    if not payload or len(payload) % 4 or not payload.isascii():
        return False
    # What is left once the alphabet is deleted (one C pass; a regex match costs about
    # twice as much, 50 times a second each way) may only be the padding at the end.
    rest = payload.encode().translate(None, _BASE64_ALPHABET)
    return (
        not rest
        or (rest == b"==" and payload[-2:] == "==")
        or (rest == b"=" and payload[-1] == "=")
    )


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

    __slots__ = ("audio", "messages")

    def __init__(self, limits: StreamLimits) -> None:
        # Messages from Twilio's side: one each; short of one, they come as a flood.
        self.messages = Budget(limits.max_messages_per_s, 2 * limits.max_messages_per_s)
        # Caller audio, counted in base64 characters (4 per 3 bytes), so no frame is
        # decoded to count it: short of a frame's, it comes faster than real time.
        chars_per_s = MULAW_RATE * 4 / 3
        self.audio = Budget(
            chars_per_s * limits.max_audio_speed, chars_per_s * limits.audio_burst_s
        )

    @property
    def newest_audio_at(self) -> float | None:
        """When the newest caller frame that was let through arrived."""
        return self.audio.at
