"""Tunables of the local agent that are not part of the Realtime protocol itself."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FunctionCallPlan:
    """A function call the agent makes in a planned response, as a model would decide to.

    Carried out only if the session declared a function tool of that ``name`` (and
    ``tool_choice`` allows it), so a test that sees the call also proves the client declared
    the tool.
    """

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)  # sent as a JSON string
    # True: the response speaks its normal answer (the echo / synthetic speech) first, then
    # makes the call in a second output item. False: the call is the whole response.
    speak_first: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("FunctionCallPlan.name must be a non-empty string")
        if not isinstance(self.arguments, dict):
            raise ValueError("FunctionCallPlan.arguments must be a dict")
        try:
            json.dumps(self.arguments)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"FunctionCallPlan.arguments must be JSON-serialisable: {exc}"
            ) from None

    @property
    def arguments_json(self) -> str:
        """The arguments as the model writes them, e.g. '{"city": "Paris"}'."""
        return json.dumps(self.arguments, ensure_ascii=False)


@dataclass
class AgentOptions:
    """How the local agent behaves beyond what a client can configure over the wire.

    VAD silence / prefix padding / threshold come from the session's ``turn_detection``
    (like the real service); these options only shape pacing and test scenarios.
    """

    chunk_ms: int = 100  # audio per response delta
    speed: float = 4.0  # deltas are sent this much faster than real time; 0 = no pacing at all
    stall_after_ms: int | None = None  # after this many ms of a response's audio were sent ...
    stall_ms: int = 0  # ... pause this long, once (a model stall mid-answer)
    items_per_response: int = 1  # split the echo over this many assistant items
    vad_threshold_dbfs: float = -45.0  # energy threshold at turn_detection.threshold = 0.5
    vad_onset_ms: int = 40  # speech must last this long before speech_started is emitted
    # A flaky network or a backend crash: abort the TCP connection (no close frame) once this
    # many ms of response audio have been sent in a session. Only the first session of an agent
    # to get there is dropped, so a client's reconnection is not dropped in turn.
    drop_after_ms: int | None = None
    # The service's session length limit (60 min on GA): at this age a session gets the
    # service's session_expired error and is closed. None: sessions last as long as the client.
    max_session_s: float | None = None
    # Response number (1-based, counting every response a session makes) -> a function call
    # that response makes. Counted per session: a reconnected client starts again at 1.
    function_calls: dict[int, FunctionCallPlan] = field(default_factory=dict)
    # With transcription on, what the caller's Nth committed audio item (1-based, per
    # session) is transcribed as; the others get a placeholder saying how long they were.
    # There is no speech recognition here: a test says what the caller "said".
    transcripts: dict[int, str] = field(default_factory=dict)
    # A transcript completes this long after its item was committed (the service's
    # transcription runs beside the model, and takes a moment).
    transcript_delay_ms: int = 0

    def __post_init__(self) -> None:
        # Fail at construction, not in the middle of a call.
        if self.chunk_ms <= 0:
            raise ValueError("chunk_ms must be positive")
        if self.speed < 0:
            raise ValueError("speed must be >= 0 (0 disables pacing)")
        if self.stall_ms < 0 or (self.stall_after_ms is not None and self.stall_after_ms < 0):
            raise ValueError("stall_after_ms and stall_ms must be >= 0")
        if self.items_per_response < 1:
            raise ValueError("items_per_response must be >= 1")
        if self.vad_onset_ms < 0:
            raise ValueError("vad_onset_ms must be >= 0")
        if self.drop_after_ms is not None and self.drop_after_ms < 0:
            raise ValueError("drop_after_ms must be >= 0")
        if self.max_session_s is not None and not self.max_session_s > 0:
            raise ValueError("max_session_s must be positive")
        if self.transcript_delay_ms < 0:
            raise ValueError("transcript_delay_ms must be >= 0")
        for index, text in self.transcripts.items():
            if isinstance(index, bool) or not isinstance(index, int) or index < 1:
                raise ValueError(f"transcripts keys are item numbers (1-based), not {index!r}")
            if not isinstance(text, str):
                raise ValueError(f"transcripts[{index}] must be a string")
        for index, plan in self.function_calls.items():
            if isinstance(index, bool) or not isinstance(index, int) or index < 1:
                raise ValueError(
                    f"function_calls keys are response numbers (1-based), not {index!r}"
                )
            if not isinstance(plan, FunctionCallPlan):
                raise ValueError(f"function_calls[{index}] must be a FunctionCallPlan")
