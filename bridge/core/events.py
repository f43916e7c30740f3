"""What happens to a call, as the call core hears of it: one family of typed events.

Three sources feed a call, each through its own decoder, and the core never sees a byte of
JSON: Twilio's Media Streams messages (`bridge.wire.twilio`), the Realtime session's server
events (`bridge.wire.realtime`, one codec per dialect, both giving the same events), and
the I/O adapter, which reports what happened to the sockets, the tools and the clock.

Events are frozen, slotted dataclasses, except the three that arrive with every 20 ms of
audio (`CallerAudio`, `MarkPlayed`, `AudioDelta`): building a frozen dataclass costs about
2.5 times a plain one (its `__init__` goes through `object.__setattr__`), which on the audio
path is measurable (bench/core_hot_path.py). They are never changed after they are made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.transcode import AudioFormat

# --- from Twilio's Media Streams socket ------------------------------------------------------


@dataclass(slots=True, frozen=True)
class StreamConnected:
    """Twilio's first message on the socket (`connected`): nothing to do but count it."""


@dataclass(slots=True, frozen=True)
class StreamStarted:
    """`start`: the call's identity and the parameters its TwiML passed."""

    stream_sid: str
    call_sid: str
    account_sid: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000


@dataclass(slots=True)
class CallerAudio:
    """A `media` frame: the caller's audio as Twilio sent it (base64 mu-law, unchecked)."""

    stream_sid: str
    payload: str


@dataclass(slots=True)
class MarkPlayed:
    """A `mark` came back: the audio sent before it has played (or a `clear` dropped it)."""

    stream_sid: str
    name: str


@dataclass(slots=True, frozen=True)
class KeyPressed:
    """A `dtmf` message: the caller pressed a key."""

    stream_sid: str
    digit: str


@dataclass(slots=True, frozen=True)
class StreamStopped:
    """`stop`: the caller hung up (or the call moved on)."""

    stream_sid: str


@dataclass(slots=True, frozen=True)
class TwilioMessageInvalid:
    """A message from Twilio's side that cannot be acted on (not JSON, a field missing)."""

    problem: str


TwilioEvent = (
    StreamConnected
    | StreamStarted
    | CallerAudio
    | MarkPlayed
    | KeyPressed
    | StreamStopped
    | TwilioMessageInvalid
)


# --- from the Realtime session ---------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class SessionCreated:
    model: str | None = None


@dataclass(slots=True, frozen=True)
class SessionUpdated:
    """The session confirmed a configuration: what it says it does now."""

    model: str | None = None
    # Each way, the format it stated: one the bridge knows, a description of one it does
    # not ("audio/pcm at 16000 Hz"), or None when it did not say.
    input_format: AudioFormat | str | None = None
    output_format: AudioFormat | str | None = None
    # It cancels its own answer when the caller starts talking (server VAD with
    # interrupt_response): read from what it confirmed, not from what was asked.
    interrupts_by_itself: bool = True


@dataclass(slots=True, frozen=True)
class SpeechStarted:
    """The session's voice detection heard the caller start talking: `audio_start_ms`
    into the session's input audio (its prefix padding included), when the session says."""

    audio_start_ms: float | None = None


@dataclass(slots=True, frozen=True)
class SpeechStopped:
    """... and stop: `audio_end_ms` into the session's input audio (the silence the
    detector waited for included), when the session says."""

    audio_end_ms: float | None = None


@dataclass(slots=True, frozen=True)
class InputCommitted:
    """The caller's audio became a conversation item."""

    item_id: str


@dataclass(slots=True, frozen=True)
class CallerTranscribed:
    item_id: str
    transcript: str | None
    usage: object = None  # the transcription model's usage report, as sent


@dataclass(slots=True, frozen=True)
class AssistantTranscribed:
    item_id: str
    transcript: str


@dataclass(slots=True, frozen=True)
class ResponseCreated:
    response_id: str | None
    purpose: str | None = None  # what the bridge asked it for (a goodbye), if it did


@dataclass(slots=True)
class AudioDelta:
    """A piece of the model's spoken answer (base64, in the session's output format)."""

    response_id: str | None
    item_id: str
    content_index: int
    audio: str


@dataclass(slots=True, frozen=True)
class AudioDone:
    """An item's audio is complete (also sent when its response was cancelled)."""

    item_id: str


@dataclass(slots=True, frozen=True)
class ResponseDone:
    response_id: str | None
    status: str | None = None
    status_details: object = None
    usage: object = None  # the model's usage report, as sent


@dataclass(slots=True, frozen=True)
class FunctionCallRequested:
    call_id: str | None
    name: str
    arguments: str  # a JSON string, as the model wrote it
    response_id: str | None = None


@dataclass(slots=True, frozen=True)
class BackendError:
    code: str | None
    message: str | None = None


@dataclass(slots=True, frozen=True)
class ItemTruncated:
    """The session confirmed a truncation."""

    item_id: str | None
    audio_end_ms: object = None


@dataclass(slots=True, frozen=True)
class BackendEventInvalid:
    """A server event that is not a JSON object."""

    problem: str


BackendEvent = (
    SessionCreated
    | SessionUpdated
    | SpeechStarted
    | SpeechStopped
    | InputCommitted
    | CallerTranscribed
    | AssistantTranscribed
    | ResponseCreated
    | AudioDelta
    | AudioDone
    | ResponseDone
    | FunctionCallRequested
    | BackendError
    | ItemTruncated
    | BackendEventInvalid
)


# --- from the I/O adapter ----------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class StreamRefused:
    """The stream's start was not admitted: its token was refused (`token=True`), or no
    line is free for it, or the call has a stream already."""

    why: str
    token: bool = False


@dataclass(slots=True, frozen=True)
class TwilioClosed:
    """Twilio's socket is gone; `stalled`: dropped because it stopped reading."""

    stalled: bool = False


@dataclass(slots=True, frozen=True)
class BackendOpened:
    """The Realtime socket asked for (OpenBackend, ReconnectBackend) is open."""


@dataclass(slots=True, frozen=True)
class BackendClosed:
    """The Realtime socket closed, or could not be opened."""

    why: str


@dataclass(slots=True, frozen=True)
class BackendFellBehind:
    """The Realtime side stopped taking what the bridge sends (too much unsent)."""


@dataclass(slots=True, frozen=True)
class ToolFinished:
    """An operator's tool (RunTool) returned `output`, a JSON string."""

    call_id: str
    output: str


@dataclass(slots=True, frozen=True)
class Tick:
    """The clock: a few times a second, for deadlines and time limits to apply."""


@dataclass(slots=True, frozen=True)
class ShutdownRequested:
    """The server is shutting down: end the call politely, saying `message`."""

    message: str


AdapterEvent = (
    StreamRefused
    | TwilioClosed
    | BackendOpened
    | BackendClosed
    | BackendFellBehind
    | ToolFinished
    | Tick
    | ShutdownRequested
)

Event = TwilioEvent | BackendEvent | AdapterEvent

TICK = Tick()
