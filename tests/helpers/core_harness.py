"""The call core driven as the call runner drives it, with no sockets: typed events in,
typed actions out, time passed in. For the core's tests to say what happens to a call in
the core's own terms."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import TypeVar

from bridge.core import actions as act
from bridge.core import events as ev
from bridge.core.call import Call
from bridge.core.call_config import CallConfig
from bridge.core.last_words import GOODBYE_PURPOSE
from bridge.core.opening import StreamOpening
from bridge.core.summary import CallObserver, CallSummary

STREAM = "MZ00000000000000000000000000000001"
CALL = "CA00000000000000000000000000000001"
A = TypeVar("A")


def start(parameters: dict[str, str] | None = None, stream_sid: str = STREAM) -> ev.StreamStarted:
    return ev.StreamStarted(stream_sid, CALL, "AC1", parameters or {"CallSid": CALL})


def of(kind: type[A], actions: Iterable[act.Action]) -> list[A]:
    """The actions of one kind, in order."""
    return [a for a in actions if isinstance(a, kind)]


def kinds(actions: Iterable[act.Action]) -> list[str]:
    """The actions' class names, in order: what the adapter will do, at a glance."""
    return [type(a).__name__ for a in actions]


def truncations(actions: Iterable[act.Action]) -> list[tuple[str, int]]:
    return [(t.item_id, t.audio_end_ms) for t in of(act.TruncateItem, actions)]


def audio(size: int, byte: bytes = b"\xff") -> str:
    """`size` bytes of audio, base64 (mu-law: 8 bytes a millisecond)."""
    return base64.b64encode(byte * size).decode()


class Stream:
    """A Media Streams connection as the runner drives it: its opening until `start`,
    then (admitted at once, as a valid token and a free line would) its call."""

    def __init__(
        self,
        config: CallConfig | None = None,
        observer: CallObserver | None = None,
        opened_at: float = 0.0,
        refuse: ev.StreamRefused | None = None,
        answered_at: float | None = None,
    ) -> None:
        self.config = config or CallConfig()
        self.observer = observer
        self.answered_at = answered_at  # when its webhook was answered
        self.opening = StreamOpening(self.config.limits, opened_at)
        self.core: StreamOpening | Call = self.opening
        self._refuse = refuse

    @property
    def call(self) -> Call:
        assert isinstance(self.core, Call), "the stream has not started its call"
        return self.core

    def handle(self, event: ev.Event, now: float) -> list[act.Action]:
        actions = self.core.handle(event, now)
        out: list[act.Action] = []
        for action in actions:
            if isinstance(action, act.AdmitStream):
                if self._refuse is not None:
                    out += self.core.handle(self._refuse, now)
                    continue
                self.core = Call(
                    self.config, self.observer, self.opening.guard, answered_at=self.answered_at
                )
                out += self.core.handle(action.start, now)
            else:
                out.append(action)
        return out


class CallHarness:
    """A started call whose first Realtime session has opened (at 0 s, not yet
    configured: `session_updated` does that), and shorthands for what it hears.
    `fields`: the CallConfig's, when no `config` is given."""

    def __init__(
        self,
        config: CallConfig | None = None,
        observer: CallObserver | None = None,
        answered_at: float | None = None,
        **fields: object,
    ) -> None:
        if config is None:
            config = CallConfig(**fields)  # type: ignore[arg-type]
        self.stream = Stream(config, observer, answered_at=answered_at)
        self.played_marks: list[str] = []  # every mark sent after assistant audio
        assert kinds(self.stream.handle(start(), 0.0)) == ["OpenBackend"]
        self.opened = self.handle(ev.BackendOpened(), 0.0)

    @property
    def call(self) -> Call:
        return self.stream.call

    def handle(self, event: ev.Event, now: float) -> list[act.Action]:
        actions = self.stream.handle(event, now)
        self.played_marks += [a.mark for a in of(act.PlayAudio, actions)]
        return actions

    def summary(self) -> CallSummary:
        return self.call.summary()

    # --- the session ------------------------------------------------------------------------

    def session_updated(
        self, interrupts_by_itself: bool = True, now: float = 0.0
    ) -> list[act.Action]:
        return self.handle(ev.SessionUpdated(interrupts_by_itself=interrupts_by_itself), now)

    def response_created(
        self, response_id: str, now: float, goodbye: bool = False
    ) -> list[act.Action]:
        purpose = GOODBYE_PURPOSE if goodbye else None
        return self.handle(ev.ResponseCreated(response_id, purpose), now)

    def delta(self, response_id: str, item_id: str, size: int, now: float) -> list[act.Action]:
        return self.handle(ev.AudioDelta(response_id, item_id, 0, audio(size)), now)

    def audio_done(self, response_id: str, item_id: str, now: float) -> list[act.Action]:
        return self.handle(ev.AudioDone(item_id), now)

    def response_done(
        self, response_id: str, now: float, status: str = "completed"
    ) -> list[act.Action]:
        return self.handle(ev.ResponseDone(response_id, status), now)

    def speech_started(self, now: float, audio_start_ms: float | None = None) -> list[act.Action]:
        return self.handle(ev.SpeechStarted(audio_start_ms), now)

    def speech_stopped(self, now: float, audio_end_ms: float | None = None) -> list[act.Action]:
        return self.handle(ev.SpeechStopped(audio_end_ms), now)

    def caller_turn(self, item_id: str, transcript: str, now: float) -> list[act.Action]:
        """The caller said something: committed, transcribed."""
        return self.handle(ev.InputCommitted(item_id), now) + self.handle(
            ev.CallerTranscribed(item_id, transcript), now
        )

    def function_call(
        self, call_id: str, name: str, arguments: str, response_id: str | None, now: float
    ) -> list[act.Action]:
        return self.handle(ev.FunctionCallRequested(call_id, name, arguments, response_id), now)

    def backend_closed(self, why: str, now: float) -> list[act.Action]:
        return self.handle(ev.BackendClosed(why), now)

    def backend_opened(self, now: float) -> list[act.Action]:
        return self.handle(ev.BackendOpened(), now)

    # --- Twilio's side ----------------------------------------------------------------------

    def media(self, payload: str, now: float, stream_sid: str = STREAM) -> list[act.Action]:
        return self.handle(ev.CallerAudio(stream_sid, payload), now)

    def echo(self, mark: str, now: float) -> list[act.Action]:
        return self.handle(ev.MarkPlayed(STREAM, mark), now)

    def key(self, digit: str, now: float) -> list[act.Action]:
        return self.handle(ev.KeyPressed(STREAM, digit), now)

    def tick(self, now: float) -> list[act.Action]:
        return self.handle(ev.TICK, now)


def configured_call(
    config: CallConfig | None = None,
    observer: CallObserver | None = None,
    interrupts_by_itself: bool = True,
    **fields: object,
) -> CallHarness:
    """A call whose first session is open and configured (at 0 s): the usual start of a
    test of what happens once the caller and the assistant talk."""
    h = CallHarness(config, observer, **fields)
    h.session_updated(interrupts_by_itself)
    return h


class Recorder:
    """A CallObserver that keeps what it was told, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float | int | None]] = []

    def turn_answered(self, latency_s: float) -> None:
        self.events.append(("answered", round(latency_s, 3)))

    def turn_heard(self, latency_s: float) -> None:
        self.events.append(("heard", round(latency_s, 3)))

    def barged_in(self, heard_ms: int | None) -> None:
        self.events.append(("barged_in", heard_ms))

    def paused(self, seconds: float, resumed: bool) -> None:
        self.events.append(("resumed" if resumed else "interrupted", round(seconds, 3)))

    def reconnected(self) -> None:
        self.events.append(("reconnected", 0))

    def rolled_over(self) -> None:
        self.events.append(("rolled_over", 0))

    def backend_error(self, code: str) -> None:
        self.events.append(("error:" + code, 0))
