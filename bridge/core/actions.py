"""What the call core decides, as typed actions for the I/O adapter to carry out.

Messages for either socket are actions with data, never wire text: the codecs
(`bridge.wire.twilio`, `bridge.wire.realtime`) render them, so the core knows nothing of
JSON or of the Realtime dialect. The adapter carries out a list of actions in order.

Like the events, actions are frozen, slotted dataclasses but for the two made per 20 ms of
audio (`AppendAudio`, `PlayAudio`), for the same reason: building a frozen one costs 2.5 times
as much. Nothing changes them once made.

How a call ends is an `Ending` action, naming an `EndReason`: the reason decides the
outcome that metrics count and records keep, and the close code the stream gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.core.call_config import SessionSettings
    from bridge.core.events import StreamStarted
    from bridge.transcode import AudioFormat


class CallOutcome(StrEnum):
    """How a call ended, in a word: the `outcome` label of phone_bridge_calls_total and the
    outcome a call record keeps."""

    CALLER_HUNG_UP = "caller_hung_up"
    # Twilio's side stopped reading: the call was dropped so as not to hold its line.
    TWILIO_STALLED = "twilio_stalled"
    ASSISTANT_ENDED = "assistant_ended"
    TRANSFERRED = "transferred"
    TIME_LIMIT = "time_limit"
    CALLER_IDLE = "caller_idle"  # the caller said nothing, even when asked: hung up on
    BACKEND_FAILED = "backend_failed"
    REFUSED = "refused"
    SHUTDOWN = "shutdown"
    ERROR = "error"
    OTHER = "other"


class EndReason(Enum):
    """Why a call ended: its words (with a detail where one says more) and its outcome."""

    CALLER_HUNG_UP = ("the caller hung up", CallOutcome.CALLER_HUNG_UP)
    # Twilio closed the socket without a "stop": the caller's leg went away all the same.
    TWILIO_CLOSED = ("the Twilio stream closed", CallOutcome.CALLER_HUNG_UP)
    TWILIO_STALLED = ("Twilio's side stopped reading", CallOutcome.TWILIO_STALLED)
    ASSISTANT_ENDED = ("the assistant ended the call", CallOutcome.ASSISTANT_ENDED)
    TRANSFERRED = ("transferred to {}", CallOutcome.TRANSFERRED)
    TIME_LIMIT = ("time limit reached", CallOutcome.TIME_LIMIT)
    CALLER_IDLE = ("the caller stayed silent", CallOutcome.CALLER_IDLE)
    SHUTDOWN = ("the server is shutting down", CallOutcome.SHUTDOWN)
    FLOODED = ("flooded with messages", CallOutcome.REFUSED)
    NO_START = ("no 'start' message arrived", CallOutcome.REFUSED)
    TOKEN_REFUSED = ("stream token refused ({})", CallOutcome.REFUSED)
    STREAM_REFUSED = ("stream refused ({})", CallOutcome.REFUSED)
    BACKEND_ENDED = ("the Realtime session ended ({})", CallOutcome.BACKEND_FAILED)
    BACKEND_LOST = (
        "the Realtime session was lost and could not be restored ({})",
        CallOutcome.BACKEND_FAILED,
    )
    BACKEND_REFUSED_CONFIG = (
        "the Realtime session refused its configuration",
        CallOutcome.BACKEND_FAILED,
    )
    BACKEND_WRONG_FORMAT = (
        "the Realtime session did not take the {} audio format",
        CallOutcome.BACKEND_FAILED,
    )
    BACKEND_FELL_BEHIND = (
        "the Realtime connection fell too far behind",
        CallOutcome.BACKEND_FAILED,
    )
    INTERNAL_ERROR = ("internal error", CallOutcome.ERROR)

    def __init__(self, words: str, outcome: CallOutcome) -> None:
        self.words = words
        self.outcome = outcome

    def describe(self, detail: str = "") -> str:
        """The reason in words, e.g. "transferred to +15551234567"."""
        return self.words.format(detail) if "{}" in self.words else self.words


@dataclass(slots=True, frozen=True)
class Ending:
    """The base of the three ways a call ends; exactly one is ever given per call."""

    reason: EndReason
    detail: str = ""

    @property
    def description(self) -> str:
        return self.reason.describe(self.detail)


@dataclass(slots=True, frozen=True)
class EndStream(Ending):
    """Close the Realtime session and the Twilio stream. Closed normally, the stream lets
    Twilio go on to the TwiML after <Connect> (the apology); a refused stream is closed
    with the code its reason calls for."""

    @property
    def close_code(self) -> int:
        if self.reason is EndReason.TOKEN_REFUSED:
            return 1008  # policy violation
        if self.reason is EndReason.STREAM_REFUSED:
            return 1013  # try again later
        return 1000


@dataclass(slots=True, frozen=True)
class HangUp(Ending):
    """End the phone call itself, not only the stream (through Twilio's REST API): the
    goodbye was the end, so no TwiML after <Connect> (the apology) may run. Then close
    both sockets."""


@dataclass(slots=True, frozen=True)
class Transfer(Ending):
    """Hand the phone call to `twiml` (a `<Dial>`) through Twilio's REST API: the caller
    heard the handoff line; the stream ends as Twilio moves the call."""

    twiml: str = ""


# --- to Twilio ----------------------------------------------------------------------------------


@dataclass(slots=True)
class PlayAudio:
    """Queue `payload` (base64 mu-law) for the caller, followed by a mark named `mark`,
    which comes back once it has played."""

    payload: str
    mark: str


@dataclass(slots=True, frozen=True)
class ClearAudio:
    """Drop everything queued for the caller (Twilio echoes every pending mark at once)."""


@dataclass(slots=True, frozen=True)
class SendMark:
    """A mark that follows no audio of ours: it tells whoever plays Twilio's side something
    (where a barge-in cut)."""

    name: str


# --- to the Realtime session --------------------------------------------------------------------


@dataclass(slots=True)
class AppendAudio:
    """The caller's audio for the session (base64, in the session's input format)."""

    payload: str


@dataclass(slots=True, frozen=True)
class ConfigureSession:
    """Configure the session for a phone call: `settings`, with `audio_format` both ways."""

    settings: SessionSettings
    audio_format: AudioFormat


@dataclass(slots=True, frozen=True)
class DisableTurnDetection:
    """Stop the session's voice detection: nothing the caller says can interrupt now."""


@dataclass(slots=True, frozen=True)
class CreateResponse:
    """Ask the model to answer, with `instructions` for this answer only if given;
    `purpose` comes back in its response.created, so the answer is told apart."""

    instructions: str | None = None
    purpose: str | None = None


@dataclass(slots=True, frozen=True)
class CancelResponse:
    """Stop the response in progress."""


@dataclass(slots=True, frozen=True)
class TruncateItem:
    """Cut an assistant item where the caller stopped hearing it."""

    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(slots=True, frozen=True)
class DeleteItem:
    """Take an item out of the conversation: caller audio that was not a turn (a cough,
    an "mm-hm"), so the model does not answer it."""

    item_id: str


@dataclass(slots=True, frozen=True)
class AddMessage:
    """A text message in the conversation: the caller's keys (`user`), a restored turn
    (`user` or `assistant`), a note for the model (`system`)."""

    role: str
    text: str


@dataclass(slots=True, frozen=True)
class AddToolOutput:
    """A function call's result, `output` being a JSON string."""

    call_id: str
    output: str


# --- to the adapter -----------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class AdmitStream:
    """A stream says `start`: check its token and give it a line (and its profile's
    config), then start its call with this same event; or report StreamRefused."""

    start: StreamStarted


@dataclass(slots=True, frozen=True)
class OpenBackend:
    """Open the call's Realtime session; report BackendOpened, or BackendClosed."""


@dataclass(slots=True, frozen=True)
class ReconnectBackend:
    """Close the Realtime socket if it is still open, wait `delay_s`, open a new one, then
    report BackendOpened (or BackendClosed). The socket must be open within
    `give_up_after_s` of this action (what is left of the reconnect budget): past that,
    report BackendClosed."""

    delay_s: float
    reason: str
    give_up_after_s: float = float("inf")


@dataclass(slots=True, frozen=True)
class RunTool:
    """Run the operator's tool `name` with `arguments` (a JSON string, as the model wrote
    it), off the audio path; report ToolFinished(call_id, output)."""

    call_id: str
    name: str
    arguments: str


ToTwilio = PlayAudio | ClearAudio | SendMark
ToBackend = (
    AppendAudio
    | ConfigureSession
    | DisableTurnDetection
    | CreateResponse
    | CancelResponse
    | TruncateItem
    | DeleteItem
    | AddMessage
    | AddToolOutput
)
Control = AdmitStream | OpenBackend | ReconnectBackend | RunTool | EndStream | HangUp | Transfer
Action = ToTwilio | ToBackend | Control
