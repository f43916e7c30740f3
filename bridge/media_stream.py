"""The I/O around one call: Twilio's WebSocket on one side, the Realtime socket on the other.

All decisions are the `Call` core's; this module only moves text and carries out actions.
Every task it starts belongs to the call and is cancelled and awaited when the call ends,
and both sockets are closed, whichever side ended it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.exceptions import ConnectionClosedOK, WebSocketException

from bridge.call import (
    Action,
    Call,
    CallConfig,
    EndCall,
    HangUp,
    OpenRealtime,
    ReconnectRealtime,
    RunTool,
    SendToRealtime,
    SendToTwilio,
    TransferCall,
)
from bridge.call_record import CallClock, record_of
from bridge.media_socket import twilio_link
from bridge.metrics import Metrics, outcome_of
from bridge.realtime.endpoint import (
    OPEN_TIMEOUT_S,
    RealtimeConnection,
    RealtimeEndpoint,
    open_realtime,
)
from bridge.realtime.providers import call_fields
from bridge.records import CallRecord, CallStore
from bridge.tools import ToolContext, ToolRegistry, run_tool
from bridge.usage import PriceTable
from twiml.rest import TwilioRest
from twiml.stream_token import StreamTokenError, StreamTokens

log = logging.getLogger("bridge.media_stream")
# Record writes still under way (a task must be referenced until it is done).
_RECORDS_BEING_SAVED: set[asyncio.Task[None]] = set()

# The Realtime session is paid by the minute it stays open: it must be gone within 1 s of
# the call ending, whatever the server does.
REALTIME_CLOSE_DEADLINE_S = 1.0
# Messages waiting for a Realtime session to open (~30 s of caller frames): past this the
# call ends rather than grow without bound. (An open socket bounds its own send buffer.)
MAX_REALTIME_BACKLOG = 1500
# A close that Twilio's side does not take within this is given up: the connection is
# dropped instead.
TWILIO_CLOSE_DEADLINE_S = 1.0
# How often the call's clock ticks (time limits, goodbye deadlines, the start timeout).
TICK_INTERVAL_S = 0.25

# Gives an admitted stream its line: the CallSid and the runner in, why it was refused out
# (None: admitted).
Admission = Callable[[str, "CallRunner"], str | None]
# Picks a call's profile (config and endpoint) from its stream's custom parameters.
ProfileChooser = Callable[[Mapping[str, str]], tuple[CallConfig, RealtimeEndpoint]]


async def wait_for_records() -> None:
    """Let the call records still being written finish (at shutdown, before the store
    closes)."""
    if _RECORDS_BEING_SAVED:
        await asyncio.gather(*_RECORDS_BEING_SAVED, return_exceptions=True)


class CallRunner:
    """Runs one Media Streams connection until the call ends.

    Messages from either socket reach the core in the socket's own callback, and what the
    core decides is written before that callback returns: the audio path has no queue, no
    task switch and no await per message (a call sends ~50 a second each way)."""

    def __init__(
        self,
        twilio: WebSocket,
        endpoint: RealtimeEndpoint,
        config: CallConfig,
        rest: TwilioRest | None = None,
        tokens: StreamTokens | None = None,
        prices: PriceTable | None = None,
        tools: ToolRegistry | None = None,
        profile_for: ProfileChooser | None = None,
        tool_timeout_s: float = 10.0,
        metrics: Metrics | None = None,
        store: CallStore | None = None,
        admit: Admission | None = None,
    ) -> None:
        self.twilio = twilio
        self._twilio_link = twilio_link(twilio)
        self.endpoint = endpoint
        self.metrics = metrics
        self.store = store
        self.clock = CallClock(time.time(), time.monotonic())
        self.call = Call(config, observer=metrics)
        self.rest = rest
        self.tokens = tokens
        self.prices = prices or PriceTable()
        self.tools = tools or ToolRegistry()
        self.profile_for = profile_for
        self.tool_timeout_s = tool_timeout_s
        self.admit = admit
        self._transfer_to: str | None = None  # TwiML the call is handed to at the end
        self._admitted_stream = False  # its start passed the stream-token check
        self.end_reason: str | None = None
        self._close_code = 1000  # a normal close lets Twilio run the TwiML after <Connect>
        self._hang_up_requested = False
        self._realtime: RealtimeConnection | None = None
        # What the core sent while no Realtime socket was open: it goes first when one is.
        self._unsent_to_realtime: list[str] = []
        # Bumped when a session is replaced: events from an older socket are ignored.
        self._generation = 0
        self._ended = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

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
            if self._transfer_to is not None or self._hang_up_requested:
                await self._end_through_rest(self._transfer_to)
            await self._twilio_link.finish()
            await self._close_twilio()
            self._keep_record()

    def _keep_record(self) -> None:
        """Log the call's end with its usage, count it, and store its record."""
        call = self.call
        model = call.session_model or self.endpoint.model
        transcriber = call.config.session.transcription_model
        reason = self.end_reason or "cancelled"
        call.log.info(
            "call ended: %s; %s", reason, call.usage.summary(self.prices, model, transcriber)
        )
        outcome = outcome_of(reason)
        if not self._admitted_stream:
            # Never admitted (no start, or its token refused): counted, but no record, so a
            # replayed upgrade cannot overwrite a genuine call's.
            if self.metrics is not None:
                self.metrics.call_ended(outcome, {}, None)
            return
        call.note_unheard_answers()
        record = record_of(
            call,
            clock=self.clock,
            ended_wall=time.time(),
            outcome=outcome,
            end_reason=reason,
            model=model,
            prices=self.prices,
        )
        if self.metrics is not None:
            self.metrics.call_ended(outcome, record.tokens, record.cost_usd)
        if self.store is not None:
            # Written after the line is freed: a slow disk never holds a caller's line.
            task = asyncio.create_task(self._store(record), name=f"save {call.call_sid}")
            _RECORDS_BEING_SAVED.add(task)
            task.add_done_callback(_RECORDS_BEING_SAVED.discard)

    async def _store(self, record: CallRecord) -> None:
        assert self.store is not None
        try:
            if not await self.store.save(record):
                self.call.log.warning("a record of this call is stored already: kept that one")
        except Exception as exc:  # a full disk must not take calls down with it
            self.call.log.error("could not store the call record: %s", exc)

    async def say_goodbye(self, text: str, reason: str) -> None:
        """Have the assistant say `text`, then hang up (used when the server shuts down)."""
        self._carry_out(self.call.say_goodbye(text, reason, time.monotonic()))

    async def _run_clock(self) -> None:
        while True:
            await asyncio.sleep(TICK_INTERVAL_S)
            self._carry_out(self.call.tick(time.monotonic()))

    # --- readers ---------------------------------------------------------------------------

    async def _read_twilio(self) -> None:
        self._twilio_link.start(self._from_twilio)
        code = await self._twilio_link.wait_closed()
        if code not in (None, 1000, 1001, 1005):
            # 1009: a message over the size limit; the server closed the socket.
            self.call.log.warning("Twilio's socket closed with code %s", code)
        self._carry_out(self.call.twilio_closed(self._twilio_link.stalled))

    def _from_twilio(self, data: bytes) -> None:
        try:
            self._carry_out(self.call.receive_twilio(data, time.monotonic()))
        except Exception:  # a bug must end this call, never the socket's reader
            self._failed()

    def _from_realtime(self, data: bytes, generation: int) -> None:
        if generation != self._generation:
            return  # retired: the core no longer listens to this session
        try:
            self._carry_out(self.call.receive_realtime(data, time.monotonic()))
        except Exception:
            self._failed()

    def _failed(self) -> None:
        self.call.log.exception("call failed")
        self._finish("internal error")

    async def _run_realtime(self, open_within_s: float = OPEN_TIMEOUT_S) -> None:
        generation = self._generation
        try:
            call = self.call
            fields = call_fields(
                call.call_sid, call.account_sid, call.stream_sid, call.custom_parameters
            )
            if open_within_s <= 0:
                raise TimeoutError("no time left in the reconnect budget")
            realtime = await open_realtime(self.endpoint, fields, open_within_s)
        except (OSError, TimeoutError, WebSocketException) as exc:
            if generation == self._generation:
                reason = f"could not connect to {self.endpoint.safe_url}: "
                reason += _describe(exc, self.endpoint)
                self._carry_out(self.call.realtime_closed(reason, time.monotonic()))
            return
        if generation != self._generation:  # superseded while connecting: never used
            await self._close_socket(realtime)
            return
        self._realtime = realtime
        # The session's configuration goes first; then the core, now listening, reads
        # what the server sent since the handshake (session.created at least).
        self._carry_out(self.call.realtime_connected(time.monotonic()))
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
            self._carry_out(self.call.realtime_closed(reason, time.monotonic()))

    async def _reconnect(self, action: ReconnectRealtime) -> None:
        """Retire the current socket (its late events are ignored), wait, open a new one
        within what is left of the budget. The generation was bumped when the action was
        taken, so nothing the old socket reports in between can start a second reconnect."""
        give_up_at = time.monotonic() + action.give_up_after_s
        realtime, self._realtime = self._realtime, None
        if realtime is not None:
            await self._close_socket(realtime)
        await asyncio.sleep(action.delay_s)
        await self._run_realtime(give_up_at - time.monotonic())

    # --- actions ---------------------------------------------------------------------------

    def _carry_out(self, actions: list[Action]) -> None:
        """Carry out the core's actions in order. Consecutive messages for one socket go in
        one write (a delta's media and mark, a barge-in's cancel and truncate)."""
        to_twilio: list[str] = []
        to_realtime: list[str] = []
        for action in actions:
            if type(action) is SendToTwilio:
                to_twilio.append(action.text)
                continue
            if type(action) is SendToRealtime:
                to_realtime.append(action.text)
                continue
            if to_twilio or to_realtime:
                if not self._send(to_twilio, to_realtime):
                    return
                to_twilio, to_realtime = [], []
            self._carry_out_other(action)
        if to_twilio or to_realtime:
            self._send(to_twilio, to_realtime)

    def _send(self, to_twilio: list[str], to_realtime: list[str]) -> bool:
        if to_twilio and not self._twilio_link.send(to_twilio):
            self._carry_out(self.call.twilio_closed(self._twilio_link.stalled))
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
        self._finish("the Realtime connection fell too far behind")
        return False

    def _carry_out_other(self, action: Action) -> None:
        if isinstance(action, ReconnectRealtime):
            self._generation += 1
            self._spawn(self._reconnect(action), "realtime-reconnect")
        elif isinstance(action, OpenRealtime):
            if self._admitted(action):
                if self.profile_for is not None:
                    config, self.endpoint = self.profile_for(action.custom_parameters)
                    self.call.use_config(config)
                self._spawn(self._run_realtime(), "realtime")
        elif isinstance(action, RunTool):
            self._spawn(self._run_tool(action), "tool")
        elif isinstance(action, TransferCall):
            self._transfer_to = action.twiml
            self._finish(action.reason)
        elif isinstance(action, EndCall):
            self._finish(action.reason)
        elif isinstance(action, HangUp):
            self._hang_up_requested = True
            self._finish(action.reason)

    async def _run_tool(self, action: RunTool) -> None:
        """An operator's tool, off the audio path: its slowness or failure is the model's
        to hear about (as the tool's output), never the call's."""
        tool = self.tools.get(action.name)
        call = self.call
        if tool is None:
            output = '{"error": "that tool is not available"}'
        else:
            context = ToolContext(
                call_sid=call.call_sid or "",
                from_number=call.custom_parameters.get("From", ""),
                to_number=call.custom_parameters.get("To", ""),
                profile=call.custom_parameters.get("Profile"),
            )
            output = await run_tool(tool, action.arguments, context, self.tool_timeout_s)
        self._carry_out(call.tool_finished(action.call_id, output, time.monotonic()))

    def _admitted(self, start: OpenRealtime) -> bool:
        """The stream's token is genuine, fresh, for this call and unused: only then is an
        AI session, which costs money, opened for it."""
        if self.tokens is None:
            return self._takes_a_line(start.call_sid)
        try:
            self.tokens.redeem(start.custom_parameters.get(StreamTokens.PARAMETER), start.call_sid)
        except StreamTokenError as exc:
            self.call.log.warning("refused the media stream: %s", exc)  # never the token
            self._close_code = 1008  # policy violation
            self._finish(f"stream token refused ({exc.reason})")
            return False
        return self._takes_a_line(start.call_sid)

    def _takes_a_line(self, call_sid: str) -> bool:
        """The line reserved for this call (or a free one), unless the call already has a
        live stream: only now does the stream hold a line at all."""
        refusal = self.admit(call_sid, self) if self.admit is not None else None
        if refusal is not None:
            self.call.log.warning("refused the media stream: %s", refusal)
            self._close_code = 1013  # try again later: Twilio goes on to the fallback
            self._finish(f"stream refused ({refusal})")
            return False
        self._admitted_stream = True
        return True

    def _finish(self, reason: str) -> None:
        if self.end_reason is None:
            self.end_reason = reason
        self._ended.set()

    def _spawn(self, coroutine, name: str) -> asyncio.Task[None]:  # type: ignore[no-untyped-def]
        task = asyncio.create_task(coroutine, name=f"{name} {id(self):x}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.call.log.error("call task failed", exc_info=task.exception())
            self._finish("internal error")

    # --- teardown --------------------------------------------------------------------------

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

    async def _end_through_rest(self, transfer_to: str | None) -> None:
        """End the phone call itself through Twilio's REST API: hang it up (no TwiML after
        <Connect> runs), or hand it to a transfer's TwiML (Twilio ends this stream and
        dials). A call already over is no error; a failure still ends the stream."""
        call = self.call
        what = "hang-up" if transfer_to is None else "transfer"
        if self.rest is None or not call.call_sid or not call.account_sid:
            call.log.warning("no TWILIO_AUTH_TOKEN: the %s ends only the stream", what)
            return
        try:
            if transfer_to is None:
                done = await self.rest.hang_up(call.account_sid, call.call_sid)
            else:
                done = await self.rest.update_call(call.account_sid, call.call_sid, transfer_to)
            if not done:
                call.log.info("the call was already over at its %s", what)
        except Exception as exc:
            call.log.error("%s through Twilio's REST API failed: %s", what, exc)

    async def _close_twilio(self) -> None:
        """Close Twilio's socket, with a deadline: a peer that does not read would keep the
        close (and the line, the record, a shutdown's drain) waiting for ever."""
        if self.twilio.application_state is not WebSocketState.CONNECTED:
            return
        try:
            await asyncio.wait_for(
                self.twilio.close(code=self._close_code), TWILIO_CLOSE_DEADLINE_S
            )
        except TimeoutError:
            self.call.log.warning("Twilio's socket did not take the close in time: dropped")
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
