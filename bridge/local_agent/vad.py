"""Energy voice-activity detection over fixed 20 ms frames.

Pure state machine: the session feeds it one frame level at a time (with the frame's
position on the input timeline), so its decisions depend only on the audio, never on how
the client chunked its appends.
"""

from __future__ import annotations

from dataclasses import dataclass

FRAME_MS = 20


@dataclass(frozen=True)
class VadEvent:
    kind: str  # "started" | "stopped"
    ms: int  # started: first ms of speech (before prefix padding); stopped: end of silence window


class EnergyVad:
    def __init__(
        self, threshold_dbfs: float, onset_ms: int, silence_ms: int, frame_ms: int = FRAME_MS
    ) -> None:
        self.threshold_dbfs = threshold_dbfs
        self.onset_ms = onset_ms
        self.silence_ms = silence_ms
        self.frame_ms = frame_ms
        self.reset()

    def reset(self) -> None:
        self.state = "idle"  # idle -> onset -> speaking -> idle
        self._onset_start = 0
        self._run_ms = 0  # speech run while in onset, silence run while speaking

    @property
    def idle(self) -> bool:
        return self.state == "idle"

    def feed(self, start_ms: int, level_dbfs: float) -> VadEvent | None:
        speech = level_dbfs > self.threshold_dbfs
        end_ms = start_ms + self.frame_ms
        if self.state == "speaking":
            if speech:
                self._run_ms = 0
                return None
            self._run_ms += self.frame_ms
            if self._run_ms >= self.silence_ms:
                self.reset()
                # Like the real API, the end includes the silence that confirmed it.
                return VadEvent("stopped", end_ms)
            return None
        if not speech:
            # A blip shorter than the onset time is not a turn.
            self.reset()
            return None
        if self.state == "idle":
            self.state = "onset"
            self._onset_start = start_ms
            self._run_ms = 0
        self._run_ms += self.frame_ms
        if self._run_ms >= self.onset_ms:
            self.state = "speaking"
            self._run_ms = 0
            return VadEvent("started", self._onset_start)
        return None
