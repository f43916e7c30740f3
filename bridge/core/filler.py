"""The sound a caller hears while a slow tool runs, in pieces small enough to stop at once.

Only a little is ever queued at Twilio (`AHEAD_S`): stopping it is a clear, and what was
queued is all that is lost, so the model's first word is never late behind it. The sound
loops where it left off.
"""

from __future__ import annotations

from bridge.audio import MULAW_RATE

PIECE_S = 0.2  # each piece, with its mark: the next goes when one comes back
AHEAD_S = 0.4  # queued at most


class ToolFiller:
    __slots__ = ("_position", "_sound", "after_s", "playing")

    def __init__(self, sound: bytes, after_s: float) -> None:
        """`sound`: 8 kHz mu-law, looped; empty (or `after_s` 0): no filler."""
        self._sound = sound
        self.after_s = after_s
        self._position = 0
        self.playing = False

    @property
    def enabled(self) -> bool:
        return bool(self._sound) and self.after_s > 0

    def pieces(self, queued_s: float) -> list[bytes]:
        """The next pieces to queue, `queued_s` being queued already; it is playing."""
        self.playing = True
        size = int(PIECE_S * MULAW_RATE)
        out = []
        while queued_s < AHEAD_S:
            piece = self._sound[self._position : self._position + size]
            if len(piece) < size:  # around the loop's end
                piece += self._sound[: size - len(piece)]
            self._position = (self._position + size) % len(self._sound)
            out.append(piece)
            queued_s += PIECE_S
        return out

    def stopped(self) -> None:
        self.playing = False
