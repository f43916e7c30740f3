"""TEMPORARY: the old call-core API over the new core and codecs, so the existing suite
checks the redesign behaves the same. Removed once the adapters and tests move over."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.core import actions as act
from bridge.core import events as ev
from bridge.core.call import Call as CoreCall
from bridge.core.call import decoded_length  # noqa: F401
from bridge.core.call_config import DEFAULT_MAX_REPLAY_CHARS, SessionSettings, StreamLimits
from bridge.core.call_config import CallConfig as CoreConfig
from bridge.core.keypad import KEYPAD_ITEM_PREFIX  # noqa: F401
from bridge.core.opening import StreamOpening
from bridge.core.phases import Phase
from bridge.core.summary import BargeIn, CallObserver, Truncation  # noqa: F401
from bridge.core.transcript import Transcript
from bridge.defaults import TIME_LIMIT_MESSAGE as DEFAULT_TIME_LIMIT_MESSAGE
from bridge.transcode import AudioFormat
from bridge.wire import twilio
from bridge.wire.realtime import Dialect, codec_for

log = logging.getLogger("bridge.call")


@dataclass(slots=True, frozen=True)
class SendToTwilio:
    text: str


@dataclass(slots=True, frozen=True)
class SendToRealtime:
    text: str


@dataclass(slots=True, frozen=True)
class OpenRealtime:
    call_sid: str
    custom_parameters: dict[str, str]


@dataclass(slots=True, frozen=True)
class EndCall:
    reason: str


@dataclass(slots=True, frozen=True)
class ReconnectRealtime:
    delay_s: float
    reason: str
    give_up_after_s: float = float("inf")


@dataclass(slots=True, frozen=True)
class HangUp:
    reason: str


@dataclass(slots=True, frozen=True)
class TransferCall:
    twiml: str
    reason: str


@dataclass(slots=True, frozen=True)
class RunTool:
    call_id: str
    name: str
    arguments: str


Action = (
    SendToTwilio
    | SendToRealtime
    | OpenRealtime
    | ReconnectRealtime
    | EndCall
    | HangUp
    | TransferCall
    | RunTool
)


@dataclass(frozen=True, slots=True)
class CallConfig:
    dialect: Dialect = Dialect.GA
    audio_format: AudioFormat = AudioFormat.PCMU
    session: SessionSettings = field(default_factory=SessionSettings)
    greeting: str | None = None
    max_frames_before_connect: int = 250
    start_timeout_s: float = 5.0
    max_duration_s: float | None = None
    time_limit_message: str = DEFAULT_TIME_LIMIT_MESSAGE
    goodbye_timeout_s: float = 15.0
    max_messages_per_s: float = 200.0
    max_audio_speed: float = 1.5
    audio_burst_s: float = 3.0
    reconnect_budget_s: float = 10.0
    session_setup_timeout_s: float = 5.0
    rollover_after_s: float | None = None
    rollover_grace_s: float = 240.0
    max_replay_chars: int = DEFAULT_MAX_REPLAY_CHARS
    tools: tuple[dict[str, Any], ...] = ()
    builtin_tools: frozenset[str] = frozenset()
    transfer_twiml: Mapping[str, str] = field(default_factory=dict)
    transfer_message: str = "Please hold while I transfer your call."
    keypad_pause_s: float = 2.0

    def core(self) -> CoreConfig:
        return CoreConfig(
            audio_format=self.audio_format,
            session=self.session,
            greeting=self.greeting,
            limits=StreamLimits(
                self.start_timeout_s,
                self.max_messages_per_s,
                self.max_audio_speed,
                self.audio_burst_s,
            ),
            max_frames_before_connect=self.max_frames_before_connect,
            max_duration_s=self.max_duration_s,
            time_limit_message=self.time_limit_message,
            goodbye_timeout_s=self.goodbye_timeout_s,
            reconnect_budget_s=self.reconnect_budget_s,
            session_setup_timeout_s=self.session_setup_timeout_s,
            rollover_after_s=self.rollover_after_s,
            rollover_grace_s=self.rollover_grace_s,
            max_replay_chars=self.max_replay_chars,
            tools=self.tools,
            builtin_tools=self.builtin_tools,
            transfer_twiml=self.transfer_twiml,
            transfer_message=self.transfer_message,
            keypad_pause_s=self.keypad_pause_s,
        )


class Call:
    def __init__(self, config: CallConfig | None = None, observer: CallObserver | None = None):
        self.config = config or CallConfig()
        self._observer = observer
        self._codec = codec_for(self.config.dialect)
        self._opening: StreamOpening | None = None
        self._call: CoreCall | None = None
        self._writer: twilio.StreamWriter | None = None
        self._start: ev.StreamStarted | None = None
        self.log: Any = logging.LoggerAdapter(log, {"call_sid": "-"})

    def use_config(self, config: CallConfig) -> None:
        if self._call is not None and self._call._session.configured:
            raise RuntimeError("the session is already configured")
        guard = self._call._guard if self._call is not None else None
        self.config = config
        self._codec = codec_for(config.dialect)
        if self._call is not None and self._start is not None:
            self._call = CoreCall(config.core(), self._observer, guard)
            self._call.handle(self._start, self._call_started_at)

    # the old entry points
    def receive_twilio(self, text: str | bytes, now: float) -> list[Action]:
        return self._feed(twilio.decode(text), now)

    def handle_twilio_event(self, event: ev.Event, now: float) -> list[Action]:
        return self._feed(event, now)

    def receive_realtime(self, text: str | bytes, now: float) -> list[Action]:
        event = self._codec.decode(text)
        return [] if event is None else self._feed(event, now)

    def realtime_connected(self, now: float) -> list[Action]:
        return self._feed(ev.BackendOpened(), now)

    def realtime_closed(self, reason: str, now: float) -> list[Action]:
        return self._feed(ev.BackendClosed(reason), now)

    def tick(self, now: float) -> list[Action]:
        return self._feed(ev.TICK, now)

    def tool_finished(self, call_id: str, output: str, now: float) -> list[Action]:
        return self._feed(ev.ToolFinished(call_id, output), now)

    def say_goodbye(self, text: str, reason: str, now: float) -> list[Action]:
        return self._feed(ev.ShutdownRequested(text), now)

    def twilio_closed(self, stalled: bool = False) -> list[Action]:
        return self._feed(ev.TwilioClosed(stalled), 0.0)

    def note_unheard_answers(self) -> None:
        pass  # the core notes them as the call ends

    def _feed(self, event: ev.Event, now: float) -> list[Action]:
        if self._call is None:
            if self._opening is None:
                self._opening = StreamOpening(self.config.core().limits, now)
            actions = self._opening.handle(event, now)
        else:
            actions = self._call.handle(event, now)
        return self._render(actions, now)

    def _render(self, actions: list[act.Action], now: float) -> list[Action]:
        out: list[Action] = []
        for a in actions:
            if isinstance(a, act.AdmitStream):
                assert self._opening is not None
                self._start = a.start
                self._call_started_at = now
                self._call = CoreCall(self.config.core(), self._observer, self._opening.guard)
                self._writer = twilio.StreamWriter(a.start.stream_sid)
                self.log = logging.LoggerAdapter(log, {"call_sid": a.start.call_sid})
                out += self._render(self._call.handle(a.start, now), now)
            elif isinstance(a, act.PlayAudio):
                assert self._writer is not None
                out.append(SendToTwilio(self._writer.media(a.payload)))
                out.append(SendToTwilio(self._writer.mark(a.mark)))
            elif isinstance(a, act.ClearAudio):
                assert self._writer is not None
                out.append(SendToTwilio(self._writer.clear()))
            elif isinstance(a, act.SendMark):
                assert self._writer is not None
                out.append(SendToTwilio(self._writer.mark(a.name)))
            elif isinstance(a, act.OpenBackend):
                assert self._call is not None
                out.append(OpenRealtime(self._call.call_sid, dict(self._call.parameters)))
            elif isinstance(a, act.ReconnectBackend):
                out.append(ReconnectRealtime(a.delay_s, a.reason, a.give_up_after_s))
            elif isinstance(a, act.RunTool):
                out.append(RunTool(a.call_id, a.name, a.arguments))
            elif isinstance(a, act.Transfer):
                out.append(TransferCall(a.twiml, a.description))
            elif isinstance(a, act.HangUp):
                out.append(HangUp(a.description))
            elif isinstance(a, act.EndStream):
                out.append(EndCall(a.description))
            else:
                out.append(SendToRealtime(self._codec.encode(a)))  # type: ignore[arg-type]
        return out

    # what the old runner and tests read
    @property
    def observer(self) -> CallObserver | None:
        return self._observer

    @observer.setter
    def observer(self, observer: CallObserver | None) -> None:
        self._observer = observer
        if self._call is not None:
            self._call._observer = observer

    @property
    def phase(self) -> Phase:
        if self._call is None:
            if self._opening is not None and self._opening._over:
                return Phase.ENDED
            return Phase.AWAITING_START
        return self._call.phase

    def _summary(self) -> Any:
        assert self._call is not None
        return self._call.summary()

    @property
    def turns(self) -> Any:
        return self._call._turns.turns if self._call else []

    @property
    def barge_ins(self) -> Any:
        return self._call._barge_ins if self._call else []

    @property
    def usage(self) -> Any:
        assert self._call is not None
        return self._call._usage

    @property
    def conversation(self) -> Transcript:
        assert self._call is not None
        return self._call._transcript

    @property
    def reconnects(self) -> int:
        return self._call._session.reconnects if self._call else 0

    @property
    def backend_errors(self) -> int:
        return self._call._backend_errors if self._call else 0

    @property
    def session_model(self) -> str | None:
        return self._call._session.model if self._call else None

    @property
    def call_sid(self) -> str | None:
        return self._call.call_sid if self._call else None

    @property
    def stream_sid(self) -> str | None:
        return self._call.stream_sid if self._call else None

    @property
    def account_sid(self) -> str | None:
        return (self._call.account_sid or None) if self._call else None

    @property
    def custom_parameters(self) -> dict[str, str]:
        return self._call.parameters if self._call else {}

    @property
    def started_at(self) -> float | None:
        return self._call.started_at if self._call else None
