"""The caller's keypad: keys are collected until # or a pause, then given to the model as
one message. Keys may be a PIN or a card number: they are never logged, and the call's
transcript keeps only how many were pressed."""

from __future__ import annotations

import re

KEYS = "0123456789*#ABCD"
MAX_KEYS = 64  # one entry; more is not a person typing
KEYPAD_MESSAGE = "(The caller pressed these keys on their phone keypad: {keys})"
KEYPAD_ITEM_PREFIX = "keypad-"  # the transcript's name for a keypad entry
_KEY = re.compile(r"[0-9*#A-D]")


def keys_in(message: str) -> str:
    """The keys a keypad message holds (what follows its colon)."""
    return "".join(_KEY.findall(message.rpartition(":")[2]))


def is_keypad_item(item_id: str) -> bool:
    return item_id.startswith(KEYPAD_ITEM_PREFIX)


class Keypad:
    __slots__ = ("_entries", "first_key_at", "key_at", "keys", "pause_s")

    def __init__(self, pause_s: float) -> None:
        self.pause_s = pause_s
        self.keys = ""  # pressed, not yet given to the model
        self.first_key_at = 0.0  # the entry's first key
        self.key_at = 0.0  # the last key
        self._entries = 0

    def press(self, digit: str, now: float) -> bool | None:
        """A key: None if it is not one; else True if it ends the entry (# or too many)."""
        if len(digit) != 1 or digit not in KEYS:
            return None
        if not self.keys:
            self.first_key_at = now
        self.keys += digit
        self.key_at = now
        return digit == "#" or len(self.keys) >= MAX_KEYS

    def paused(self, now: float) -> bool:
        """Keys wait, and none came for the pause: the entry is complete."""
        return bool(self.keys) and now - self.key_at >= self.pause_s

    def take(self) -> tuple[str, str]:
        """The entry, as its transcript item's id and the message for the model."""
        keys, self.keys = self.keys, ""
        self._entries += 1
        return f"{KEYPAD_ITEM_PREFIX}{self._entries}", KEYPAD_MESSAGE.format(keys=keys)
