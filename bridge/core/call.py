"""The call core: one phone call's logic, with no sockets inside (sans-I/O).

A `Call` takes typed events (`bridge.core.events`) with the current time, one at a time
through `handle`, and returns the typed actions (`bridge.core.actions`) the I/O adapter
must carry out, in order. It knows no JSON and no dialect: codecs turn wire messages into
events and actions into wire messages.

The call itself decides little by itself; it holds the phase (`bridge.core.phases`: which
events it listens to) and delegates each job to a small object:

- `InputGuard`: what Twilio's side may send (message rate, audio validity and speed);
- `PlaybackLedger`: what the caller has heard of the assistant, to the byte;
- `ResponseSequencer`: which response is in progress, asked for, owed, interrupted;
- `SessionLifecycle`: the Realtime session in use and, once lost, its replacements;
- `LastWords`: a goodbye (or a transfer's handoff line) that nothing may interrupt;
- `ToolCalls`, `Keypad`, `TurnLog`, `Transcript`: tools, keys, latency, what was said.

What happens on a barge-in, exactly: Twilio's queue is cleared, the playing item counts as
heard up to this moment, each item not heard in full is truncated where the caller stopped
hearing it, the rest of the answer is dropped, and the answer is cancelled if the session
does not cancel it by itself.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bridge.audio import MULAW_BYTES_PER_MS
from bridge.core import events as ev
from bridge.core.actions import (
    Action,
    AddMessage,
    AddToolOutput,
    AppendAudio,
    CancelResponse,
    ClearAudio,
    ConfigureSession,
    CreateResponse,
    DeleteItem,
    DisableTurnDetection,
    Ending,
    EndReason,
    EndStream,
    HangUp,
    OpenBackend,
    PlayAudio,
    ReconnectBackend,
    RunTool,
    SendMark,
    Transfer,
    TruncateItem,
)
from bridge.core.backend_session import BudgetSpent, SessionLifecycle, WaitOut
from bridge.core.call_config import CallConfig, Interruptions
from bridge.core.filler import ToolFiller
from bridge.core.idle import IdleStep, IdleWatch
from bridge.core.input_guard import InputGuard, valid_audio
from bridge.core.interruptions import SEMANTIC_VAD_SILENCE_S, Pause, Verdict
from bridge.core.keypad import Keypad, is_keypad_item, keys_in
from bridge.core.last_words import (
    GOODBYE_LEAD,
    GOODBYE_PURPOSE,
    OWN_GOODBYE_INSTRUCTIONS,
    LastWords,
)
from bridge.core.phases import HEARS, MOVES, Phase, PhaseError
from bridge.core.playback import (
    FILLER_ITEM_PREFIX,
    LOCAL_ITEM_PREFIX,
    Chunk,
    HeldChunk,
    PlaybackLedger,
    heard_ms,
    play_starts,
    sent_ms,
    truncation_mark_name,
)
from bridge.core.responses import ResponseSequencer
from bridge.core.summary import BargeIn, CallObserver, CallSummary, TranscriptLine, Truncation
from bridge.core.timeline import Moment, Timeline, speech_detail
from bridge.core.tool_calls import (
    BAD_DIGITS,
    CALL_ENDING,
    NOT_DONE_INTERRUPTED,
    OK,
    ORPHANED_TOOL_MESSAGE,
    ToolCalls,
    error,
    transferring,
)
from bridge.core.transcript import Transcript
from bridge.core.turns import TurnLog
from bridge.dtmf import dtmf_mulaw
from bridge.tools.builtins import END_CALL, SEND_DTMF, TRANSFER_CALL
from bridge.transcode import AudioFormat, BackendToCaller, CallerToBackend, bytes_per_ms
from bridge.usage import CallUsage

GREETING_LEAD = "Greet the caller by saying exactly the following, then wait for them: "
RESUME_INSTRUCTIONS = (
    "The phone line dropped for a moment. Carry on the conversation naturally from where it "
    "stopped, without mentioning the interruption unless something was lost."
)
# The bridge's own sounds (keypad tones, a tool's filler): never the model's voice.
LOCAL_ITEM_PREFIXES = (LOCAL_ITEM_PREFIX, FILLER_ITEM_PREFIX)
# In-band DTMF goes to Twilio in pieces of this many ms, each with its mark.
DTMF_CHUNK_MS = 200

log = logging.getLogger("bridge.call")

# Each handler takes the one event type it is registered for (dispatch checks the type).
Handler = Callable[[Any, float], list[Action]]


def decoded_length(b64: str) -> int:
    """Bytes encoded by a base64 string, without decoding it."""
    n = len(b64)
    if n and b64[-1] == "=":
        return n * 3 // 4 - (2 if n > 1 and b64[-2] == "=" else 1)
    return n * 3 // 4


class Call:
    """The logic of one call between Twilio and a Realtime session.

    Its first event is the stream's `StreamStarted` (the I/O adapter has admitted the
    stream and chosen the call's config by then); from there, `handle` every event as it
    happens, and carry out what it returns."""

    def __init__(
        self,
        config: CallConfig,
        observer: CallObserver | None = None,
        guard: InputGuard | None = None,
        answered_at: float | None = None,
    ) -> None:
        """`answered_at`: when this call's voice webhook was answered (monotonic), if it
        was answered here."""
        self.config = config
        self._observer = observer
        self._timeline = Timeline()
        if answered_at is not None:
            self._timeline.note(Moment.WEBHOOK_ANSWERED, answered_at)
        # The stream's limits count from its first message, before the call began.
        self._guard = guard or InputGuard(config.limits)
        self._ledger = PlaybackLedger()
        self._responses = ResponseSequencer()
        self._session = SessionLifecycle(config)
        self._tools = ToolCalls(config)
        self._keypad = Keypad(config.keypad_pause_s)
        self._turns = TurnLog()
        self._transcript = Transcript(config.max_replay_chars)
        self._usage = CallUsage()
        self._last_words: LastWords | None = None
        self._ending: Ending | None = None
        self._barge_ins: list[BargeIn] = []
        self._backend_errors = 0
        self._caller_speaking = False
        # Where the caller's speech the session heard last began: the start of the
        # transcript line its committed item becomes.
        self._speech_began_at: float | None = None
        # INTERRUPTIONS=confirm: the caller may be interrupting; what they did not hear is
        # held until it is known (`bridge.core.interruptions`).
        self._confirm = config.interruptions is Interruptions.CONFIRM
        self._pause: Pause | None = None
        self._delete_next_commit = False  # a non-turn decided before its item was committed
        self._not_turns: set[str] = set()  # caller items taken out: their transcripts too
        self._idle = IdleWatch(config.idle_prompt_s, config.idle_hangup_s)
        self._filler = ToolFiller(config.tool_filler, config.tool_filler_ms / 1000)
        self._assistant_heard = False  # any of the model's audio has played
        self._greeted = False
        self._noted: set[str] = set()
        self._session_settings = replace(config.session, tools=self._tools.session_tools)
        transcoding = config.audio_format is not AudioFormat.PCMU
        self._to_backend = CallerToBackend(config.audio_format) if transcoding else None
        self._to_caller = BackendToCaller(config.audio_format) if transcoding else None
        # Caller audio (in the session's format) waiting for a session to take it: kept
        # while one opens, newest first out when it overflows.
        self._frames_before_connect: deque[str] = deque(maxlen=config.max_frames_before_connect)
        self.call_sid = ""
        self.stream_sid = ""
        self.account_sid = ""
        self.parameters: dict[str, str] = {}
        self.started_at: float | None = None  # when `start` arrived (monotonic)
        self.log: logging.LoggerAdapter[logging.Logger] = logging.LoggerAdapter(
            log, {"call_sid": "-"}
        )
        handlers: dict[type, Handler] = {
            ev.StreamStarted: self._on_start,
            ev.StreamConnected: self._on_counted_message,
            ev.CallerAudio: self._on_caller_audio,
            ev.MarkPlayed: self._on_mark,
            ev.KeyPressed: self._on_key,
            ev.StreamStopped: self._on_stop,
            ev.TwilioMessageInvalid: self._on_invalid_twilio_message,
            ev.SessionCreated: self._on_session_created,
            ev.SessionUpdated: self._on_session_updated,
            ev.SpeechStarted: self._on_speech_started,
            ev.SpeechStopped: self._on_speech_stopped,
            ev.InputCommitted: self._on_input_committed,
            ev.CallerTranscribed: self._on_caller_transcribed,
            ev.AssistantTranscribed: self._on_assistant_transcribed,
            ev.ResponseCreated: self._on_response_created,
            ev.AudioDelta: self._on_audio_delta,
            ev.AudioDone: self._on_audio_done,
            ev.ResponseDone: self._on_response_done,
            ev.FunctionCallRequested: self._on_function_call,
            ev.BackendError: self._on_backend_error,
            ev.ItemTruncated: self._on_item_truncated,
            ev.BackendEventInvalid: self._on_invalid_backend_event,
            ev.TwilioClosed: self._on_twilio_closed,
            ev.BackendOpened: self._on_backend_opened,
            ev.BackendClosed: self._on_backend_closed,
            ev.BackendFellBehind: self._on_backend_fell_behind,
            ev.ToolFinished: self._on_tool_finished,
            ev.Tick: self._on_tick,
            ev.ShutdownRequested: self._on_shutdown,
        }
        # Per phase, the handlers of the events it hears (the table in bridge.core.phases).
        self._handlers = {phase: {kind: handlers[kind] for kind in HEARS[phase]} for phase in Phase}
        self._phase = Phase.AWAITING_START
        self._hears = self._handlers[self._phase]

    # --- the one way in ----------------------------------------------------------------------

    def handle(self, event: ev.Event, now: float) -> list[Action]:
        """Take one event, at `now` (monotonic seconds); the actions to carry out, in order.
        An event the current phase does not listen to changes nothing."""
        handler = self._hears.get(type(event))
        return handler(event, now) if handler is not None else []

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def ended(self) -> bool:
        return self._phase is Phase.ENDED

    def ended_outside(self, ending: Ending, now: float) -> None:
        """The runner ended the call itself (a bug in a handler, a failed task, the
        runner cancelled): the timeline still says how and when, once."""
        if self._phase is not Phase.ENDED:
            self._timeline.note(Moment.ENDED, now, ending.description)

    def summary(self, timeline: bool = True) -> CallSummary:
        """The call as it stands, or as it ended; `timeline=False` leaves the timeline
        out (it is copied whole: the live console asks often)."""
        return CallSummary(
            call_sid=self.call_sid,
            stream_sid=self.stream_sid,
            account_sid=self.account_sid,
            parameters=dict(self.parameters),
            phase=self._phase.value,
            started_at=self.started_at,
            turns=tuple(replace(turn) for turn in self._turns.turns),
            barge_ins=tuple(self._barge_ins),
            reconnects=self._session.reconnects,
            backend_errors=self._backend_errors,
            model=self._session.model,
            transcription_model=self.config.session.transcription_model,
            usage=self._usage,
            transcript=self._transcript_lines(),
            ending=self._ending,
            timeline=self._timeline.entries(self.started_at) if timeline else (),
            timeline_dropped=self._timeline.dropped,
        )

    def _move(self, phase: Phase) -> None:
        if phase not in MOVES[self._phase]:
            raise PhaseError(f"a call cannot go from {self._phase.value} to {phase.value}")
        self._phase = phase
        self._hears = self._handlers[phase]

    # --- Twilio's side -----------------------------------------------------------------------

    def _on_start(self, start: ev.StreamStarted, now: float) -> list[Action]:
        if self._phase is not Phase.AWAITING_START:
            if not self._guard.messages.take(1, now):
                return self._flooded(now)
            self._note_once("second-start", "ignored a second 'start' on the same stream")
            return []
        if start.encoding != "audio/x-mulaw" or start.sample_rate != 8000:
            self.log.warning(
                "unexpected media format %s at %d Hz", start.encoding, start.sample_rate
            )
        self.call_sid, self.stream_sid = start.call_sid, start.stream_sid
        self.account_sid = start.account_sid
        self.parameters = dict(start.parameters)
        self.started_at = now
        self._timeline.note(Moment.STREAM_STARTED, now)
        self.log = logging.LoggerAdapter(log, {"call_sid": start.call_sid})
        self._move(Phase.CONNECTING)
        self.log.info("stream %s started; opening the Realtime session", start.stream_sid)
        return [OpenBackend()]

    def _on_counted_message(self, event: ev.Event, now: float) -> list[Action]:
        return [] if self._guard.messages.take(1, now) else self._flooded(now)

    def _on_invalid_twilio_message(
        self, event: ev.TwilioMessageInvalid, now: float
    ) -> list[Action]:
        if not self._guard.messages.take(1, now):
            return self._flooded(now)
        self._note_once(
            "bad-twilio-message", "dropped a malformed Twilio message: %s", event.problem
        )
        return []

    def _on_caller_audio(self, media: ev.CallerAudio, now: float) -> list[Action]:
        guard = self._guard
        if not guard.messages.take(1, now):
            return self._flooded(now)
        if media.stream_sid != self.stream_sid:
            self._note_once("wrong-stream", "dropped audio for another stream")
            return []
        if self._last_words is not None:
            return []  # the call is ending: nothing the caller says can change that
        payload = media.payload
        if not valid_audio(payload):
            self._note_once("bad-base64", "dropped caller audio that is not valid base64")
            return []
        if not guard.audio.take(len(payload), now):
            self._note_once("audio-flood", "caller audio faster than real time: dropped the excess")
            return []
        if self._to_backend is not None:
            audio = self._to_backend.convert(base64.b64decode(payload))  # checked above
            payload = base64.b64encode(audio).decode()
        # In passthrough the payload goes on as it came: nothing decoded per frame.
        if self._phase is Phase.BRIDGING:
            return [AppendAudio(payload)]
        self._frames_before_connect.append(payload)  # a session is opening
        return []

    def _on_mark(self, mark: ev.MarkPlayed, now: float) -> list[Action]:
        # An echo of one of our marks does not count towards the message rate: Twilio
        # sends a burst of them after a clear.
        if not self._ledger.is_ours(mark.name) and not self._guard.messages.take(1, now):
            return self._flooded(now)
        if mark.stream_sid != self.stream_sid:
            return []
        played = self._ledger.echoed(mark.name, now)
        if played:
            self._heard(played, now)
        if self._filler.playing:
            return self._play_filler(now)  # (its next piece, before this one runs out)
        return self._end_once_last_words_heard(now)

    def _heard(self, played: list[Chunk], now: float) -> None:
        """Chunks a mark's echo proved played: where items, and the current answer, began
        to be heard."""
        awaited = self._turns.awaited_mark
        if not self._assistant_heard:
            self._assistant_heard = any(
                not chunk.item_id.startswith(LOCAL_ITEM_PREFIXES) for chunk in played
            )
        for chunk, began in zip(played, play_starts(played, now), strict=True):
            if chunk.end == chunk.size:  # an item's first chunk
                self._transcript.assistant_heard(chunk.item_id, began)
            if chunk.mark != awaited:
                continue
            heard = self._turns.answer_heard(began)  # the current answer began to be heard
            if heard is not None:
                heard_at, latency = heard
                # Noted where it began to play, as the recording has it, not at the news.
                self._timeline.note(Moment.AUDIO_HEARD, heard_at, f"{latency * 1000:.0f} ms after")
                if self._observer is not None:
                    self._observer.turn_heard(latency)

    def _on_key(self, key: ev.KeyPressed, now: float) -> list[Action]:
        """Keys are collected until # or a pause, then given to the model as a message.
        Pressing keys while the assistant talks is a barge-in (there is no speech to
        detect). Digits may be PINs or card numbers: never logged."""
        if not self._guard.messages.take(1, now):
            return self._flooded(now)
        if key.stream_sid != self.stream_sid or self._last_words is not None:
            return []
        self._idle.caller_active()
        first_key = not self._keypad.keys
        complete = self._keypad.press(key.digit, now)
        if complete is None:
            return []
        actions: list[Action] = []
        if first_key and self._phase is Phase.BRIDGING:
            actions += self._interrupt(now, cancel_always=True)
        if complete:
            actions += self._give_keys_to_model(now)
        return actions

    def _on_stop(self, stop: ev.StreamStopped, now: float) -> list[Action]:
        if not self._guard.messages.take(1, now):
            return self._flooded(now)
        if stop.stream_sid != self.stream_sid:
            return []
        return self._end(now, EndReason.CALLER_HUNG_UP)

    def _on_twilio_closed(self, closed: ev.TwilioClosed, now: float) -> list[Action]:
        if closed.stalled:
            self.log.warning("Twilio's side stopped reading: the call is dropped")
            return self._end(now, EndReason.TWILIO_STALLED)
        return self._end(now, EndReason.TWILIO_CLOSED)

    def _flooded(self, now: float) -> list[Action]:
        self.log.error(
            "more than %.0f messages/s from Twilio's side", self.config.limits.max_messages_per_s
        )
        return self._end(now, EndReason.FLOODED)

    # --- the Realtime session: opening, losing, replacing ------------------------------------

    def _on_backend_opened(self, event: ev.Event, now: float) -> list[Action]:
        """Configure the session, restore the conversation if it replaces a lost one, then
        give it the caller audio that waited."""
        restoring = self._phase is Phase.RECONNECTING
        self._move(Phase.BRIDGING)
        session = self._session
        session.opened(now)
        actions: list[Action] = [ConfigureSession(self._session_settings, self.config.audio_format)]
        if not restoring:
            self._timeline.note(Moment.SESSION_OPENED, now)
        else:
            assert session.lost_at is not None  # RECONNECTING is entered by _retire_session
            replay = self._transcript.replay()
            self._timeline.note(Moment.SESSION_OPENED, now, f"restored {len(replay)} turns")
            actions += [AddMessage(role, text) for role, text in replay]
            self.log.info(
                "new Realtime session after %.1f s: restored %d turns as text",
                now - session.lost_at,
                len(replay),
            )
            if session.resume_answer:  # kept until this session is configured: it may drop
                self._responses.request()
                actions.append(CreateResponse(instructions=RESUME_INSTRUCTIONS))
        kept = self._frames_before_connect
        kept_bytes = sum(decoded_length(payload) for payload in kept)
        newest = self._guard.newest_audio_at
        if newest is None:
            newest = self.started_at if self.started_at is not None else now
        self._turns.anchor_session_audio(
            newest, kept_bytes / (bytes_per_ms(self.config.audio_format) * 1000)
        )
        actions += [AppendAudio(payload) for payload in kept]
        kept.clear()
        return actions

    def _on_backend_closed(self, closed: ev.BackendClosed, now: float) -> list[Action]:
        """The Realtime socket closed, or could not be opened.

        Lost mid-call, it is reopened with backoff and the conversation restored, within
        the reconnect budget (a restored session that drops again before it proved healthy
        keeps using the same budget); if no session ever worked, the call ends with the
        apology. During a goodbye the call is hung up, never apologised."""
        last_words = self._last_words
        if last_words is not None:
            if last_words.generated:
                return []  # it is playing: its marks (or the deadline) end the call
            if last_words.response_id is not None:
                # Being spoken when the session went: what reached Twilio plays out first.
                last_words.generated = True
                last_words.deadline = self._after_queued_audio(now)
                return self._end_once_last_words_heard(now)
            # Unsaid, but the call still ends the way it was going to: hung up, or
            # transferred (a caller who asked for a person still gets one).
            return self._stop(now, last_words.then)
        session = self._session
        if self._phase is Phase.BRIDGING and (session.configured or session.restoring):
            self.log.warning("Realtime session lost (%s): reconnecting", closed.why)
            self._timeline.note(Moment.SESSION_LOST, now, closed.why)
            self._retire_session(now)
        if self._phase is Phase.RECONNECTING:
            return self._reconnect_or_end(closed.why, now)
        self.log.error("Realtime session ended: %s", closed.why)
        return self._end(now, EndReason.BACKEND_ENDED, closed.why)

    def _on_backend_fell_behind(self, event: ev.Event, now: float) -> list[Action]:
        self.log.error("the Realtime connection fell too far behind: ending the call")
        return self._end(now, EndReason.BACKEND_FELL_BEHIND)

    def _retire_session(self, now: float, rollover: bool = False) -> None:
        """Leave the session in use (lost, or being replaced) for a new one.

        Audio already sent to Twilio plays on, so the caller hears no gap while the new
        session opens. Its items stay tracked, so a barge-in still clears it and records
        what was heard, but they can no longer be truncated on the server."""
        mid_answer = self._responses.active is not None or self._transcript.caller_spoke_last
        if self._pause is not None:
            # What it held came from the session that is gone: the new one answers afresh,
            # knowing what the caller heard of it.
            self._pause = None
            self._note_unheard_answers()
            self._ledger.release_held()
        self._delete_next_commit = False  # (its commit would come from the old session)
        self._session.retire(now, mid_answer, rollover)
        self._ledger.orphan_items()
        self._responses.forget_session()
        self._tools.orphan_running()
        self._caller_speaking = False
        self._move(Phase.RECONNECTING)

    def _reconnect_or_end(self, reason: str, now: float) -> list[Action]:
        """Another attempt at a session if one can begin within the reconnect budget; if
        not, the call waits out the budget (the clock ends it then, with the apology)."""
        session = self._session
        rollovers = session.rollovers
        attempt = session.next_attempt(reason, now)
        if isinstance(attempt, ReconnectBackend):
            rolled_over = session.rollovers > rollovers
            if not rolled_over:
                self._timeline.note(Moment.RECONNECTING, now, f"in {attempt.delay_s:g} s")
            if self._observer is not None:
                if rolled_over:
                    self._observer.rolled_over()
                else:
                    self._observer.reconnected()
            return [attempt]
        if isinstance(attempt, WaitOut):
            self.log.warning("Realtime session still lost (%s): no attempt fits the budget", reason)
            return []
        return self._budget_spent(now, reason)

    def _budget_spent(self, now: float, last_cause: str) -> list[Action]:
        """The reconnect budget is spent; `last_cause` is why the session was lost or the
        last attempt at a new one failed."""
        self.log.error(
            "Realtime session could not be restored within %g s: %s",
            self.config.reconnect_budget_s,
            last_cause,
        )
        return self._end(now, EndReason.BACKEND_LOST, last_cause)

    def _maybe_roll_over(self, now: float) -> list[Action]:
        """Replace a session nearing the service's length limit, at a quiet moment: no
        answer being generated or played, the caller not mid-sentence, nothing pending on
        this session. Past the grace period, regardless."""
        responses = self._responses
        quiet = (
            not responses.busy
            and not self._ledger.queued
            and not self._caller_speaking
            and not self._transcript.caller_spoke_last  # an answer is about to start
            and not self._tools.running  # their call_ids belong to this session
            and not self._keypad.keys
        )
        age = self._session.rollover_due(now, quiet)
        if age is None:
            return []
        self.log.info("rolling over to a new Realtime session after %.0f s", age)
        self._timeline.note(Moment.ROLLOVER, now, f"after {age:.0f} s")
        self._retire_session(now, rollover=True)
        return self._reconnect_or_end("session rollover", now)

    # --- the Realtime session: what it says --------------------------------------------------

    def _on_session_created(self, created: ev.SessionCreated, now: float) -> list[Action]:
        self._session.created(created.model)
        return []

    def _on_session_updated(self, updated: ev.SessionUpdated, now: float) -> list[Action]:
        fmt = self.config.audio_format
        stated = (updated.input_format, updated.output_format)
        if any(f is not None and f != fmt for f in stated):
            # It would read mu-law as something else and play its own as noise.
            self.log.error(
                "Realtime session did not take %s both ways: input %s, output %s",
                fmt.value,
                *stated,
            )
            return self._end(now, EndReason.BACKEND_WRONG_FORMAT, fmt.value)
        if not self._session.confirmed(updated.model, updated.interrupts_by_itself, now):
            return []
        self._timeline.note(Moment.SESSION_CONFIGURED, now, self._session.model or "")
        if self.config.greeting and not self._greeted:
            self._greeted = True
            self._responses.request()
            return [CreateResponse(instructions=GREETING_LEAD + self.config.greeting)]
        return []

    def _on_speech_started(self, started: ev.SpeechStarted, now: float) -> list[Action]:
        self._caller_speaking = True
        self._idle.caller_active()
        began_at = self._turns.speech_began_at(started.audio_start_ms, now)
        self._speech_began_at = began_at
        origin = self.started_at if self.started_at is not None else now
        self._timeline.note(Moment.SPEECH_STARTED, now, speech_detail("began", began_at - origin))
        if self._last_words is not None:
            return []  # turn detection is being turned off: nothing interrupts the goodbye
        if self._ledger.playing_local_audio():
            # The far end's menu talking while our keys play is not a caller barging in:
            # clearing Twilio's queue would lose the keys.
            return []
        actions = self._stop_filler(now)
        if not self._confirm:
            return actions + self._interrupt(now, cancel_always=False)
        if self._pause is not None:
            # They spoke again before it was decided: a turn, not a cough, which is over
            # (and answered) when this speech stops.
            return actions + self._interrupted(now, turn_over=False)
        if self._ledger.queued_model_audio() or self._responses.active is not None:
            # The session's start of their speech has its prefix padding before it: the
            # speech itself began that much later (but not after the news of it).
            onset_at = began_at
            if started.audio_start_ms is not None:
                padding_s = self._session_settings.vad_prefix_padding_ms / 1000
                onset_at = min(now, began_at + padding_s)
            return actions + self._pause_answer(onset_at, now)
        return actions

    def _on_speech_stopped(self, stopped: ev.SpeechStopped, now: float) -> list[Action]:
        self._caller_speaking = False
        silence_ms = self._session_settings.vad_silence_ms
        ended_at = self._turns.speech_ended_at(stopped.audio_end_ms, silence_ms, now)
        origin = self.started_at if self.started_at is not None else now
        self._timeline.note(Moment.SPEECH_STOPPED, now, speech_detail("ended", ended_at - origin))
        if self._pause is not None:
            self._pause.speech_ended(ended_at, now)
            return self._decide(now)
        return self._caller_turn_ended(ended_at)

    def _caller_turn_ended(self, ended_at: float) -> list[Action]:
        """The caller's speech was a turn: it is answered (by the session itself, unless
        the bridge decides, INTERRUPTIONS=confirm)."""
        self._turn_begins(ended_at)
        if self._confirm and self._last_words is None:
            return self._want_response()
        return []

    def _on_input_committed(self, committed: ev.InputCommitted, now: float) -> list[Action]:
        began_at, self._speech_began_at = self._speech_began_at, None
        if self._delete_next_commit:
            # The speech it holds was found not to be a turn before the session said so.
            self._delete_next_commit = False
            self._not_turns.add(committed.item_id)
            return [DeleteItem(committed.item_id)]
        self._transcript.caller_spoke(committed.item_id, began_at)
        if self._pause is not None and self._pause.item_id is None:
            self._pause.item_id = committed.item_id
        return []

    def _on_caller_transcribed(self, done: ev.CallerTranscribed, now: float) -> list[Action]:
        self._usage.add_transcription(done.usage)
        if done.transcript is not None and done.item_id not in self._not_turns:
            self._transcript.caller_transcript(done.item_id, done.transcript)
        pause = self._pause
        if pause is not None and done.item_id == pause.item_id:
            pause.transcript = done.transcript or ""
            return self._decide(now)
        return []

    def _on_assistant_transcribed(self, done: ev.AssistantTranscribed, now: float) -> list[Action]:
        if done.item_id:
            self._transcript.assistant_transcript(done.item_id, done.transcript)
        return []

    def _on_response_created(self, created: ev.ResponseCreated, now: float) -> list[Action]:
        self._responses.created(created.response_id)
        self._timeline.note(Moment.RESPONSE_CREATED, now, created.response_id or "")
        last_words = self._last_words
        # Only ours: a server-VAD answer already on its way may be created first.
        if (
            last_words is not None
            and last_words.requested
            and last_words.response_id is None
            and created.purpose == GOODBYE_PURPOSE
        ):
            last_words.response_id = created.response_id
        return []

    def _on_audio_delta(self, delta: ev.AudioDelta, now: float) -> list[Action]:
        # A gateway may leave response_id out; the response in progress is the one speaking.
        response_id = delta.response_id or self._responses.active or ""
        if self._responses.interrupted(response_id):
            return []  # the caller interrupted it: nothing more of it may play
        if not self._session.configured:
            self._note_once(
                "audio-before-config", "dropped model audio sent before session.updated"
            )
            return []
        audio = delta.audio
        if self._to_caller is None:
            # Spliced into Twilio's message as it came: only base64 may be, or a backend
            # could write Twilio a message of its own (a `"` ends the payload's string).
            if not valid_audio(audio):
                self._note_once("bad-delta", "dropped model audio that is not valid base64")
                return []
            size = decoded_length(audio)
        else:
            try:
                converted = self._to_caller.convert(base64.b64decode(audio, validate=True))
            except (binascii.Error, ValueError):
                self._note_once("bad-delta", "dropped model audio that is not valid base64")
                return []
            size = len(converted)
            audio = base64.b64encode(converted).decode()
        if size == 0:
            return []
        ledger = self._ledger
        item = ledger.item(delta.item_id)
        if item is None:
            item = ledger.new_item(delta.item_id, response_id, delta.content_index)
            self._timeline.note(Moment.AUDIO_SENT, now, delta.item_id)
            if delta.item_id:
                self._transcript.assistant_spoke(delta.item_id)
            if response_id:  # once per item, not per delta
                self._responses.spoke(response_id)
        pause = self._pause
        if pause is not None:
            # The caller may be interrupting: kept until it is known.
            item.held += size
            if not pause.hold([HeldChunk(item.item_id, audio, size)]):
                return self._interrupted(now)
            return []
        actions = self._stop_filler(now) if self._filler.playing else []
        mark = ledger.sent(item, size, now, audio)
        self._answer_sent(response_id, mark, now)
        # Checked (or made) base64 above, which needs no escaping: the codec splices it in.
        actions.append(PlayAudio(audio, mark))
        return actions

    def _answer_sent(self, response_id: str, mark: str, now: float) -> None:
        latency = self._turns.answer_sent(response_id, mark, now)
        if latency is not None and self._observer is not None:
            self._observer.turn_answered(latency)

    def _on_audio_done(self, done: ev.AudioDone, now: float) -> list[Action]:
        self._ledger.audio_done(done.item_id)
        return []

    def _on_response_done(self, done: ev.ResponseDone, now: float) -> list[Action]:
        self._usage.add_model_usage(done.usage)
        response_id = done.response_id
        responses = self._responses
        responses.done(response_id)
        if done.status == "failed":
            self.log.warning("response %s failed: %s", response_id, done.status_details)
        last_words = self._last_words
        if last_words is None:
            if self._caller_speaking and self._confirm:
                return []  # still owed: asked for when their turn ends (`_caller_turn_ended`)
            if responses.take_owed():
                if self._caller_speaking and self._session.interrupts_by_itself:
                    return []  # server VAD answers once they stop, with what waited in view
                responses.request()
                return [CreateResponse()]
            return []
        if not last_words.requested and responses.active is None:
            return self._request_last_words()  # the cancelled answer is out of the way
        if response_id is not None and response_id == last_words.response_id:
            last_words.generated = True
            # It may be long, and behind other audio: it gets the time to be heard.
            last_words.deadline = max(last_words.deadline, self._after_queued_audio(now))
            return self._end_once_last_words_heard(now)
        return []

    def _on_backend_error(self, error_event: ev.BackendError, now: float) -> list[Action]:
        code, message = error_event.code, error_event.message
        if not self._session.configured:
            # The session.update was refused: the session would read mu-law as PCM and
            # play PCM as noise. End the call so the caller hears the TwiML apology.
            self.log.error("Realtime refused the session configuration: %s: %s", code, message)
            return self._end(now, EndReason.BACKEND_REFUSED_CONFIG)
        self.log.warning("Realtime error %s: %s", code, message)
        self._backend_errors += 1
        if self._observer is not None:
            self._observer.backend_error(str(code))
        self._responses.refused(code)
        return []

    def _on_item_truncated(self, truncated: ev.ItemTruncated, now: float) -> list[Action]:
        self.log.info(
            "Realtime confirmed truncation of %s at %s ms",
            truncated.item_id,
            truncated.audio_end_ms,
        )
        return []

    def _on_invalid_backend_event(
        self, invalid: ev.BackendEventInvalid, now: float
    ) -> list[Action]:
        self._note_once("bad-realtime-event", "dropped a Realtime event that %s", invalid.problem)
        return []

    # --- barge-in ----------------------------------------------------------------------------

    def _interrupt(self, now: float, cancel_always: bool) -> list[Action]:
        """Stop the assistant where the caller is: clear Twilio's queue, truncate what was
        not heard, drop the rest of the answer, and cancel it if the session will not. (A
        pause, if one is on, ends here: what it held is dropped, and its clear counts.)"""
        actions: list[Action] = self._stop_filler(now)
        if self._to_caller is not None:
            self._to_caller.reset()  # no tail of the interrupted answer starts the next one
        ledger = self._ledger
        # (What a pause held is counted as sent by the model, so the cut is told right;
        # it goes with the items, below.)
        pause, self._pause = self._pause, None
        cleared = ledger.clear(now)
        timeline = self._timeline
        if cleared:
            timeline.note(Moment.CLEAR, now)
            actions.append(ClearAudio())
        cleared = cleared or pause is not None
        # Whatever the ledger still holds has audio the caller did not hear in full: a
        # queued item, or one whose audio the model had not finished (it may hold more).
        items = ledger.items()
        responses = self._responses
        active = responses.active
        cancel = cancel_always or not self._session.interrupts_by_itself
        cancelled = None
        if responses.interrupt({item.response_id for item in items if item.response_id}, cancel):
            cancelled = active
            timeline.note(Moment.CANCEL, now, active or "")
            actions.append(CancelResponse())
        delay_ms = self._to_caller.delay_ms if self._to_caller is not None else 0.0
        truncations = []
        for item in items:
            if item.heard_in_full or not item.item_id or item.local:
                continue  # heard in full, or nothing to name in a truncate
            truncation = Truncation(item.item_id, heard_ms(item, delay_ms), sent_ms(item))
            truncations.append(truncation)
            timeline.note(Moment.TRUNCATE, now, f"{item.item_id} at {truncation.audio_end_ms} ms")
            self._transcript.assistant_cut(
                item.item_id, truncation.audio_end_ms, truncation.sent_ms
            )
            if item.orphaned:
                continue  # the session that made it is gone; only the transcript is told
            actions.append(TruncateItem(item.item_id, item.content_index, truncation.audio_end_ms))
            if cleared:
                ledger.echoes_owed += 1
                # Tells whoever plays Twilio's part (the simulator, Twilio's debugger) where
                # the bridge cut; its echo is ignored like any mark not in the queue.
                actions.append(
                    SendMark(truncation_mark_name(item.item_id, truncation.audio_end_ms))
                )
        ledger.forget_items()
        if (cleared or truncations or cancelled) and not cancel_always:  # a caller barge-in
            at = pause.paused_at if pause is not None else now  # when the caller was heard
            self._barge_ins.append(BargeIn(at, cleared, tuple(truncations), cancelled))
            cut_ms = truncations[0].audio_end_ms if truncations else None
            self._turns.barged_in(cut_ms)
            if self._observer is not None:
                self._observer.barged_in(cut_ms)
            for t in truncations:
                self.log.info(
                    "barge-in: truncated %s at %d ms of %.0f ms sent",
                    t.item_id,
                    t.audio_end_ms,
                    t.sent_ms,
                )
        return actions

    # --- was it an interruption? (INTERRUPTIONS=confirm) ---------------------------------------

    def _pause_answer(self, began_at: float, now: float) -> list[Action]:
        """The caller began to talk over the assistant: silence it at once, keep what they
        did not hear, and wait to know (nothing is cancelled or truncated yet)."""
        ledger = self._ledger
        actions: list[Action] = []
        if ledger.queued:
            self._timeline.note(Moment.CLEAR, now)
            actions.append(ClearAudio())
        pause = Pause(
            paused_at=now,
            began_at=began_at,
            limit_s=self.config.false_interruption_ms / 1000,
            silence_s=(
                SEMANTIC_VAD_SILENCE_S
                if self._session_settings.turn_detection == "semantic_vad"
                else self._session_settings.vad_silence_ms / 1000
            ),
            wait_for_transcript=self._session_settings.transcription_model is not None,
        )
        self._pause = pause
        self._timeline.note(Moment.PAUSED, now)
        if not pause.hold(ledger.hold(now)):
            return actions + self._interrupted(now, turn_over=False)  # too much to keep
        return actions

    @property
    def wake_at(self) -> float | None:
        """When the call would do something with no event in between (a pause's verdict,
        a slow tool's filler), so that the runner ticks then, not up to a tick later."""
        if self._pause is not None:
            return self._pause.next_decision_at()
        if self._filler.playing:
            return None
        due = self._filler_due()
        return due if due is not None and self._filler_wanted() else None

    def _decide(self, now: float) -> list[Action]:
        pause = self._pause
        assert pause is not None
        verdict = pause.verdict(now, self.config.backchannels)
        if verdict is Verdict.RESUME:
            return self._resume(now)
        if verdict is Verdict.INTERRUPTED:
            return self._interrupted(now)
        return []

    def _interrupted(self, now: float, turn_over: bool = True) -> list[Action]:
        """It was an interruption: cut the answer where the caller stopped hearing it, and
        answer their turn once it is over, as INTERRUPTIONS=immediate would have. What the
        model asked of tools in the answer is not done (as for any interrupted answer)."""
        pause = self._pause
        assert pause is not None
        actions = self._interrupt(now, cancel_always=False)
        for call in pause.function_calls:
            assert call.call_id  # (calls without one are dropped as they come)
            actions += self._tool_output(call.call_id, NOT_DONE_INTERRUPTED, respond=False)
        if self._observer is not None:
            self._observer.paused(now - pause.paused_at, resumed=False)
        if turn_over and pause.ended_at is not None:
            actions += self._caller_turn_ended(pause.ended_at)
        return actions

    def _resume(self, now: float) -> list[Action]:
        """It was not an interruption: the answer goes on from the very byte the caller
        stopped hearing, and what they said leaves the conversation (the model would
        answer a cough)."""
        pause, self._pause = self._pause, None
        assert pause is not None
        actions: list[Action] = []
        if pause.item_id is not None:
            actions.append(DeleteItem(pause.item_id))
            self._transcript.forget(pause.item_id)
            self._not_turns.add(pause.item_id)  # (its transcript may come yet)
        else:
            self._delete_next_commit = True
        ledger = self._ledger
        for chunk in pause.held:
            mark = ledger.resent(chunk, now)
            if mark is None:
                continue
            item = ledger.item(chunk.item_id)
            self._answer_sent(item.response_id if item is not None else "", mark, now)
            actions.append(PlayAudio(chunk.payload, mark))
        for call in pause.function_calls:
            actions += self._carry_out_call(call, now)
        paused_ms = (now - pause.paused_at) * 1000
        self._timeline.note(Moment.RESUMED, now, f"after {paused_ms:.0f} ms")
        self.log.info("not an interruption: resumed after %.0f ms", paused_ms)
        if self._observer is not None:
            self._observer.paused(now - pause.paused_at, resumed=True)
        return actions

    # --- the clock ---------------------------------------------------------------------------

    def _on_tick(self, event: ev.Event, now: float) -> list[Action]:
        """Deadlines and time limits: call it a few times a second."""
        session = self._session
        if isinstance(session.tick(now), BudgetSpent):
            # (an attempt is still opening: the budget ends it)
            return self._budget_spent(now, session.last_loss or "no new session opened in time")
        if self._phase is Phase.BRIDGING:
            silent = session.silent(now)
            if silent is not None:
                # A session that accepted the socket and then says nothing would leave the
                # caller in dead air.
                self.log.warning("Realtime session gave %s: replacing it", silent)
                self._retire_session(now)
                return self._reconnect_or_end(silent, now)
        last_words = self._last_words
        if last_words is not None:
            if now >= last_words.deadline:
                self.log.warning("the goodbye was not heard in time; ending the call regardless")
                return self._stop(now, last_words.then)
            return []
        limit = self.config.max_duration_s
        if limit and self.started_at is not None and now - self.started_at >= limit:
            return self._say_goodbye(self.config.time_limit_message, EndReason.TIME_LIMIT, now)
        if self._keypad.paused(now):
            return self._give_keys_to_model(now)  # (nothing while no session can take them)
        if self._pause is not None and now >= self._pause.next_decision_at():
            return self._decide(now)
        step = self._idle.tick(self._quiet(), now)
        if step is IdleStep.CHECK_IN:
            self.log.info("the caller has been quiet: checking in")
            self._timeline.note(Moment.IDLE_PROMPT, now)
            self._responses.request()
            return [CreateResponse(instructions=self.config.idle_prompt_instructions)]
        if step is IdleStep.HANG_UP:
            return self._say_goodbye(self.config.idle_goodbye_message, EndReason.CALLER_IDLE, now)
        return self._play_filler(now) + self._maybe_roll_over(now)

    def _quiet(self) -> bool:
        """Nobody is saying anything, nor about to: the caller has heard everything the
        assistant said, and nothing is on its way (an answer, a tool, keys)."""
        return (
            self._phase is Phase.BRIDGING
            and self._session.configured
            and self._assistant_heard
            and self._pause is None
            and not self._caller_speaking
            and not self._ledger.queued
            and not self._responses.busy
            and not self._tools.started_at
            and not self._keypad.keys
        )

    # --- a slow tool's filler -------------------------------------------------------------------

    def _play_filler(self, now: float) -> list[Action]:
        """While an operator's tool has run for TOOL_FILLER_MS with the model silent, keep
        a little of the filler queued at Twilio (so that stopping it is instant)."""
        filler = self._filler
        due = self._filler_due()
        if due is None or now < due or not self._filler_wanted():
            return []
        actions: list[Action] = []
        if not filler.playing:
            self._timeline.note(Moment.FILLER_STARTED, now)
        for piece in filler.pieces(self._ledger.queued_s()):
            item = self._ledger.new_local_item(filler=True)
            mark = self._ledger.sent(item, len(piece), now)
            actions.append(PlayAudio(base64.b64encode(piece).decode(), mark))
        return actions

    def _filler_due(self) -> float | None:
        """When the filler may begin: TOOL_FILLER_MS into the oldest tool at work."""
        started = self._tools.started_at
        if not self._filler.enabled or not started:
            return None
        return min(started.values()) + self._filler.after_s

    def _filler_wanted(self) -> bool:
        """Nothing else should be heard instead: no model audio, caller, pause or goodbye."""
        return (
            self._phase is Phase.BRIDGING
            and self._pause is None
            and self._last_words is None
            and not self._caller_speaking
            and not self._ledger.queued_model_audio()
        )

    def _stop_filler(self, now: float) -> list[Action]:
        """The model speaks, the tool returned, or the caller talks: the filler stops at
        once (and was never the model's: nothing of it is truncated or transcribed)."""
        if not self._filler.playing:
            return []
        self._filler.stopped()
        self._timeline.note(Moment.FILLER_STOPPED, now)
        return [ClearAudio()] if self._ledger.clear_filler(now) else []

    # --- ending --------------------------------------------------------------------------------

    def _on_shutdown(self, shutdown: ev.ShutdownRequested, now: float) -> list[Action]:
        return self._say_goodbye(shutdown.message, EndReason.SHUTDOWN, now)

    def _say_goodbye(self, text: str, reason: EndReason, now: float) -> list[Action]:
        """End the call politely: stop the current answer, speak `text` with nothing able to
        interrupt it, and hang up once the caller has heard it (or at the deadline)."""
        if self._last_words is not None:
            return []
        if self._phase is not Phase.BRIDGING or not self._session.configured:
            return self._stop(now, HangUp(reason))  # no session to say it with
        self.log.info("ending the call with a goodbye: %s", reason.describe())
        actions = self._interrupt(now, cancel_always=True)
        last_words = LastWords(GOODBYE_LEAD + text, now, HangUp(reason))
        return actions + self._begin_last_words(now, last_words, None)

    def _begin_last_words(
        self, now: float, last_words: LastWords, spoken_by: str | None
    ) -> list[Action]:
        """Make `last_words` the last thing the caller hears. `spoken_by`: the response that
        already says it (the model said goodbye, then called end_call); else it is asked
        for once no response is active."""
        self._timeline.note(Moment.GOODBYE, now, last_words.then.description)
        actions: list[Action] = self._stop_filler(now)
        if self._pause is not None:
            # Never resumed into: the answer held is cut where the caller is, and the
            # goodbye is asked for on its own.
            actions += self._interrupt(now, cancel_always=True)
            spoken_by = None
        last_words.deadline = self._after_queued_audio(last_words.deadline)
        self._last_words = last_words
        self._responses.owed = False
        # With turn detection off, the caller talking cannot cancel it.
        actions.append(DisableTurnDetection())
        if spoken_by is not None:
            last_words.requested, last_words.response_id = True, spoken_by
        elif self._responses.active is None:
            actions += self._request_last_words()
        return actions

    def _request_last_words(self) -> list[Action]:
        assert self._last_words is not None
        self._last_words.requested = True
        self._responses.request()
        return [CreateResponse(self._last_words.instructions, purpose=GOODBYE_PURPOSE)]

    def _after_queued_audio(self, now: float) -> float:
        """A goodbye's deadline: once what Twilio still has queued could have played, plus
        the goodbye timeout."""
        return now + self._ledger.queued_s() + self.config.goodbye_timeout_s

    def _end_once_last_words_heard(self, now: float) -> list[Action]:
        last_words = self._last_words
        if last_words is not None and last_words.generated and not self._ledger.queued:
            return self._stop(now, last_words.then)
        return []

    def _end(self, now: float, reason: EndReason, detail: str = "") -> list[Action]:
        return self._stop(now, EndStream(reason, detail))

    def _stop(self, now: float, ending: EndStream | HangUp | Transfer) -> list[Action]:
        """The call is over: whichever way it ends, it ends once."""
        if self._phase is Phase.ENDED:
            return []
        self._move(Phase.ENDED)
        self._ending = ending
        self._timeline.note(Moment.ENDED, now, ending.description)
        self._note_unheard_answers()
        return [ending]

    def _note_unheard_answers(self) -> None:
        """Answers still playing when the call ended were heard only in part: the
        transcript says so, as after a barge-in."""
        delay_ms = self._to_caller.delay_ms if self._to_caller is not None else 0.0
        for item in self._ledger.items():
            if not item.local and item.item_id and item.heard < item.sent + item.held:
                self._transcript.assistant_cut(
                    item.item_id, heard_ms(item, delay_ms), sent_ms(item)
                )

    # --- tools ---------------------------------------------------------------------------------

    def _on_function_call(self, call: ev.FunctionCallRequested, now: float) -> list[Action]:
        call_id = call.call_id
        if not call_id:
            self._note_once("bad-function-call", "ignored a function call without a call_id")
            return []
        if call_id in self._tools.seen:
            return []  # told of twice (its arguments done, then its item done): one call
        self._tools.seen.add(call_id)
        if self._pause is not None:
            # Its answer may be an interruption: done once that is known, or not at all.
            self._pause.function_calls.append(call)
            return []
        return self._carry_out_call(call, now)

    def _carry_out_call(self, call: ev.FunctionCallRequested, now: float) -> list[Action]:
        call_id = call.call_id
        assert call_id  # (calls without one are dropped as they come)
        response_id = call.response_id or self._responses.active
        if self._last_words is not None:
            # The call is ending: nothing more is done, but the model's call is answered.
            return self._tool_output(call_id, CALL_ENDING, respond=False)
        if self._responses.interrupted(response_id):
            # The caller talked over the answer that made this call: it is not carried out.
            return self._tool_output(call_id, NOT_DONE_INTERRUPTED, respond=False)
        builtin = self._tools.builtin(call.name)
        if builtin == END_CALL:
            return self._end_call_tool(call_id, response_id, now)
        if builtin == TRANSFER_CALL:
            return self._transfer_tool(call_id, call.arguments, now)
        if builtin == SEND_DTMF:
            return self._send_dtmf_tool(call_id, call.arguments, now)
        if self._tools.is_operator_tool(call.name):
            self._tools.started(call_id, call.name, now)
            self._timeline.note(Moment.TOOL_STARTED, now, call.name)
            self.log.info("running tool %s", call.name)  # never its arguments: personal data
            return [RunTool(call_id, call.name, call.arguments)]
        self.log.warning("the model called an unknown tool %r", call.name[:64])
        return self._tool_output(call_id, error(f"there is no tool named {call.name!r}"), True)

    def _on_tool_finished(self, finished: ev.ToolFinished, now: float) -> list[Action]:
        """An operator's tool returned: its output goes to the model, which goes on."""
        which = self._tools.finished(finished.call_id)
        if which is None:
            return []  # answered already
        state, name = which
        self._timeline.note(Moment.TOOL_FINISHED, now, name)
        actions = [] if self._tools.started_at else self._stop_filler(now)
        if state == "orphaned":
            return actions + self._orphaned_tool_output(finished.output)
        if self._phase is not Phase.BRIDGING:
            return actions  # no session can take it
        return actions + self._tool_output(
            finished.call_id, finished.output, respond=self._last_words is None
        )

    def _orphaned_tool_output(self, output: str) -> list[Action]:
        """A result for a session that is gone: the new session gets it as a message (its
        call_id would be refused), and goes on from it."""
        if self._phase is not Phase.BRIDGING or self._last_words is not None:
            return []
        return [AddMessage("system", ORPHANED_TOOL_MESSAGE + output), *self._want_response()]

    def _tool_output(self, call_id: str, output: str, respond: bool) -> list[Action]:
        actions: list[Action] = [AddToolOutput(call_id, output)]
        return actions + self._want_response() if respond else actions

    def _want_response(self) -> list[Action]:
        """A response.create now, or once the active response is done (asking while one
        is active is an error)."""
        return [CreateResponse()] if self._responses.want() else []

    def _end_call_tool(self, call_id: str, response_id: str | None, now: float) -> list[Action]:
        """The model ends the call. Its goodbye is normally in the same response, before
        the call: the call is hung up once the caller has heard that response. A model
        that said nothing is asked for a goodbye first."""
        self.log.info("the assistant ended the call")
        actions = self._tool_output(call_id, OK, respond=False)
        spoke = response_id if self._responses.has_spoken(response_id) else None
        last_words = LastWords(OWN_GOODBYE_INSTRUCTIONS, now, HangUp(EndReason.ASSISTANT_ENDED))
        return actions + self._begin_last_words(now, last_words, spoke)

    def _transfer_tool(self, call_id: str, arguments: str, now: float) -> list[Action]:
        """A cold transfer: the caller hears the handoff line, then Twilio dials the
        destination in place of this stream."""
        destinations = list(self.config.transfer_twiml)
        destination = self._tools.destination(arguments, destinations)
        if destination is None:
            choose = "unknown destination; choose one of: " + ", ".join(destinations)
            return self._tool_output(call_id, error(choose), respond=True)
        self.log.info("the assistant is transferring the call to %s", destination)
        actions = self._tool_output(call_id, transferring(destination), respond=False)
        twiml = self.config.transfer_twiml[destination]
        then = Transfer(EndReason.TRANSFERRED, destination, twiml=twiml)
        last_words = LastWords(GOODBYE_LEAD + self.config.transfer_message, now, then)
        return actions + self._begin_last_words(now, last_words, None)

    def _send_dtmf_tool(self, call_id: str, arguments: str, now: float) -> list[Action]:
        """Press keys on the far end's phone menu: DTMF tones played into the call. The
        model is not asked to go on: the menu answers, and server VAD hears it."""
        digits = self._tools.digits(arguments)
        if digits is None:
            return self._tool_output(call_id, BAD_DIGITS, respond=True)
        actions = self._tool_output(call_id, OK, respond=False)
        self.log.info("playing %d keypad tones", len(digits))  # never the digits
        return actions + self._play_own_audio(dtmf_mulaw(digits), now)

    def _play_own_audio(self, mulaw: bytes, now: float) -> list[Action]:
        """Queue audio the bridge made itself after whatever is playing, with marks, so
        the ledger (and a goodbye's wait) counts it like the model's."""
        item = self._ledger.new_local_item()
        actions: list[Action] = []
        step = DTMF_CHUNK_MS * MULAW_BYTES_PER_MS
        for start in range(0, len(mulaw), step):
            chunk = mulaw[start : start + step]
            mark = self._ledger.sent(item, len(chunk), now)
            actions.append(PlayAudio(base64.b64encode(chunk).decode(), mark))
        return actions

    # --- keys and turns -----------------------------------------------------------------------

    def _give_keys_to_model(self, now: float) -> list[Action]:
        if self._phase is not Phase.BRIDGING or not self._session.configured:
            return []  # kept until a session can take them (the clock retries)
        item_id, message = self._keypad.take()
        self._turn_begins(self._keypad.key_at)  # the caller's last key ends their turn
        self._transcript.caller_spoke(item_id, self._keypad.first_key_at)
        self._transcript.caller_transcript(item_id, message)
        keys = len(keys_in(message))
        self._timeline.note(Moment.KEYS, now, f"{keys} keys")  # never the digits
        self.log.info("caller entered %d keys", keys)
        return [AddMessage("user", message), *self._want_response()]

    def _turn_begins(self, caller_stopped_at: float) -> None:
        """The caller finished a turn. (Not during a goodbye: nothing after it answers.)"""
        if self._last_words is None:
            self._turns.begin(caller_stopped_at, self._responses.active)

    def _transcript_lines(self) -> tuple[TranscriptLine, ...]:
        """Caller turns as transcribed; assistant turns cut to what the caller heard."""
        lines = []
        for turn in self._transcript.turns:
            text = turn.heard_text()
            if not text:
                continue
            if is_keypad_item(turn.item_id):
                # Keys may be a PIN or a card number: the record says that keys were pressed.
                text = f"(pressed {len(keys_in(text))} keys)"
            role = "caller" if turn.role == "user" else "assistant"
            at = None
            if turn.at is not None and self.started_at is not None:
                at = round(turn.at - self.started_at, 3)
            lines.append(TranscriptLine(role, text, turn.cut, at))
        return tuple(lines)

    def _note_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._noted:
            self._noted.add(key)
            self.log.warning(message, *args)
