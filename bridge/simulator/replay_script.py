"""A recorded caller, played back: the caller channel of a recording, frame by frame.

Where `CallerScript` decides when to speak from what it hears, a replay says exactly what
the caller said, when they said it (the recording's clock is the stream's: frame k of the
recording is frame k of the new call), whatever the assistant does in between. So a new
prompt, model or bridge meets the same caller, barge-ins included, and what changed is what
the caller would have heard.

Turns are the recording's stretches of speech (`speech_spans`): a turn begins with the
first frame of a stretch and ends with its last, so the report's latencies count from the
same instant the bridge's do. When the recording runs out, the caller listens to the end of
the answer being played (as `CallerScript` does after its last turn) and hangs up.
"""

from __future__ import annotations

from bridge.simulator.playout import Playback
from bridge.simulator.script import (
    FRAME_MS,
    SILENCE_FRAME,
    CallerScript,
    speech_spans,
    to_frames,
)
from bridge.simulator.simulator_options import SimulatorOptions


class ReplayScript(CallerScript):
    """Sends the recorded caller's frames in order, one per 20 ms frame of the call."""

    def __init__(self, mulaw: bytes, options: SimulatorOptions, playback: Playback) -> None:
        super().__init__([], options, playback)
        self._line = to_frames(mulaw)
        self._spans = speech_spans(mulaw)
        self._next_span = 0  # the next stretch of speech to begin
        self._speaking_until: int | None = None  # the frame after the current stretch
        self._ran_out_at: float | None = None  # clock when the recording's last frame went

    @property
    def recorded_frames(self) -> int:
        return len(self._line)

    @property
    def finished_speaking(self) -> bool:
        """The whole recording has been sent."""
        return self._ran_out_at is not None

    def next_frame(self, frame_ms: int, now: float) -> bytes | None:
        if self.done:
            return None
        index = frame_ms // FRAME_MS
        if index >= len(self._line):
            return self._after_recording(now)
        if self._next_span < len(self._spans) and self._spans[self._next_span][0] == index:
            self._end_turn(now)
            self._open_turn(frame_ms, now, barge_in=False)
            self._speaking_until = self._spans[self._next_span][1]
            self._next_span += 1
        if self._speaking_until is not None:
            self.speech_frames_sent += 1
            if index + 1 == self._speaking_until:
                turn = self.turns[-1]
                turn.speech_end_ms = frame_ms + FRAME_MS
                turn.speech_ended_at = now
                self._speaking_until = None
        frame = self._line[index]
        if index + 1 == len(self._line):
            self._ran_out_at = now
        return frame

    def _after_recording(self, now: float) -> bytes | None:
        """Past the recording: listen until the last answer is over (or the turn times
        out, or there was never a turn to answer), then hang up."""
        if self._ran_out_at is None:  # (a recording of no frames at all)
            self._ran_out_at = now
        response = len(self.turns)
        playback = self._playback
        timed_out = (
            not playback.is_playing
            and now - self._ran_out_at >= self._options.turn_timeout_s * 1000
        )
        if self.turns and not self._answer_is_over(response, now) and not timed_out:
            return SILENCE_FRAME
        if self.turns and timed_out:
            self.turns[-1].timed_out = not playback.pushed_bytes_by_response.get(response)
        self.hang_up(now)
        return None
