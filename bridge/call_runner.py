"""The I/O around one call: Twilio's WebSocket on one side, the Realtime socket on the
other, the tools and the clock.

Every decision is the call core's (`bridge.core`); this module decodes what arrives into
events, hands them to the core, and carries out the actions it returns, encoding messages
with the codecs (`bridge.wire`). Every task it starts belongs to the call and is
cancelled and awaited when the call ends, and both sockets are closed, whichever side
ended it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import replace
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.exceptions import ConnectionClosedOK, WebSocketException

from bridge.call_recording import RECORDING_FORMATS, CallRecorder, RecordingFormat
from bridge.core import events as ev
from bridge.core.actions import (
    Action,
    AdmitStream,
    AppendAudio,
    ClearAudio,
    Ending,
    EndReason,
    EndStream,
    HangUp,
    OpenBackend,
    PlayAudio,
    ReconnectBackend,
    RunTool,
    SendMark,
    ToBackend,
    Transfer,
)
from bridge.core.call import Call
from bridge.core.call_config import CallConfig, StreamLimits
from bridge.core.opening import StreamOpening
from bridge.core.playback import FILLER_ITEM_PREFIX
from bridge.core.summary import CallSummary
from bridge.metrics import Metrics
from bridge.post_call_webhook import PostCallWebhook
from bridge.realtime.endpoint import (
    OPEN_TIMEOUT_S,
    RealtimeConnection,
    RealtimeEndpoint,
    open_realtime,
)
from bridge.realtime.providers import call_fields
from bridge.recording_storage import RecordingStorage, timeline_document
from bridge.records.from_call import CallClock, record_of
from bridge.records.model import CallRecord, Recording
from bridge.records.store import CallStore
from bridge.tools import ToolContext, ToolRegistry, run_tool
from bridge.twilio_socket import TwilioLink, twilio_link
from bridge.usage import PriceTable
from bridge.wire import twilio
from bridge.wire.realtime import RealtimeCodec, codec_for
from twiml.answer import PROFILE_PARAMETER
from twiml.rest import TwilioRest
from twiml.stream_token import StreamTokenError, StreamTokens

log = logging.getLogger("bridge.call_runner")
# Record writes (and the recordings' last writes before them) still under way (a task must
# be referenced until it is done).
_RECORDS_BEING_SAVED: set[asyncio.Task[None]] = set()

# The Realtime session is paid by the minute it stays open: it must be gone within 1 s of
# the call ending, whatever the server does.
REALTIME_CLOSE_DEADLINE_S = 1.0
# A close that Twilio's side does not take within this is given up: the connection is
# dropped instead.
TWILIO_CLOSE_DEADLINE_S = 1.0
# Messages waiting for a Realtime session to open (~30 s of caller frames): past this the
# call ends rather than grow without bound. (An open socket bounds its own send buffer.)
MAX_REALTIME_BACKLOG = 1500
# Where a Twilio recording lives (its audio: add .wav or .mp3; Twilio's credentials needed).
TWILIO_API = "https://api.twilio.com/2010-04-01"
# How often the call's clock ticks (time limits, goodbye deadlines, the start timeout).
TICK_INTERVAL_S = 0.25

# A call's profile, chosen from its stream's parameters: the call's config and endpoint.
CallSetup = Callable[[Mapping[str, str]], tuple[CallConfig, RealtimeEndpoint]]
# Gives an admitted stream its line: the CallSid and the runner in, why it was refused out
# (None: admitted).
Admission = Callable[[str, "CallRunner"], str | None]


async def wait_for_records() -> None:
    """Let the recordings and call records still being written finish (at shutdown, before
    the store closes; each has its deadline)."""
    if _RECORDS_BEING_SAVED:
        await asyncio.gather(*_RECORDS_BEING_SAVED, return_exceptions=True)


class CallRunner:
    """Runs one Media Streams connection until the call ends.

    Messages from either socket reach the core in the socket's own callback, and what the
    core decides is written before that callback returns: the audio path has no queue, no
    task switch and no await per message (a call sends ~50 a second each way)."""

    def __init__(
        self,
        twilio_socket: WebSocket,
        setup: CallSetup,
        *,
        limits: StreamLimits | None = None,
        rest: TwilioRest | None = None,
        tokens: StreamTokens | None = None,
        prices: PriceTable | None = None,
        tools: ToolRegistry | None = None,
        tool_timeout_s: float = 10.0,
        metrics: Metrics | None = None,
        store: CallStore | None = None,
        admit: Admission | None = None,
        answered_at: Callable[[str], float | None] | None = None,
        webhook: PostCallWebhook | None = None,
        recording_of: Callable[[Mapping[str, str]], str] | None = None,
        recording_callback: str | None = None,
        recordings: RecordingStorage | None = None,
        recording_format: RecordingFormat = RECORDING_FORMATS["wav"],
    ) -> None:
        """`recording_of`: how an admitted call is recorded, from its stream's parameters
        (its profile): "bridge" into `recordings`, "twilio" with `recording_callback`
        (where Twilio posts the recording's status), anything else not at all.
        The bridge writes `recording_format`."""
        self.twilio = twilio_socket
        self._twilio_link: TwilioLink = twilio_link(twilio_socket)
        self._setup = setup
        self.rest = rest
        self.tokens = tokens
        self.prices = prices or PriceTable()
        self.tools = tools or ToolRegistry()
        self.tool_timeout_s = tool_timeout_s
        self.metrics = metrics
        self.store = store
        self.admit = admit
        self._answered_at = answered_at
        self.webhook = webhook
        self._recording_of = recording_of
        self._recording_callback = recording_callback
        self._recordings = recordings
        self._recording_format = recording_format
        self._recorder: CallRecorder | None = None
        self._recorded = ""  # the stream whose caller audio it records
        self.recording: Recording | None = None
        self.clock = CallClock(time.time(), time.monotonic())
        self._opening = StreamOpening(limits or StreamLimits(), time.monotonic())
        self.core: StreamOpening | Call = self._opening
        self.endpoint: RealtimeEndpoint | None = None
        self._codec: RealtimeCodec | None = None
        self._writer: twilio.StreamWriter | None = None
        self.ending: Ending | None = None
        self._realtime: RealtimeConnection | None = None
        # What the core sent while no Realtime socket was open: it goes first when one is.
        self._unsent_to_realtime: list[str] = []
        # Bumped when a session is replaced: events from an older socket are ignored.
        self._generation = 0
        self._ended = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def call(self) -> Call | None:
        """The call, once its stream was admitted."""
        return self.core if isinstance(self.core, Call) else None

    def summary(self, timeline: bool = True) -> CallSummary | None:
        call = self.call
        return call.summary(timeline) if call is not None else None

    async def run(self) -> None:
        self._spawn(self._read_twilio(), "twilio-reader")
        self._spawn(self._run_clock(), "call-clock")
        try:
            await self._ended.wait()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._close_realtime()
            if isinstance(self.ending, HangUp | Transfer):
                await self._end_through_rest(self.ending)
            await self._twilio_link.finish()
            await self._close_twilio()
            self._keep_record()

    async def say_goodbye(self, text: str) -> None:
        """Have the assistant say `text`, then hang up (used when the server shuts down)."""
        self._handle(ev.ShutdownRequested(text))

    # --- events in -------------------------------------------------------------------------

    def _handle(self, event: ev.Event) -> None:
        try:
            self._carry_out(self.core.handle(event, time.monotonic()))
        except Exception:  # a bug must end this call, never the socket's reader
            self._failed()

    async def _run_clock(self) -> None:
        while True:
            # Sooner when the call waits for a moment of its own (whether a pause was an
            # interruption): a decision a tick late is a longer pause for the caller.
            delay = TICK_INTERVAL_S
            wake_at = self.core.wake_at if isinstance(self.core, Call) else None
            if wake_at is not None:
                delay = min(delay, max(0.0, wake_at - time.monotonic()) + 0.001)
            await asyncio.sleep(delay)
            self._handle(ev.TICK)

    async def _read_twilio(self) -> None:
        self._twilio_link.start(self._from_twilio)
        code = await self._twilio_link.wait_closed()
        if code not in (None, 1000, 1001, 1005):
            # 1009: a message over the size limit; the server closed the socket.
            self._log().warning("Twilio's socket closed with code %s", code)
        self._handle(ev.TwilioClosed(self._twilio_link.stalled))

    def _from_twilio(self, data: bytes) -> None:
        try:
            event, now = twilio.decode(data), time.monotonic()
            recorder = self._recorder
            if recorder is not None:  # (RECORDING=bridge only)
                if isinstance(event, ev.CallerAudio) and event.stream_sid == self._recorded:
                    recorder.caller(event.payload, now)
                elif isinstance(event, ev.MarkPlayed):
                    recorder.played(event.name, now)
            self._carry_out(self.core.handle(event, now))
        except Exception:
            self._failed()

    def _from_realtime(self, data: bytes, generation: int) -> None:
        if generation != self._generation or self._codec is None:
            return  # retired: the core no longer listens to this session
        try:
            event = self._codec.decode(data)
            if event is not None:
                self._carry_out(self.core.handle(event, time.monotonic()))
        except Exception:
            self._failed()

    def _failed(self) -> None:
        self._log().exception("call failed")
        self._finish(EndStream(EndReason.INTERNAL_ERROR))

    # --- actions out -------------------------------------------------------------------------

    def _carry_out(self, actions: list[Action]) -> None:
        """Carry out the core's actions in order. Consecutive messages for one socket go in
        one write (a delta's media and mark, a barge-in's cancel and truncate)."""
        to_twilio: list[str] = []
        to_realtime: list[str] = []
        for action in actions:
            kind = type(action)
            if kind is PlayAudio:  # the audio path: 50 a second each way, first
                writer = self._writer
                assert writer is not None and isinstance(action, PlayAudio)
                to_twilio.append(writer.media(action.payload))
                to_twilio.append(writer.mark(action.mark))
                # (A tool's filler is not the assistant speaking: not recorded as it.)
                if self._recorder is not None and not action.mark.startswith(FILLER_ITEM_PREFIX):
                    self._recorder.sent(action.payload, action.mark, time.monotonic())
            elif kind is AppendAudio:
                assert self._codec is not None and isinstance(action, AppendAudio)
                to_realtime.append(self._codec.append_audio(action.payload))
            elif kind is ClearAudio:
                assert self._writer is not None
                to_twilio.append(self._writer.clear())
                if self._recorder is not None:
                    self._recorder.cleared(time.monotonic())
            elif kind is SendMark:
                assert self._writer is not None and isinstance(action, SendMark)
                to_twilio.append(self._writer.mark(action.name))
            elif isinstance(action, ToBackend):
                assert self._codec is not None
                to_realtime.append(self._codec.encode(action))
            else:
                if (to_twilio or to_realtime) and not self._send(to_twilio, to_realtime):
                    return
                to_twilio, to_realtime = [], []
                self._control(action)
        if to_twilio or to_realtime:
            self._send(to_twilio, to_realtime)

    def _send(self, to_twilio: list[str], to_realtime: list[str]) -> bool:
        if to_twilio and not self._twilio_link.send(to_twilio):
            self._handle(ev.TwilioClosed(self._twilio_link.stalled))
            self._finish(EndStream(EndReason.TWILIO_CLOSED))  # (the core ended it already)
            return False
        if to_realtime:
            return self._send_to_realtime(to_realtime)
        return True

    def _send_to_realtime(self, texts: list[str]) -> bool:
        realtime = self._realtime
        if realtime is None:  # between sessions: sent when the next one opens
            self._unsent_to_realtime += texts
            if len(self._unsent_to_realtime) <= MAX_REALTIME_BACKLOG:
                return True
        elif realtime.send_now(texts):
            return True
        self._handle(ev.BackendFellBehind())
        return False

    def _control(self, action: Action) -> None:
        match action:
            case AdmitStream(start=start):
                self._admit(start)
            case OpenBackend():
                self._spawn(self._run_realtime(), "realtime")
            case ReconnectBackend():
                self._generation += 1
                self._spawn(self._reconnect(action), "realtime-reconnect")
            case RunTool():
                self._spawn(self._run_tool(action), "tool")
            case EndStream() | HangUp() | Transfer():
                self._finish(action)
            case _:
                raise TypeError(f"no way to carry out {action!r}")

    def _admit(self, start: ev.StreamStarted) -> None:
        """The stream's token is genuine, fresh, for this call and unused, and a line is
        free for it: only then does the call begin, with its profile's config, and an AI
        session (which costs money) is opened for it."""
        refusal: ev.StreamRefused | None = None
        if self.tokens is not None:
            try:
                self.tokens.redeem(start.parameters.get(StreamTokens.PARAMETER), start.call_sid)
            except StreamTokenError as exc:
                refusal = ev.StreamRefused(exc.reason, token=True)  # never the token
        if refusal is None and self.admit is not None:
            why = self.admit(start.call_sid, self)
            if why is not None:
                refusal = ev.StreamRefused(why)
        if refusal is not None:
            log.warning("refused the media stream of call %s: %s", start.call_sid, refusal.why)
            self._handle(refusal)
            return
        config, self.endpoint = self._setup(start.parameters)
        self._codec = codec_for(self.endpoint.dialect)
        self._writer = twilio.StreamWriter(start.stream_sid)
        answered_at = self._answered_at(start.call_sid) if self._answered_at else None
        self.core = Call(
            config, observer=self.metrics, guard=self._opening.guard, answered_at=answered_at
        )
        self._handle(start)
        call = self.call
        recording = self._recording_of(start.parameters) if self._recording_of else "off"
        if (
            recording == "bridge"
            and self._recordings is not None
            and call is not None
            and call.started_at is not None
        ):
            recorder: CallRecorder = self._recordings.recorder(
                start.call_sid, self._recording_format, call.started_at
            )
            self._recorder, self._recorded = recorder, start.stream_sid
            self._spawn(recorder.run(), "recorder")
        if recording == "twilio" and self._recording_callback and self.rest is not None:
            self._spawn(self._start_recording(start, self._recording_callback), "recording")

    async def _start_recording(self, start: ev.StreamStarted, callback: str) -> None:
        """Ask Twilio to record the call (off the audio path: the call goes on meanwhile,
        and whatever happens to the request, the call is not touched by it)."""
        assert self.rest is not None
        try:
            sid = await self.rest.start_recording(start.account_sid, start.call_sid, callback)
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self._log().error("Twilio did not start the recording: %s", why)
            self.recording = Recording("twilio", "failed", error=why[:300])
            return
        url = f"{TWILIO_API}/Accounts/{start.account_sid}/Recordings/{sid}"
        self.recording = Recording("twilio", "in-progress", sid, url)
        self._log().info("Twilio is recording the call: %s", sid)

    async def _run_realtime(self, open_within_s: float = OPEN_TIMEOUT_S) -> None:
        generation = self._generation
        call, endpoint = self.call, self.endpoint
        assert call is not None and endpoint is not None
        try:
            fields = call_fields(call.call_sid, call.account_sid, call.stream_sid, call.parameters)
            if open_within_s <= 0:
                raise TimeoutError("no time left in the reconnect budget")
            realtime = await open_realtime(endpoint, fields, open_within_s)
        except (OSError, TimeoutError, WebSocketException) as exc:
            if generation == self._generation:
                reason = f"could not connect to {endpoint.safe_url}: " + _describe(exc, endpoint)
                self._handle(ev.BackendClosed(reason))
            return
        if generation != self._generation:  # superseded while connecting: never used
            await self._close_socket(realtime)
            return
        self._realtime = realtime
        # The session's configuration goes first; then the core, now listening, reads
        # what the server sent since the handshake (session.created at least).
        self._handle(ev.BackendOpened())
        if self._unsent_to_realtime:
            unsent, self._unsent_to_realtime = self._unsent_to_realtime, []
            self._send_to_realtime(unsent)
        realtime.deliver_to(lambda data: self._from_realtime(data, generation))
        await realtime.wait_closed()
        closed = realtime.protocol.close_exc
        if isinstance(closed, ConnectionClosedOK):
            reason = f"closed by the server (code {realtime.close_code})"
        else:
            reason = f"connection lost ({closed})"
        if generation == self._generation:
            self._handle(ev.BackendClosed(reason))

    async def _reconnect(self, action: ReconnectBackend) -> None:
        """Retire the current socket (its late events are ignored), wait, open a new one
        within what is left of the budget. The generation was bumped when the action was
        taken, so nothing the old socket reports in between can start a second reconnect."""
        give_up_at = time.monotonic() + action.give_up_after_s
        realtime, self._realtime = self._realtime, None
        if realtime is not None:
            await self._close_socket(realtime)
        await asyncio.sleep(action.delay_s)
        await self._run_realtime(give_up_at - time.monotonic())

    async def _run_tool(self, action: RunTool) -> None:
        """An operator's tool, off the audio path: its slowness or failure is the model's
        to hear about (as the tool's output), never the call's."""
        tool = self.tools.get(action.name)
        call = self.call
        assert call is not None
        if tool is None:
            output = '{"error": "that tool is not available"}'
        else:
            parameters = call.parameters
            context = ToolContext(
                call_sid=call.call_sid,
                from_number=parameters.get("From", ""),
                to_number=parameters.get("To", ""),
                profile=parameters.get(PROFILE_PARAMETER),
            )
            output = await run_tool(tool, action.arguments, context, self.tool_timeout_s)
        self._handle(ev.ToolFinished(action.call_id, output))

    def _finish(self, ending: Ending) -> None:
        if self.ending is None:
            self.ending = ending
            call = self.call
            if call is not None:  # (when the core ended it, it noted that already)
                call.ended_outside(ending, time.monotonic())
        self._ended.set()

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coroutine, name=f"{name} {id(self):x}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log().error("call task failed", exc_info=task.exception())
            self._finish(EndStream(EndReason.INTERNAL_ERROR))

    def _log(self) -> logging.LoggerAdapter[logging.Logger]:
        call = self.call
        return call.log if call is not None else logging.LoggerAdapter(log, {"call_sid": "-"})

    # --- the end -------------------------------------------------------------------------------

    def _keep_record(self) -> None:
        """Log the call's end with its usage, count it, and finish its recording and store
        its record once its line is free."""
        ending = self.ending
        summary = self.summary()
        if summary is None:
            # Never admitted (no start, or refused): counted, but no record, so a replayed
            # upgrade cannot overwrite a genuine call's.
            if self.metrics is not None:
                outcome = ending.reason.outcome if ending is not None else None
                self.metrics.call_ended(outcome, {}, None)
            return
        endpoint = self.endpoint
        model = summary.model or (endpoint.model if endpoint is not None else "")
        reason = ending.description if ending is not None else "cancelled"
        usage = summary.usage.summary(self.prices, model, summary.transcription_model)
        self._log().info("call ended: %s; %s", reason, usage)
        record = record_of(
            summary,
            clock=self.clock,
            ended_wall=time.time(),
            ending=ending,
            model=model,
            prices=self.prices,
            recording=self.recording,
        )
        if self.metrics is not None:
            self.metrics.call_ended(
                ending.reason.outcome if ending is not None else None,
                record.tokens,
                record.cost_usd,
            )
        if self.store is not None or self._recorder is not None:
            # After the line is freed: a slow disk or bucket never holds a caller's line.
            task = asyncio.create_task(self._store(record), name=f"save {summary.call_sid}")
            _RECORDS_BEING_SAVED.add(task)
            task.add_done_callback(_RECORDS_BEING_SAVED.discard)

    async def _store(self, record: CallRecord) -> None:
        recorder = self._recorder
        if recorder is not None:  # the recording's end first: the record says how it went
            recording = await recorder.finish()
            record = replace(record, recording=recording)
            if self._recordings is not None and recording.status == "completed":
                await self._recordings.keep_timeline(recording, timeline_document(record))
        if self.store is None:
            return
        webhook = self.webhook
        delivery = webhook.delivery_for(record) if webhook is not None else None
        try:
            if not await self.store.save(record, delivery):
                self._log().warning("a record of this call is stored already: kept that one")
            elif webhook is not None:
                webhook.wake()
        except Exception as exc:  # a full disk must not take calls down with it
            self._log().error("could not store the call record: %s", exc)

    async def _close_realtime(self) -> None:
        realtime, self._realtime = self._realtime, None
        if realtime is not None:
            await self._close_socket(realtime)

    @staticmethod
    async def _close_socket(realtime: RealtimeConnection) -> None:
        try:
            await asyncio.wait_for(realtime.close(), REALTIME_CLOSE_DEADLINE_S)
        except (TimeoutError, OSError, WebSocketException):
            pass
        finally:
            # If the close handshake did not finish in time, drop the TCP connection.
            if realtime.transport is not None and not realtime.transport.is_closing():
                realtime.transport.abort()

    async def _end_through_rest(self, ending: HangUp | Transfer) -> None:
        """End the phone call itself through Twilio's REST API: hang it up (no TwiML after
        <Connect> runs), or hand it to a transfer's TwiML (Twilio ends this stream and
        dials). A call already over is no error; a failure still ends the stream."""
        call = self.call
        what = "transfer" if isinstance(ending, Transfer) else "hang-up"
        if self.rest is None or call is None or not call.call_sid or not call.account_sid:
            self._log().warning("no TWILIO_AUTH_TOKEN: the %s ends only the stream", what)
            return
        try:
            if isinstance(ending, Transfer):
                done = await self.rest.update_call(call.account_sid, call.call_sid, ending.twiml)
            else:
                done = await self.rest.hang_up(call.account_sid, call.call_sid)
            if not done:
                self._log().info("the call was already over at its %s", what)
        except Exception as exc:
            self._log().error("%s through Twilio's REST API failed: %s", what, exc)

    async def _close_twilio(self) -> None:
        """Close Twilio's socket, with a deadline: a peer that does not read would keep the
        close (and the line, the record, a shutdown's drain) waiting for ever."""
        if self.twilio.application_state is not WebSocketState.CONNECTED:
            return
        ending = self.ending
        code = ending.close_code if isinstance(ending, EndStream) else 1000
        try:
            await asyncio.wait_for(self.twilio.close(code=code), TWILIO_CLOSE_DEADLINE_S)
        except TimeoutError:
            self._log().warning("Twilio's socket did not take the close in time: dropped")
            self._twilio_link.abort()
        except (RuntimeError, WebSocketDisconnect, OSError):
            pass


def _describe(exc: BaseException, endpoint: RealtimeEndpoint) -> str:
    """An error's text with anything that may be a secret (the URL's query, header values:
    a library error may quote a header it refused) taken out."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = text.replace(endpoint.url, endpoint.safe_url)
    for secret in endpoint.secrets():
        text = text.replace(secret, "<redacted>")
    return text
