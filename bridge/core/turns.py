"""Each caller turn and its answer, timed as the caller lives it (monotonic seconds).

Every latency counts from the end of the caller's speech as the bridge knows it: where
the session's voice detection put it in the session's input audio (speech_stopped's
`audio_end_ms`, less the silence it waited for to be sure), placed on the call's clock;
for keys, the last key pressed. The simulated caller's "stopped speaking" is that same
instant, so both tell the same figures for one call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(slots=True)
class TurnClock:
    index: int
    caller_stopped_at: float  # the end of the caller's speech, or their last key
    first_audio_sent_at: float | None = None  # first assistant audio sent to Twilio after it
    # When that audio began to play to the caller: its mark came back once it had played,
    # and it plays in real time, so it began its own length before.
    first_audio_heard_at: float | None = None
    barged_in: bool = False  # the caller talked over this turn's answer
    truncated_at_ms: int | None = None
    first_mark: str | None = field(default=None, repr=False)
    # The response already under way when the turn ended: its audio is not this answer.
    earlier_response: str | None = field(default=None, repr=False)


class TurnLog:
    __slots__ = ("_audio_origin", "turns")

    def __init__(self) -> None:
        self.turns: list[TurnClock] = []
        # Where the current session's input audio begins, on the call's clock.
        self._audio_origin: float | None = None

    @property
    def current(self) -> TurnClock | None:
        return self.turns[-1] if self.turns else None

    def begin(self, caller_stopped_at: float, active_response: str | None) -> None:
        """The caller finished a turn: its answer's latency is timed from its end."""
        turn = TurnClock(len(self.turns) + 1, caller_stopped_at)
        turn.earlier_response = active_response
        self.turns.append(turn)

    def anchor_session_audio(self, newest_frame_at: float, kept_s: float) -> None:
        """Place a new session's input audio on the call's clock, once, as it opens: its
        buffer starts with the `kept_s` of caller audio kept while it connected, the newest
        of which arrived at `newest_frame_at` (a frame leaves the phone once its audio is
        captured). Twilio sends in real time, so from there the buffer's milliseconds run
        with the clock: nothing needs counting per frame."""
        self._audio_origin = newest_frame_at - kept_s

    def speech_ended_at(self, audio_end_ms: float | None, silence_ms: int, now: float) -> float:
        """The end of the caller's speech on the call's clock, from speech_stopped's
        `audio_end_ms` (ms into the session's input audio, including the `silence_ms` the
        detector waited for before deciding); without it, `now`, when it was heard of."""
        if audio_end_ms is None:
            return now
        return self._placed(audio_end_ms - silence_ms, now)

    def speech_began_at(self, audio_start_ms: float | None, now: float) -> float:
        """The start of the caller's speech on the call's clock, from speech_started's
        `audio_start_ms` (its prefix padding included: where the audio the model heard as
        their turn begins); without it, `now`, when it was heard of."""
        return now if audio_start_ms is None else self._placed(audio_start_ms, now)

    def _placed(self, audio_ms: float, now: float) -> float:
        """`audio_ms` into the session's input audio, on the call's clock."""
        origin = self._audio_origin
        if origin is None or not math.isfinite(audio_ms):
            return now
        # Never later than the news of it, nor before the session's audio began.
        return min(max(origin + audio_ms / 1000, origin), now)

    def answer_sent(self, response_id: str, mark: str, now: float) -> float | None:
        """Assistant audio went to Twilio: if it is the current turn's first, its latency."""
        turn = self.current
        if (
            turn is None
            or turn.first_audio_sent_at is not None
            or response_id == turn.earlier_response
        ):
            return None
        turn.first_audio_sent_at, turn.first_mark = now, mark
        return now - turn.caller_stopped_at

    @property
    def awaited_mark(self) -> str | None:
        """The mark whose echo will say the current answer began to be heard."""
        turn = self.current
        return turn.first_mark if turn is not None and turn.first_audio_heard_at is None else None

    def answer_heard(self, began: float) -> tuple[float, float] | None:
        """The awaited mark came back: the answer began to play at `began` (see
        `playback.play_starts`). When it was first heard, and its latency."""
        turn = self.current
        if turn is None:
            return None
        sent = turn.first_audio_sent_at
        heard = turn.first_audio_heard_at = began if sent is None else max(began, sent)
        return heard, heard - turn.caller_stopped_at

    def barged_in(self, truncated_at_ms: int | None) -> None:
        """The caller talked over the current turn's answer (if it had begun)."""
        turn = self.current
        if turn is not None and turn.first_audio_sent_at is not None:
            turn.barged_in = True
            turn.truncated_at_ms = truncated_at_ms
