"""The call core: one phone call's logic, with no sockets inside (sans-I/O).

A `Call` takes events — Twilio Media Streams messages, Realtime server events, and the
moments the sockets open or close — each with the current time, and returns the actions
the I/O adapter must carry out: text to send to Twilio, text to send to the Realtime
session, the Realtime session to open, the call to end.

Barge-in accounting
-------------------
Every audio delta is sent to Twilio as one `media` message followed by a mark named
``"{item_id}:{end_byte_offset}"``. Twilio echoes a mark once the audio before it has been
played, so an echoed mark proves the caller heard that item up to that offset. While a
chunk is playing, the caller has heard part of it: its playback began when the previous
mark came back (or when it was sent, if Twilio's queue had run dry), and mu-law plays at
exactly 8 bytes per millisecond. That estimate is capped at the chunk's own size, so it
never runs past audio that was not confirmed: a model that stalls mid-answer cannot make
it overshoot, unlike a wall-clock estimate from the start of the item. A `clear` flushes
the queue and makes Twilio echo every pending mark at once; those echoes are forgotten
with the queue, so they never count as playback.

Audio formats
-------------
By default the session speaks mu-law too, and audio passes through as the base64 it came
in: nothing is decoded. A backend that needs PCM16 24 kHz or a-law gets transcoding, one
stateful stream per direction (`bridge.transcode`). The accounting stays in the mu-law
bytes Twilio plays, and stays exact in the backend's format: each mu-law byte sent stands
for exactly 1/8 ms of the item's audio (three PCM16 samples, or one a-law byte), so a
truncation's `audio_end_ms` names the same instant in the model's own audio.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Protocol

import orjson

from bridge.audio import MULAW_BYTES_PER_MS
from bridge.audio import MULAW_RATE as MULAW_BYTES_PER_SECOND
from bridge.conversation import DEFAULT_MAX_REPLAY_CHARS, Conversation
from bridge.dtmf import dtmf_mulaw, valid_digits
from bridge.realtime.dialects import Dialect, canonical_event_type
from bridge.realtime.session_config import (
    GOODBYE_LEAD,
    RESUME_INSTRUCTIONS,
    SessionSettings,
    formats_confirmed,
    greeting_request,
    interrupts_by_itself,
    session_update,
    turn_detection_off,
)
from bridge.tools.builtins import (
    END_CALL,
    SEND_DTMF,
    TRANSFER_CALL,
    end_call_spec,
    send_dtmf_spec,
    transfer_call_spec,
)
from bridge.transcode import AudioFormat, BackendToCaller, CallerToBackend, bytes_per_ms
from bridge.twilio_stream import (
    Connected,
    Dtmf,
    Mark,
    Media,
    Start,
    Stop,
    TwilioEvent,
    TwilioProtocolError,
    parse_twilio_message,
)
from bridge.usage import CallUsage

TRUNCATION_MARK_PREFIX = "truncated:"
# First attempt at once, then backing off (seconds), the last delay repeating.
RECONNECT_DELAYS_S = (0.0, 0.25, 0.5, 1.0, 2.0)
# A restored session counts as healthy (the reconnect budget resets) once configured for
# this long; a backend that drops again sooner keeps using up the same budget.
HEALTHY_AFTER_S = 5.0
# Marks the goodbye's response.create, so its response is told apart from any other.
GOODBYE_METADATA = {"phone_bridge": "goodbye"}
# When the model ends the call without having said goodbye, it is asked for one.
OWN_GOODBYE_INSTRUCTIONS = (
    "The call is ending now. Say a brief, friendly goodbye to the caller in one short "
    "sentence, and nothing else."
)
KEYPAD_MESSAGE = "(The caller pressed these keys on their phone keypad: {keys})"
ORPHANED_TOOL_MESSAGE = "The tool you called before the line dropped has returned: "
MAX_KEYS = 64  # one keypad entry; more is not a person typing
KEYPAD_ITEM_PREFIX = "keypad-"  # the conversation's name for a keypad entry
# In-band DTMF goes to Twilio in pieces of this many ms, each with its mark.
DTMF_CHUNK_MS = 200
# Checks the alphabet and padding without decoding anything (~0.5 µs per frame).
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_APPEND_PREFIX = '{"type":"input_audio_buffer.append","audio":"'

log = logging.getLogger("bridge.call")


# --- actions -------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class SendToTwilio:
    text: str


@dataclass(slots=True, frozen=True)
class SendToRealtime:
    text: str


@dataclass(slots=True, frozen=True)
class OpenRealtime:
    """Open the Realtime session for this call, then report `realtime_connected`."""

    call_sid: str
    custom_parameters: dict[str, str]


@dataclass(slots=True, frozen=True)
class EndCall:
    """Close the Realtime session and the Twilio stream (TwiML after <Connect> then runs)."""

    reason: str


@dataclass(slots=True, frozen=True)
class ReconnectRealtime:
    """Close the Realtime socket if it is still open, wait `delay_s`, open a new one, then
    report `realtime_connected` (or `realtime_closed` if that fails). The new socket must
    be open within `give_up_after_s` of this action (the rest of the reconnect budget):
    past that, report `realtime_closed`."""

    delay_s: float
    reason: str
    give_up_after_s: float = float("inf")


@dataclass(slots=True, frozen=True)
class HangUp:
    """End the phone call itself, not only the stream: the goodbye was the end, so no TwiML
    after <Connect> (the apology) may run. Then close both sockets."""

    reason: str


@dataclass(slots=True, frozen=True)
class TransferCall:
    """Hand the phone call to `twiml` (a `<Dial>`) through Twilio's REST API: the caller
    heard the handoff line; the stream ends as Twilio moves the call. Then close both
    sockets."""

    twiml: str
    reason: str


@dataclass(slots=True, frozen=True)
class RunTool:
    """Run the operator's tool `name` with `arguments` (a JSON string, as the model wrote
    it), then report its output with `tool_finished(call_id, output)`."""

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


# --- configuration and records ------------------------------------------------------------

DEFAULT_TIME_LIMIT_MESSAGE = (
    "We have reached the time limit for this call. Thank you for calling. Goodbye."
)


@dataclass(frozen=True, slots=True)
class CallConfig:
    dialect: Dialect = Dialect.GA
    # What the session speaks; Twilio's side is always mu-law 8 kHz.
    audio_format: AudioFormat = AudioFormat.PCMU
    session: SessionSettings = field(default_factory=SessionSettings)
    greeting: str | None = None
    # Caller audio kept while the Realtime session connects (250 frames = 5 s); older
    # frames are dropped first, so a slow backend costs bounded memory.
    max_frames_before_connect: int = 250
    # A socket that never sends `start` holds a connection and nothing else (no line: that
    # comes with a valid start): drop it soon. Twilio sends `connected` and `start` at once.
    start_timeout_s: float = 5.0
    # After this long the assistant says `time_limit_message` and the call is hung up.
    max_duration_s: float | None = None
    time_limit_message: str = DEFAULT_TIME_LIMIT_MESSAGE
    # A goodbye not heard in full by then is cut short: the call ends regardless.
    goodbye_timeout_s: float = 15.0
    # Twilio sends ~50 media messages a second plus marks; far more is a flood, and the
    # call is ended. Caller audio beyond real time (with slack for network bursts) is
    # dropped: it would only cost tokens.
    max_messages_per_s: float = 200.0
    max_audio_speed: float = 1.5  # x real time, sustained
    audio_burst_s: float = 3.0
    # A Realtime socket lost mid-call is reopened with backoff for this long, the
    # conversation restored as text; after that the call ends with the apology. A bound:
    # no attempt is started that could not finish within it.
    reconnect_budget_s: float = 10.0
    # A newly opened session must say session.created and then session.updated within
    # this long; one that stays silent (a hung backend) counts as lost.
    session_setup_timeout_s: float = 5.0
    # Move to a fresh session after this long (the service ends sessions at 60 min on GA,
    # 30 on beta/Azure), at a quiet moment, or regardless `rollover_grace_s` later.
    rollover_after_s: float | None = None
    rollover_grace_s: float = 240.0
    max_replay_chars: int = DEFAULT_MAX_REPLAY_CHARS
    # Tools. `tools`: the operator's, as session.update entries (run outside the core,
    # through RunTool); `builtin_tools`: which of end_call / transfer_call / send_dtmf the
    # model is offered (the core carries them out itself).
    tools: tuple[dict[str, Any], ...] = ()
    builtin_tools: frozenset[str] = frozenset()
    # transfer_call destinations: name -> the TwiML that dials it.
    transfer_twiml: Mapping[str, str] = field(default_factory=dict)
    transfer_message: str = "Please hold while I transfer your call."
    # Keypad entry ends on # or after this long without another key.
    keypad_pause_s: float = 2.0


class Phase(Enum):
    AWAITING_START = "awaiting start"
    CONNECTING = "connecting"
    BRIDGING = "bridging"
    RECONNECTING = "reconnecting"  # the session was lost or is being replaced
    ENDED = "ended"


@dataclass(slots=True, frozen=True)
class Truncation:
    item_id: str
    audio_end_ms: int
    sent_ms: float  # how much of the item had been sent to Twilio


@dataclass(slots=True, frozen=True)
class BargeIn:
    at: float
    cleared: bool  # audio was still queued at Twilio, so a `clear` was sent
    truncations: tuple[Truncation, ...]
    cancelled_response: str | None  # response.cancel sent for it (only without auto-interrupt)


@dataclass(slots=True)
class TurnClock:
    """One caller turn and its answer, timed as the caller lives it (monotonic seconds).

    Every latency is measured from `caller_stopped_at`, the end of the caller's speech as
    the bridge knows it: where the session's VAD put it in the audio (speech_stopped's
    `audio_end_ms`, less the silence the VAD waited for to be sure), placed on the call's
    clock; for keys, the last key pressed. The simulated caller's "stopped speaking" is the
    same instant, so both tell the same figures for one call.
    """

    index: int
    caller_stopped_at: float  # the end of the caller's speech, or their last key
    first_audio_sent_at: float | None = None  # first assistant audio sent to Twilio after it
    # When that audio began to play to the caller: its mark came back once it had played,
    # and it plays in real time, so it began its own length before.
    first_audio_heard_at: float | None = None
    barged_in: bool = False  # the caller talked over this turn's answer
    truncated_at_ms: int | None = None
    first_mark: str | None = field(default=None, repr=False)
    earlier_response: str | None = field(default=None, repr=False)


class CallObserver(Protocol):
    """What the core reports as it happens (metrics); synchronous and cheap, never called
    per audio frame."""

    def turn_answered(self, latency_s: float) -> None: ...
    def turn_heard(self, latency_s: float) -> None: ...
    def barged_in(self, heard_ms: int | None) -> None: ...
    def reconnected(self) -> None: ...
    def backend_error(self, code: str) -> None: ...


class _Budget:
    """A token bucket: `rate` per second, up to `capacity` at once."""

    __slots__ = ("at", "capacity", "level", "rate")

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate, self.capacity, self.level = rate, capacity, capacity
        self.at: float | None = None

    def take(self, amount: float, now: float) -> bool:
        if self.at is not None:
            self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now
        if self.level < amount:
            return False
        self.level -= amount
        return True


@dataclass(slots=True)
class _Goodbye:
    """The last thing the caller hears: a goodbye, a transfer's handoff line."""

    reason: str
    instructions: str  # for its response.create
    deadline: float
    requested: bool = False  # its response.create was sent (or the model spoke it already)
    response_id: str | None = None
    generated: bool = False  # the model finished it; it ends once heard
    # What follows once it was heard: hang up, or hand the call to a transfer's TwiML.
    then: HangUp | TransferCall | None = None

    def final_action(self) -> HangUp | TransferCall:
        return self.then or HangUp(self.reason)


@dataclass(slots=True)
class _Chunk:
    mark: str  # as Twilio echoes it back (unescaped)
    item_id: str
    end: int  # byte offset within the item once this chunk has played
    size: int
    sent_at: float


@dataclass(slots=True)
class _Item:
    item_id: str
    response_id: str
    content_index: int
    json_stem: str  # "item_id:" escaped for a JSON string, ready to prefix an offset
    sent: int = 0
    heard: int = 0
    audio_done: bool = False
    # From a session since lost or replaced: still playing, but unknown to the current one.
    orphaned: bool = False
    # Audio the bridge made itself (DTMF tones): no model item to truncate.
    local: bool = False


def decoded_length(b64: str) -> int:
    """Bytes encoded by a base64 string, without decoding it."""
    n = len(b64)
    if n and b64[-1] == "=":
        return n * 3 // 4 - (2 if n > 1 and b64[-2] == "=" else 1)
    return n * 3 // 4


class Call:
    """The logic of one call between Twilio and a Realtime session."""

    def __init__(
        self, config: CallConfig | None = None, observer: CallObserver | None = None
    ) -> None:
        self.config = config or CallConfig()
        self.observer = observer
        self.turns: list[TurnClock] = []
        self.reconnects = 0
        self.backend_errors = 0
        self.phase = Phase.AWAITING_START
        self.call_sid: str | None = None
        self.account_sid: str | None = None
        self.stream_sid: str | None = None
        self.custom_parameters: dict[str, str] = {}
        self.barge_ins: list[BargeIn] = []
        self.log: logging.LoggerAdapter = logging.LoggerAdapter(log, {"call_sid": "-"})

        self._media_prefix = ""
        self._mark_prefix = ""
        self._clear_text = ""
        self._frames_before_connect: deque[str] = deque(
            maxlen=self.config.max_frames_before_connect
        )
        self._session_configured = False
        self._auto_interrupt = True
        self._active_response: str | None = None
        self._cancel_sent_for: str | None = None
        self._interrupted_responses: set[str] = set()
        self._items: dict[str, _Item] = {}
        self._pending: deque[_Chunk] = deque()  # sent to Twilio, mark not echoed yet
        self._pending_marks: set[str] = set()
        self._last_echo_at = float("-inf")
        self._noted: set[str] = set()
        self._opened_at: float | None = None  # first tick: the socket is open
        self._started_at: float | None = None
        self._goodbye: _Goodbye | None = None
        self.conversation = Conversation(self.config.max_replay_chars)
        self.usage = CallUsage()
        self.session_model: str | None = None  # as the session reports it
        self._to_backend: CallerToBackend | None = None
        self._to_caller: BackendToCaller | None = None
        self._tools_running: set[str] = set()  # call_ids of the operator's tools at work
        self._orphaned_tools: set[str] = set()  # ... called by a session since replaced
        self._response_owed = False  # a response.create waits for the active one to end
        # A response.create of ours is on its way: until its response.created, another
        # would be refused ("already has an active response").
        self._response_requested = False
        self._responses_with_audio: set[str] = set()
        self._keys = ""  # keypad digits not yet given to the model
        self._key_at = 0.0
        self._keys_entered = 0
        self._local_audio = 0
        self.use_config(self.config)
        self._greeted = False
        self._lost_at: float | None = None  # when the session in use was lost or retired
        self._session_opened_at: float | None = None  # the socket of the session in use opened
        self._session_created = False  # it said session.created
        self._reconnect_attempts = 0
        self._caller_speaking = False
        self._resume_answer = False  # the lost session was mid-answer
        self._configured_at: float | None = None
        # Where the current session's input audio begins, on the call's clock.
        self._session_audio_origin: float | None = None
        self._echoes_owed = 0  # mark echoes a clear will make Twilio send at once
        config = self.config
        self._message_budget = _Budget(config.max_messages_per_s, 2 * config.max_messages_per_s)
        # Counted in base64 characters (4 per 3 bytes), so no frame is decoded to count it.
        chars_per_s = MULAW_BYTES_PER_SECOND * 4 / 3
        self._audio_budget = _Budget(
            chars_per_s * config.max_audio_speed, chars_per_s * config.audio_burst_s
        )

    @property
    def started_at(self) -> float | None:
        """When the stream's `start` arrived (monotonic seconds): where Twilio's media
        timestamps, and the turn times a call record shows, count from."""
        return self._started_at

    def use_config(self, config: CallConfig) -> None:
        """Serve the call with `config` (an agent profile's, chosen from the stream's
        parameters): possible until the Realtime session is configured."""
        if self._session_configured:
            raise RuntimeError("the session is already configured")
        self.config = config
        transcoding = config.audio_format is not AudioFormat.PCMU
        self._to_backend = CallerToBackend(config.audio_format) if transcoding else None
        self._to_caller = BackendToCaller(config.audio_format) if transcoding else None
        self._user_tools = {str(spec.get("name")) for spec in config.tools}
        builtins = []
        if END_CALL in config.builtin_tools:
            builtins.append(end_call_spec())
        if TRANSFER_CALL in config.builtin_tools and config.transfer_twiml:
            builtins.append(transfer_call_spec(list(config.transfer_twiml)))
        if SEND_DTMF in config.builtin_tools:
            builtins.append(send_dtmf_spec())
        self._builtins = {spec["name"] for spec in builtins}
        self._session = replace(config.session, tools=(*builtins, *config.tools))

    # --- Twilio side -----------------------------------------------------------------------

    def receive_twilio(self, text: str | bytes, now: float) -> list[Action]:
        """Handle one text frame from Twilio's Media Streams WebSocket."""
        try:
            event = parse_twilio_message(text)
        except TwilioProtocolError as exc:
            if not self._message_budget.take(1, now):
                return self._flooded()
            self._note_once("bad-twilio-message", "dropped a malformed Twilio message: %s", exc)
            return []
        if not self._is_owed_echo(event) and not self._message_budget.take(1, now):
            return self._flooded()
        return self.handle_twilio_event(event, now)

    def _is_owed_echo(self, event: TwilioEvent) -> bool:
        """An echo of one of our marks: Twilio sends a burst of them after a clear, which
        is not a flood."""
        if not isinstance(event, Mark):
            return False
        if event.name in self._pending_marks:
            return True
        if self._echoes_owed:
            self._echoes_owed -= 1
            return True
        return False

    def _flooded(self) -> list[Action]:
        if self.phase is Phase.ENDED:
            return []
        self.log.error(
            "more than %.0f messages/s from Twilio's side", self.config.max_messages_per_s
        )
        return self._end("flooded with messages")

    def handle_twilio_event(self, event: TwilioEvent, now: float) -> list[Action]:
        if self.phase is Phase.ENDED:
            return []
        if isinstance(event, Media):
            return self._on_caller_audio(event, now)
        if isinstance(event, Mark):
            if event.stream_sid == self.stream_sid:
                self._on_mark_echo(event.name, now)
                return self._hang_up_once_goodbye_heard()
            return []
        if isinstance(event, Start):
            return self._on_start(event, now)
        if isinstance(event, Stop):
            if self.stream_sid is None or event.stream_sid == self.stream_sid:
                return self._end("the caller hung up")
            return []
        if isinstance(event, Dtmf):
            if event.stream_sid != self.stream_sid:
                return []
            return self._on_key(event.digit, now)
        assert isinstance(event, Connected)
        return []

    def twilio_closed(self, stalled: bool = False) -> list[Action]:
        """Twilio's WebSocket closed: the call is over. `stalled`: it was dropped because
        it stopped reading what the bridge sent."""
        if stalled:
            self.log.warning("Twilio's side stopped reading: the call is dropped")
            return self._end("Twilio's side stopped reading")
        return self._end("the Twilio stream closed")

    def _on_start(self, start: Start, now: float) -> list[Action]:
        if self.phase is not Phase.AWAITING_START:
            self._note_once("second-start", "ignored a second 'start' on the same stream")
            return []
        if start.encoding != "audio/x-mulaw" or start.sample_rate != 8000:
            self.log.warning(
                "unexpected media format %s at %d Hz", start.encoding, start.sample_rate
            )
        self.call_sid, self.stream_sid = start.call_sid, start.stream_sid
        self.account_sid = start.account_sid or None
        self.custom_parameters = start.custom_parameters
        self._started_at = now
        self.log = logging.LoggerAdapter(log, {"call_sid": start.call_sid})
        sid = orjson.dumps(start.stream_sid).decode()
        self._media_prefix = '{"event":"media","streamSid":' + sid + ',"media":{"payload":"'
        self._mark_prefix = '{"event":"mark","streamSid":' + sid + ',"mark":{"name":"'
        self._clear_text = '{"event":"clear","streamSid":' + sid + "}"
        self.phase = Phase.CONNECTING
        self.log.info("stream %s started; opening the Realtime session", start.stream_sid)
        return [OpenRealtime(start.call_sid, start.custom_parameters)]

    def _on_caller_audio(self, media: Media, now: float) -> list[Action]:
        if media.stream_sid != self.stream_sid:
            if self.stream_sid is None:
                self._note_once("media-before-start", "dropped caller audio sent before 'start'")
            else:
                self._note_once("wrong-stream", "dropped audio for another stream")
            return []
        if self._goodbye is not None:
            return []  # the call is ending: nothing the caller says can change that
        payload = media.payload
        if len(payload) % 4 or not payload or _BASE64.fullmatch(payload) is None:
            self._note_once("bad-base64", "dropped caller audio that is not valid base64")
            return []
        if not self._audio_budget.take(len(payload), now):
            self._note_once("audio-flood", "caller audio faster than real time: dropped the excess")
            return []
        if self._to_backend is None:
            # The payload goes on as it came: no base64 or audio decoding per frame. It is
            # base64 (checked above), which needs no JSON escaping: a hostile payload cannot
            # inject fields into the Realtime event.
            text = _APPEND_PREFIX + payload + '"}'
        else:
            audio = self._to_backend.convert(base64.b64decode(payload))  # checked above
            # The base64 alphabet needs no JSON escaping.
            text = _APPEND_PREFIX + base64.b64encode(audio).decode() + '"}'
        if self.phase is Phase.BRIDGING:
            return [SendToRealtime(text)]
        if self.phase is Phase.CONNECTING or self.phase is Phase.RECONNECTING:
            self._frames_before_connect.append(text)
        return []

    def _on_mark_echo(self, name: str, now: float) -> None:
        if name not in self._pending_marks:
            return  # flushed by a clear (or not ours): it proves nothing was played
        # Twilio plays in order, so every mark queued before this one has played too.
        turn = self.turns[-1] if self.turns else None
        waiting_for = turn.first_mark if turn and turn.first_audio_heard_at is None else None
        while True:
            chunk = self._pending.popleft()
            self._pending_marks.discard(chunk.mark)
            item = self._items.get(chunk.item_id)
            if item is not None:
                item.heard = chunk.end
                self._forget_if_played(item)
            if turn is not None and chunk.mark == waiting_for:
                began = now - chunk.size / MULAW_BYTES_PER_SECOND
                sent = turn.first_audio_sent_at
                turn.first_audio_heard_at = began if sent is None else max(began, sent)
                if self.observer is not None:
                    self.observer.turn_heard(turn.first_audio_heard_at - turn.caller_stopped_at)
            if chunk.mark == name:
                break
        self._last_echo_at = now

    # --- Realtime side ---------------------------------------------------------------------

    def realtime_connected(self, now: float) -> list[Action]:
        """The Realtime socket is open: configure the session, restore the conversation if
        this replaces a lost one, then send the caller audio that waited."""
        if self.phase is not Phase.CONNECTING and self.phase is not Phase.RECONNECTING:
            return []
        restoring = self.phase is Phase.RECONNECTING
        self.phase = Phase.BRIDGING
        self._session_configured = False
        self._session_opened_at, self._session_created = now, False
        config = self.config
        update = session_update(self._session, config.dialect, config.audio_format)
        actions: list[Action] = [SendToRealtime(orjson.dumps(update).decode())]
        if restoring:
            assert self._lost_at is not None  # RECONNECTING is entered by _retire_session
            replay = self.conversation.replay(self.config.dialect)
            actions += [SendToRealtime(orjson.dumps(item).decode()) for item in replay]
            self.log.info(
                "new Realtime session after %.1f s: restored %d turns as text",
                now - self._lost_at,
                len(replay),
            )
            if self._resume_answer:  # kept until this session is configured: it may drop first
                resume = {
                    "type": "response.create",
                    "response": {"instructions": RESUME_INSTRUCTIONS},
                }
                self._response_requested = True
                actions.append(SendToRealtime(orjson.dumps(resume).decode()))
        self._anchor_session_audio(now)
        actions.extend(SendToRealtime(text) for text in self._frames_before_connect)
        self._frames_before_connect.clear()
        return actions

    def realtime_closed(self, reason: str, now: float) -> list[Action]:
        """The Realtime socket closed, or could not be opened.

        Lost mid-call, it is reopened with backoff and the conversation restored, for up to
        `reconnect_budget_s` (a restored session that drops again before it proved healthy
        keeps using the same budget); then, or if no session ever worked, the call ends
        with the apology. During a goodbye the call is hung up, never apologised."""
        if self.phase is Phase.ENDED:
            return []
        goodbye = self._goodbye
        if goodbye is not None:
            if goodbye.generated:
                return []  # it is playing: its marks (or the deadline) end the call
            if goodbye.response_id is not None:
                # Being spoken when the session went: what reached Twilio plays out first.
                goodbye.generated = True
                goodbye.deadline = self._after_queued_audio(now)
                return self._hang_up_once_goodbye_heard()
            # Unsaid, but the call still ends the way it was going to: hung up, or
            # transferred (a caller who asked for a person still gets one).
            return self._stop(goodbye.final_action())
        restoring = self._lost_at is not None
        if self.phase is Phase.BRIDGING and (self._session_configured or restoring):
            self.log.warning("Realtime session lost (%s): reconnecting", reason)
            self._retire_session(now)
        if self.phase is Phase.RECONNECTING:
            return self._reconnect_or_end(reason, now)
        self.log.error("Realtime session ended: %s", reason)
        return self._end(f"the Realtime session ended ({reason})")

    def _reconnect_or_end(self, reason: str, now: float) -> list[Action]:
        """Another attempt at a session if one can begin within the reconnect budget; if
        not, the call waits out the budget (the clock ends it then, with the apology)."""
        assert self._lost_at is not None  # set by _retire_session
        left = self._lost_at + self.config.reconnect_budget_s - now
        if left <= 0:
            return self._budget_spent(reason)
        delays = RECONNECT_DELAYS_S
        delay = delays[min(self._reconnect_attempts, len(delays) - 1)]
        if delay < left:
            return [self._next_reconnect(reason, left)]
        self.log.warning("Realtime session still lost (%s): no attempt fits the budget", reason)
        return []

    def _budget_spent(self, reason: str) -> list[Action]:
        self.log.error(
            "Realtime session could not be restored within %g s: %s",
            self.config.reconnect_budget_s,
            reason,
        )
        return self._end("the Realtime session was lost and could not be restored")

    def _next_reconnect(self, reason: str, give_up_after_s: float) -> ReconnectRealtime:
        delays = RECONNECT_DELAYS_S
        delay = delays[min(self._reconnect_attempts, len(delays) - 1)]
        self._reconnect_attempts += 1
        self.reconnects += 1
        if self.observer is not None:
            self.observer.reconnected()
        return ReconnectRealtime(delay, reason, give_up_after_s)

    def receive_realtime(self, text: str | bytes, now: float) -> list[Action]:
        """Handle one server event from the Realtime session."""
        if self.phase is not Phase.BRIDGING:
            return []
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError:
            self._note_once("bad-realtime-event", "dropped a Realtime event that is not JSON")
            return []
        if not isinstance(event, dict):
            self._note_once("bad-realtime-event", "dropped a Realtime event that is not an object")
            return []
        return self.handle_realtime_event(event, now)

    def handle_realtime_event(self, event: dict[str, Any], now: float) -> list[Action]:
        kind = canonical_event_type(str(event.get("type")))
        if kind == "response.output_audio.delta":
            return self._on_audio_delta(event, now)
        if kind == "input_audio_buffer.speech_started":
            self._caller_speaking = True
            return self._on_speech_started(now)
        if kind == "input_audio_buffer.speech_stopped":
            self._caller_speaking = False
            self._turn_begins(self._speech_ended_at(event.get("audio_end_ms"), now))
            return []
        if kind == "response.function_call_arguments.done":
            return self._on_function_call(event, now)
        if kind == "input_audio_buffer.committed":
            self.conversation.caller_spoke(str(event.get("item_id") or ""))
        elif kind == "conversation.item.input_audio_transcription.completed":
            self.usage.add_transcription(event.get("usage"))
            transcript = event.get("transcript")
            if isinstance(transcript, str):
                self.conversation.caller_transcript(str(event.get("item_id") or ""), transcript)
        elif kind == "response.output_audio_transcript.done":
            transcript = event.get("transcript")
            if isinstance(transcript, str) and event.get("item_id"):
                self.conversation.assistant_transcript(str(event["item_id"]), transcript)
        elif kind == "response.created":
            response = event.get("response") or {}
            self._active_response = response.get("id")
            self._response_requested = False
            goodbye = self._goodbye
            # Only ours: a server-VAD answer already on its way may be created first.
            if (
                goodbye is not None
                and goodbye.requested
                and goodbye.response_id is None
                and response.get("metadata") == GOODBYE_METADATA
            ):
                goodbye.response_id = self._active_response
        elif kind == "response.output_audio.done":
            item = self._items.get(event.get("item_id", ""))
            if item is not None:
                item.audio_done = True
                self._forget_if_played(item)
        elif kind == "response.done":
            response = event.get("response") or {}
            self.usage.add_response_done(response)
            return self._on_response_done(response, now)
        elif kind == "session.created" or kind == "session.updated":
            self._session_created = True  # (a session.updated implies it)
            session = event.get("session") or {}
            model = session.get("model")
            if isinstance(model, str) and model:
                self.session_model = model
            if kind == "session.updated":
                return self._on_session_updated(session, now)
        elif kind == "error":
            error = event.get("error") or {}
            code, message = error.get("code") or error.get("type"), error.get("message")
            if not self._session_configured:
                # The session.update was refused: the session would read mu-law as PCM and
                # play PCM as noise. End the call so the caller hears the TwiML apology.
                self.log.error("Realtime refused the session configuration: %s: %s", code, message)
                return self._end("the Realtime session refused its configuration")
            self.log.warning("Realtime error %s: %s", code, message)
            self.backend_errors += 1
            if self.observer is not None:
                self.observer.backend_error(str(code))
            if self._response_requested:
                # Our response.create was refused: ask again once the response that was in
                # the way is done, so what it was for (a tool output, keys) gets its answer.
                self._response_requested = False
                self._response_owed = code == "conversation_already_has_active_response"
        elif kind == "conversation.item.truncated":
            self.log.info(
                "Realtime confirmed truncation of %s at %s ms",
                event.get("item_id"),
                event.get("audio_end_ms"),
            )
        return []

    def _on_session_updated(self, session: dict[str, Any], now: float) -> list[Action]:
        fmt = self.config.audio_format
        if not formats_confirmed(session, self.config.dialect, fmt):
            self.log.error(
                "Realtime session did not take %s both ways: %s",
                fmt.value,
                session.get("audio") or session.get("output_audio_format"),
            )
            return self._end(f"the Realtime session did not take the {fmt.value} audio format")
        self._auto_interrupt = interrupts_by_itself(session, self.config.dialect)
        if self._session_configured:
            return []
        self._session_configured = True
        self._configured_at = now
        self._resume_answer = False  # a resume request sent with the config has landed
        if self.config.greeting and not self._greeted:
            self._greeted = True
            self._response_requested = True
            return [SendToRealtime(orjson.dumps(greeting_request(self.config.greeting)).decode())]
        return []

    def _on_response_done(self, response: dict[str, Any], now: float) -> list[Action]:
        response_id = response.get("id")
        if response_id == self._active_response:
            self._active_response = None
        # No delta of a finished response can follow, so it need not be remembered.
        self._interrupted_responses.discard(response_id)
        if response.get("status") == "failed":
            self.log.warning("response %s failed: %s", response_id, response.get("status_details"))
        self._responses_with_audio.discard(response_id)
        goodbye = self._goodbye
        if goodbye is None:
            if self._response_owed and self._active_response is None:
                self._response_owed = False
                if self._caller_speaking and self._auto_interrupt:
                    return []  # server VAD answers once they stop, with what waited in view
                self._response_requested = True
                return [SendToRealtime('{"type":"response.create"}')]
            return []
        if not goodbye.requested and self._active_response is None:
            return self._request_goodbye()  # the cancelled answer is out of the way
        if response_id is not None and response_id == goodbye.response_id:
            goodbye.generated = True
            # It may be long, and behind other audio: it gets the time to be heard.
            goodbye.deadline = max(goodbye.deadline, self._after_queued_audio(now))
            return self._hang_up_once_goodbye_heard()
        return []

    def _on_audio_delta(self, event: dict[str, Any], now: float) -> list[Action]:
        # A gateway may leave response_id out; the response in progress is the one speaking.
        response_id = event.get("response_id") or self._active_response or ""
        if response_id in self._interrupted_responses:
            return []  # the caller interrupted it: nothing more of it may play
        if not self._session_configured:
            self._note_once(
                "audio-before-config", "dropped model audio sent before session.updated"
            )
            return []
        delta = event.get("delta")
        if not isinstance(delta, str):
            return []
        if self._to_caller is None:
            size = decoded_length(delta)
        else:
            try:
                audio = self._to_caller.convert(base64.b64decode(delta, validate=True))
            except (binascii.Error, ValueError):
                self._note_once("bad-delta", "dropped model audio that is not valid base64")
                return []
            size = len(audio)
            delta = base64.b64encode(audio).decode()
        if size == 0:
            return []
        item_id = str(event.get("item_id") or "")
        item = self._items.get(item_id)
        if item is None:
            stem = orjson.dumps(item_id).decode()[1:-1] + ":"
            content_index = event.get("content_index")
            content_index = content_index if isinstance(content_index, int) else 0
            item = self._items[item_id] = _Item(item_id, response_id, content_index, stem)
            if item_id:
                self.conversation.assistant_spoke(item_id)
            if response_id:  # once per item, not per delta
                self._responses_with_audio.add(response_id)
        item.sent += size
        offset = str(item.sent)
        mark = item_id + ":" + offset
        self._pending.append(_Chunk(mark, item_id, item.sent, size, now))
        self._pending_marks.add(mark)
        turn = self.turns[-1] if self.turns else None
        if (
            turn is not None
            and turn.first_audio_sent_at is None
            and response_id != turn.earlier_response
        ):
            turn.first_audio_sent_at, turn.first_mark = now, mark
            if self.observer is not None:
                self.observer.turn_answered(now - turn.caller_stopped_at)
        # Realtime's base64 alphabet needs no JSON escaping, so the delta is spliced in as is.
        return [
            SendToTwilio(self._media_prefix + delta + '"}}'),
            SendToTwilio(self._mark_prefix + item.json_stem + offset + '"}}'),
        ]

    # --- barge-in --------------------------------------------------------------------------

    def _playing_offset(self, chunk: _Chunk, now: float) -> int:
        """Bytes of `chunk` played by `now`: from the moment it started, capped at its size."""
        started = max(self._last_echo_at, chunk.sent_at)
        # The epsilon keeps float error (0.125 - 0.1 = 0.02499...) from losing a byte.
        played = int((now - started) * MULAW_BYTES_PER_SECOND + 1e-6)
        return chunk.end - chunk.size + min(max(played, 0), chunk.size)

    def _heard_ms(self, item: _Item) -> int:
        """The ms of the item's own audio the caller heard: its mu-law bytes played, less
        the resampler's delay when transcoding (the model's audio reaches the caller that
        much later than the byte count says)."""
        heard_ms = min(item.heard, item.sent) / MULAW_BYTES_PER_MS
        if self._to_caller is not None:
            heard_ms -= self._to_caller.delay_ms
        return max(int(heard_ms), 0)

    def _on_speech_started(self, now: float) -> list[Action]:
        if self._goodbye is not None:
            return []  # VAD is being turned off: nothing interrupts the goodbye
        if self._playing_local_audio():
            # The far end's menu talking while our keys play is not a caller barging in:
            # clearing Twilio's queue would lose the keys.
            return []
        return self._interrupt(now, cancel_always=False)

    def _interrupt(self, now: float, cancel_always: bool) -> list[Action]:
        """Stop the assistant where the caller is: clear Twilio's queue, truncate what was
        not heard, drop the rest of the answer, and cancel it if the session will not."""
        actions: list[Action] = []
        if self._to_caller is not None:
            self._to_caller.reset()  # no tail of the interrupted answer starts the next one
        cleared = bool(self._pending)
        if cleared:
            head = self._pending[0]
            playing = self._items.get(head.item_id)
            if playing is not None:
                playing.heard = self._playing_offset(head, now)
            actions.append(SendToTwilio(self._clear_text))
            self._echoes_owed += len(self._pending)
            self._pending.clear()
            self._pending_marks.clear()
        cancelled = None
        active = self._active_response
        if active is not None:
            self._interrupted_responses.add(active)
            wants_cancel = cancel_always or not self._auto_interrupt
            if wants_cancel and self._cancel_sent_for != active:
                # Cancel before truncating, so the item is not still growing when cut.
                self._cancel_sent_for = cancelled = active
                actions.append(SendToRealtime('{"type":"response.cancel"}'))
        truncations = []
        # Whatever is left in _items now has audio the caller did not hear in full: a
        # queued item, or one whose audio the model had not finished (it may hold more).
        for item in self._items.values():
            if item.response_id:
                self._interrupted_responses.add(item.response_id)
            if (item.heard == item.sent and item.audio_done) or not item.item_id or item.local:
                continue  # heard in full, or nothing to name in a truncate
            audio_end_ms = self._heard_ms(item)
            truncation = Truncation(item.item_id, audio_end_ms, item.sent / MULAW_BYTES_PER_MS)
            truncations.append(truncation)
            self.conversation.assistant_cut(item.item_id, audio_end_ms, truncation.sent_ms)
            if item.orphaned:
                continue  # the session that made it is gone; only the memory is told
            actions.append(
                SendToRealtime(
                    orjson.dumps(
                        {
                            "type": "conversation.item.truncate",
                            "item_id": item.item_id,
                            "content_index": item.content_index,
                            "audio_end_ms": audio_end_ms,
                        }
                    ).decode()
                )
            )
            if cleared:
                self._echoes_owed += 1
                # Tells whoever plays Twilio's part (the simulator, Twilio's debugger) where
                # the bridge cut; its echo is ignored like any mark not in the queue.
                actions.append(
                    SendToTwilio(
                        self._mark_prefix
                        + TRUNCATION_MARK_PREFIX
                        + item.json_stem
                        + str(audio_end_ms)
                        + '"}}'
                    )
                )
        self._items.clear()
        if (cleared or truncations or cancelled) and not cancel_always:  # caller barge-ins only
            self.barge_ins.append(BargeIn(now, cleared, tuple(truncations), cancelled))
            heard_ms = truncations[0].audio_end_ms if truncations else None
            if self.turns and self.turns[-1].first_audio_sent_at is not None:
                self.turns[-1].barged_in = True
                self.turns[-1].truncated_at_ms = heard_ms
            if self.observer is not None:
                self.observer.barged_in(heard_ms)
            for t in truncations:
                self.log.info(
                    "barge-in: truncated %s at %d ms of %.0f ms sent",
                    t.item_id,
                    t.audio_end_ms,
                    t.sent_ms,
                )
        return actions

    # --- time and goodbyes -----------------------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        """The clock: call it every fraction of a second for time limits to apply."""
        if self.phase is Phase.ENDED:
            return []
        if self._opened_at is None:
            self._opened_at = now
        if self.phase is Phase.AWAITING_START:
            if now - self._opened_at >= self.config.start_timeout_s:
                self._note_once("no-start", "no 'start' from Twilio in time: closing the socket")
                return self._end("no 'start' message arrived")
            return []
        if (
            self._lost_at is not None
            and self._session_configured
            and self._configured_at is not None
            and now - self._configured_at >= HEALTHY_AFTER_S
        ):
            self._lost_at, self._reconnect_attempts = None, 0  # restored, and it holds
        if (
            self._lost_at is not None
            and not self._session_configured
            and now - self._lost_at >= self.config.reconnect_budget_s
        ):
            # Between sessions, or a new one not configured yet: the budget is a bound.
            return self._budget_spent("its time is up")
        if self.phase is Phase.BRIDGING and not self._session_configured:
            actions = self._check_session_setup(now)
            if actions:
                return actions
        goodbye = self._goodbye
        if goodbye is not None:
            if now >= goodbye.deadline:
                self.log.warning("the goodbye was not heard in time; ending the call regardless")
                return self._stop(goodbye.final_action())
            return []
        limit = self.config.max_duration_s
        if limit and self._started_at is not None and now - self._started_at >= limit:
            return self.say_goodbye(self.config.time_limit_message, "time limit reached", now)
        if self._keys and now - self._key_at >= self.config.keypad_pause_s:
            return self._give_keys_to_model(now)  # (empty while no session can take them)
        return self._maybe_roll_over(now)

    def _check_session_setup(self, now: float) -> list[Action]:
        """A session that accepted the socket and then says nothing would leave the caller
        in dead air: past the setup timeout it counts as lost."""
        opened_at = self._session_opened_at
        timeout = self.config.session_setup_timeout_s
        if opened_at is None or now - opened_at < timeout:
            return []
        missing = "session.updated" if self._session_created else "session.created"
        reason = f"no {missing} within {timeout:g} s of connecting"
        self.log.warning("Realtime session gave %s: replacing it", reason)
        self._retire_session(now)
        return self._reconnect_or_end(reason, now)

    def _maybe_roll_over(self, now: float) -> list[Action]:
        """Replace a session nearing the service's length limit, at a quiet moment: no
        answer being generated or played. Past the grace period, regardless."""
        after = self.config.rollover_after_s
        configured_at = self._configured_at
        if not after or not self._session_configured or configured_at is None:
            return []
        age = now - configured_at
        # Not mid-answer, and not mid-sentence: the old session has heard its start.
        quiet = (
            self._active_response is None
            and not self._pending
            and not self._caller_speaking
            and not self.conversation.caller_spoke_last  # an answer is about to start
            and not self._tools_running  # their call_ids belong to this session
            and not self._keys
            and not self._response_owed
            and not self._response_requested
        )
        if age < after or (not quiet and age < after + self.config.rollover_grace_s):
            return []
        self.log.info("rolling over to a new Realtime session after %.0f s", age)
        self._retire_session(now)
        return self._reconnect_or_end("session rollover", now)

    def _retire_session(self, now: float) -> None:
        """Leave the session in use (lost, or being replaced) for a new one.

        Audio already sent to Twilio plays on, so the caller hears no gap while the new
        session opens. Its items stay tracked, so a barge-in still clears it and records
        what was heard, but they can no longer be truncated on the server."""
        self._resume_answer = (
            self._resume_answer  # a restore that dropped before its resume landed
            or self._active_response is not None
            or self.conversation.caller_spoke_last
        )
        for item in list(self._items.values()):
            item.orphaned = True
            item.audio_done = True  # nothing more of it will arrive
            self._forget_if_played(item)
        self._active_response = self._cancel_sent_for = None
        self._interrupted_responses.clear()
        self._responses_with_audio.clear()
        self._response_owed = False
        self._response_requested = False
        # Tools still running were called by the session now gone: the new one does not
        # know their call_ids, so their results will reach it as messages instead.
        self._orphaned_tools |= self._tools_running
        self._tools_running = set()
        self._caller_speaking = False
        self.phase = Phase.RECONNECTING
        self._session_configured = False
        if self._lost_at is None:  # a restore that failed again keeps its budget and backoff
            self._lost_at = now
            self._reconnect_attempts = 0

    def say_goodbye(self, text: str, reason: str, now: float) -> list[Action]:
        """End the call politely: stop the current answer, speak `text` with nothing able to
        interrupt it, and hang up once the caller has heard it (or at the deadline)."""
        if self.phase is Phase.ENDED or self._goodbye is not None:
            return []
        if self.phase is not Phase.BRIDGING or not self._session_configured:
            return self._hang_up(reason)  # no session to say it with
        self.log.info("ending the call with a goodbye: %s", reason)
        instructions = GOODBYE_LEAD + text
        actions = self._interrupt(now, cancel_always=True)
        return actions + self._begin_last_words(_Goodbye(reason, instructions, now), None)

    def _begin_last_words(self, goodbye: _Goodbye, spoken_by: str | None) -> list[Action]:
        """Make `goodbye` the last thing the caller hears. `spoken_by`: the response that
        already says it (the model said goodbye, then called end_call); else it is asked
        for once no response is active."""
        goodbye.deadline = self._after_queued_audio(goodbye.deadline)
        self._goodbye = goodbye
        self._response_owed = False
        # With turn detection off, the caller talking cannot cancel it.
        off = turn_detection_off(self.config.dialect)
        actions: list[Action] = [SendToRealtime(orjson.dumps(off).decode())]
        if spoken_by is not None:
            goodbye.requested, goodbye.response_id = True, spoken_by
        elif self._active_response is None:
            actions += self._request_goodbye()
        return actions

    def _request_goodbye(self) -> list[Action]:
        assert self._goodbye is not None
        self._goodbye.requested = True
        self._response_requested = True
        request = {
            "type": "response.create",
            "response": {
                "instructions": self._goodbye.instructions,
                "metadata": GOODBYE_METADATA,
            },
        }
        return [SendToRealtime(orjson.dumps(request).decode())]

    def _after_queued_audio(self, now: float) -> float:
        """A goodbye's deadline: once what Twilio still has queued could have played, plus
        the goodbye timeout."""
        queued_s = sum(chunk.size for chunk in self._pending) / MULAW_BYTES_PER_SECOND
        return now + queued_s + self.config.goodbye_timeout_s

    def _hang_up_once_goodbye_heard(self) -> list[Action]:
        goodbye = self._goodbye
        if goodbye is not None and goodbye.generated and not self._pending:
            return self._stop(goodbye.final_action())
        return []

    # --- tools -----------------------------------------------------------------------------

    def _on_function_call(self, event: dict[str, Any], now: float) -> list[Action]:
        call_id = event.get("call_id")
        if not isinstance(call_id, str) or not call_id:
            self._note_once("bad-function-call", "ignored a function call without a call_id")
            return []
        name = str(event.get("name") or "")
        arguments = event.get("arguments")
        arguments = arguments if isinstance(arguments, str) else "{}"
        response_id = event.get("response_id") or self._active_response
        if self._goodbye is not None:
            # The call is ending: nothing more is done, but the model's call is answered.
            return self._tool_output(call_id, '{"error": "the call is ending"}', respond=False)
        if response_id in self._interrupted_responses:
            # The caller talked over the answer that made this call: it is not carried out.
            output = '{"error": "not done: the caller interrupted"}'
            return self._tool_output(call_id, output, respond=False)
        if name in self._builtins:
            if name == END_CALL:
                return self._end_call_tool(call_id, response_id, now)
            if name == TRANSFER_CALL:
                return self._transfer_tool(call_id, arguments, now)
            return self._send_dtmf_tool(call_id, arguments, now)
        if name in self._user_tools:
            self._tools_running.add(call_id)
            self.log.info("running tool %s", name)  # never its arguments: personal data
            return [RunTool(call_id, name, arguments)]
        self.log.warning("the model called an unknown tool %r", name[:64])
        output = orjson.dumps({"error": f"there is no tool named {name!r}"}).decode()
        return self._tool_output(call_id, output, respond=True)

    def tool_finished(self, call_id: str, output: str, now: float) -> list[Action]:
        """An operator's tool returned `output` (a JSON string): give it to the model and
        let it go on."""
        if call_id in self._orphaned_tools:
            self._orphaned_tools.discard(call_id)
            return self._orphaned_tool_output(output)
        if call_id not in self._tools_running:
            return []  # answered already, or the call is over
        self._tools_running.discard(call_id)
        if self.phase is not Phase.BRIDGING:
            return []
        return self._tool_output(call_id, output, respond=self._goodbye is None)

    def _orphaned_tool_output(self, output: str) -> list[Action]:
        """A result for a session that is gone: the new session gets it as a message (its
        call_id would be refused), and goes on from it."""
        if self.phase is not Phase.BRIDGING or self._goodbye is not None:
            return []
        item = {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "system",
                "content": [{"type": "input_text", "text": ORPHANED_TOOL_MESSAGE + output}],
            },
        }
        return [SendToRealtime(orjson.dumps(item).decode()), *self._want_response()]

    def _tool_output(self, call_id: str, output: str, respond: bool) -> list[Action]:
        item = {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": output},
        }
        actions: list[Action] = [SendToRealtime(orjson.dumps(item).decode())]
        return actions + self._want_response() if respond else actions

    def _want_response(self) -> list[Action]:
        """A response.create now, or once the active response is done (asking while one
        is active is an error)."""
        if self._active_response is None and not self._response_requested:
            self._response_requested = True
            return [SendToRealtime('{"type":"response.create"}')]
        self._response_owed = True
        return []

    def _end_call_tool(self, call_id: str, response_id: str | None, now: float) -> list[Action]:
        """The model ends the call. Its goodbye is normally in the same response, before
        the call: the call is hung up once the caller has heard that response. A model
        that said nothing is asked for a goodbye first."""
        self.log.info("the assistant ended the call")
        actions = self._tool_output(call_id, '{"ok": true}', respond=False)
        spoke = response_id if response_id in self._responses_with_audio else None
        goodbye = _Goodbye("the assistant ended the call", OWN_GOODBYE_INSTRUCTIONS, now)
        return actions + self._begin_last_words(goodbye, spoke)

    def _transfer_tool(self, call_id: str, arguments: str, now: float) -> list[Action]:
        """A cold transfer: the caller hears the handoff line, then Twilio dials the
        destination in place of this stream."""
        destinations = self.config.transfer_twiml
        try:
            destination = orjson.loads(arguments).get("destination")
        except (orjson.JSONDecodeError, AttributeError):
            destination = None
        if destination is None and len(destinations) == 1:
            destination = next(iter(destinations))
        twiml = destinations.get(destination) if isinstance(destination, str) else None
        if twiml is None:
            error = "unknown destination; choose one of: " + ", ".join(destinations)
            return self._tool_output(call_id, orjson.dumps({"error": error}).decode(), True)
        reason = f"transferred to {destination}"
        self.log.info("the assistant is transferring the call to %s", destination)
        output = orjson.dumps({"ok": True, "transferring_to": destination}).decode()
        actions = self._tool_output(call_id, output, respond=False)
        goodbye = _Goodbye(reason, GOODBYE_LEAD + self.config.transfer_message, now)
        goodbye.then = TransferCall(twiml, reason)
        return actions + self._begin_last_words(goodbye, None)

    def _send_dtmf_tool(self, call_id: str, arguments: str, now: float) -> list[Action]:
        """Press keys on the far end's phone menu: DTMF tones played into the call. The
        model is not asked to go on: the menu answers, and server VAD hears it."""
        try:
            digits = orjson.loads(arguments).get("digits")
        except (orjson.JSONDecodeError, AttributeError):
            digits = None
        if not isinstance(digits, str) or not digits or not valid_digits(digits):
            error = '{"error": "digits must be keys 0-9 * # A-D, and w for a 0.5 s pause"}'
            return self._tool_output(call_id, error, respond=True)
        actions = self._tool_output(call_id, '{"ok": true}', respond=False)
        self.log.info("playing %d keypad tones", len(digits))  # never the digits
        return actions + self._play_local_audio(dtmf_mulaw(digits), now)

    def _play_local_audio(self, mulaw: bytes, now: float) -> list[Action]:
        """Queue audio the bridge made itself after whatever is playing, with marks, so
        the accounting (and a goodbye's wait) sees it like the model's."""
        self._local_audio += 1
        item_id = f"bridge-audio-{self._local_audio}"
        stem = item_id + ":"
        item = self._items[item_id] = _Item(item_id, "", 0, stem, local=True)
        item.audio_done = True
        actions: list[Action] = []
        step = DTMF_CHUNK_MS * MULAW_BYTES_PER_MS
        for start in range(0, len(mulaw), step):
            chunk = mulaw[start : start + step]
            item.sent += len(chunk)
            mark = stem + str(item.sent)
            self._pending.append(_Chunk(mark, item_id, item.sent, len(chunk), now))
            self._pending_marks.add(mark)
            payload = base64.b64encode(chunk).decode()
            actions.append(SendToTwilio(self._media_prefix + payload + '"}}'))
            actions.append(SendToTwilio(self._mark_prefix + mark + '"}}'))
        return actions

    def _playing_local_audio(self) -> bool:
        return any(self._items[c.item_id].local for c in self._pending if c.item_id in self._items)

    def _turn_begins(self, caller_stopped_at: float) -> None:
        """The caller finished a turn: its answer's latency is timed from the end of their
        speech. (Not during a goodbye: nothing after it answers them.)"""
        if self._goodbye is None:
            turn = TurnClock(len(self.turns) + 1, caller_stopped_at)
            turn.earlier_response = self._active_response  # its audio is not this answer
            self.turns.append(turn)

    def _anchor_session_audio(self, now: float) -> None:
        """Place the new session's input audio on the call's clock, once, as it opens.

        Its audio buffer starts with the frames kept while it connected, and the newest of
        those ended when it arrived (a frame leaves the phone once its audio is captured);
        with none kept, the buffer starts at the next frame, i.e. where the newest one
        ended, or at the stream's start. Twilio sends in real time, so from there the
        buffer's milliseconds run with the clock: nothing needs counting per frame.
        """
        kept_bytes = sum(
            decoded_length(text[len(_APPEND_PREFIX) : -2]) for text in self._frames_before_connect
        )
        kept_s = kept_bytes / (bytes_per_ms(self.config.audio_format) * 1000)
        newest = self._audio_budget.at  # when the newest caller frame arrived
        if newest is None:
            newest = self._started_at if self._started_at is not None else now
        self._session_audio_origin = newest - kept_s

    def _speech_ended_at(self, audio_end_ms: object, now: float) -> float:
        """The end of the caller's speech on the call's clock, from speech_stopped's
        `audio_end_ms` (ms into the session's input audio, including the silence the VAD
        waited for before deciding). `now`, when it was heard of, without it."""
        origin = self._session_audio_origin
        if origin is None or not isinstance(audio_end_ms, int | float):
            return now
        if isinstance(audio_end_ms, bool) or not math.isfinite(audio_end_ms):
            return now
        ended = origin + (audio_end_ms - self._session.vad_silence_ms) / 1000
        # Never later than the news of it, nor before the session's audio began.
        return min(max(ended, origin), now)

    def note_unheard_answers(self) -> None:
        """The call is over: answers still playing when it ended were heard only in part,
        and the conversation (the call's transcript) says so, as after a barge-in."""
        for item in self._items.values():
            if not item.local and item.item_id and item.heard < item.sent:
                self.conversation.assistant_cut(
                    item.item_id, self._heard_ms(item), item.sent / MULAW_BYTES_PER_MS
                )

    # --- keypad ----------------------------------------------------------------------------

    def _on_key(self, digit: str, now: float) -> list[Action]:
        """Keys the caller pressed are collected until # or a pause, then given to the model
        as a message. Digits may be PINs or card numbers: never logged."""
        if self._goodbye is not None or len(digit) != 1 or digit not in "0123456789*#ABCD":
            return []
        actions: list[Action] = []
        if not self._keys and self.phase is Phase.BRIDGING:
            # Pressing keys while the assistant talks is a barge-in (no speech for VAD).
            actions += self._interrupt(now, cancel_always=True)
        self._keys += digit
        self._key_at = now
        if digit == "#" or len(self._keys) >= MAX_KEYS:
            actions += self._give_keys_to_model(now)
        return actions

    def _give_keys_to_model(self, now: float) -> list[Action]:
        if self.phase is not Phase.BRIDGING or not self._session_configured:
            return []  # kept until a session can take them (the clock retries)
        keys, self._keys = self._keys, ""
        self._keys_entered += 1
        self._turn_begins(self._key_at)  # the caller's last key ends their turn
        text = KEYPAD_MESSAGE.format(keys=keys)
        item_id = f"{KEYPAD_ITEM_PREFIX}{self._keys_entered}"
        self.conversation.caller_spoke(item_id)
        self.conversation.caller_transcript(item_id, text)
        self.log.info("caller entered %d keys", len(keys))
        item = {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": text}],
            },
        }
        return [SendToRealtime(orjson.dumps(item).decode()), *self._want_response()]

    # --- helpers ---------------------------------------------------------------------------

    def _forget_if_played(self, item: _Item) -> None:
        """An item complete and heard in full needs no more accounting: nothing to truncate."""
        if item.audio_done and item.heard == item.sent:
            del self._items[item.item_id]

    def _end(self, reason: str) -> list[Action]:
        return self._stop(EndCall(reason))

    def _hang_up(self, reason: str) -> list[Action]:
        return self._stop(HangUp(reason))

    def _stop(self, action: EndCall | HangUp) -> list[Action]:
        """The call is over: whichever way it ends, it ends once."""
        if self.phase is Phase.ENDED:
            return []
        self.phase = Phase.ENDED
        return [action]

    def _note_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._noted:
            self._noted.add(key)
            self.log.warning(message, *args)
