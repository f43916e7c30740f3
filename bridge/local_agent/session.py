"""One Realtime session over one WebSocket: client events in, server events out.

Client events are handled strictly in order by the connection's reader; the only other task
a session owns is the active response's streamer (see responder.py), which never outlives
the socket.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from bridge.audio import synthetic_speech_mulaw

from . import formats, server_events
from .agent_options import AgentOptions, FunctionCallPlan
from .config import SessionConfig, VadSettings, function_names
from .conversation import Conversation, Item
from .responder import (
    CHARS_PER_TEXT_TOKEN,
    IN_AUDIO_TOKENS_PER_S,
    OUT_AUDIO_TOKENS_PER_S,
    AgentResponse,
    PlannedFunctionCall,
    PlannedItem,
    ResponseRun,
)
from .server_events import BETA, GA, RealtimeError, new_id
from .vad import FRAME_MS, EnergyVad

log = logging.getLogger(__name__)

# Caller speech shorter than this is transcribed as nothing (see _commit).
WORDS_MIN_MS = 600

DEFAULT_MODEL = "gpt-realtime"
DEFAULT_GREETING = "Hello! This is the phone bridge's local echo agent."
MS_PER_CHARACTER = 60  # synthetic "speech" length for a text
MAX_SYNTHETIC_MS = 3000
MIN_COMMIT_MS = 100  # the service refuses to commit less
# turn_detection.threshold (0..1, default 0.5) moves the energy threshold by this many dB per
# unit, so a client raising the threshold makes the VAD less sensitive, as on the service.
DB_PER_THRESHOLD_UNIT = 40.0

Handler = Callable[[dict[str, Any]], Awaitable[None]]

# Content part types a client-created message takes, per role, as the service checks them:
# (the types accepted, the types its error names). A role with one named type gets the
# service's "Value must be 'x'." wording, the user role "Supported values are: ...".
_CONTENT_TYPES: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]] = {
    # GA also documents input_image for user items; its error still names only these two.
    (GA, "user"): (("input_text", "input_audio", "input_image"), ("input_text", "input_audio")),
    (GA, "assistant"): (("output_text",), ("output_text",)),
    (GA, "system"): (("input_text",), ("input_text",)),
    (BETA, "user"): (("input_text", "input_audio"), ("input_text", "input_audio")),
    (BETA, "assistant"): (("text",), ("text",)),
    (BETA, "system"): (("input_text",), ("input_text",)),
}
_TEXT_PART_TYPES = ("input_text", "output_text", "text")


class AgentSession:
    def __init__(
        self,
        connection: ServerConnection,
        options: AgentOptions,
        *,
        claim_auto_drop: Callable[[], bool] | None = None,
    ) -> None:
        """``claim_auto_drop``: asked once this session reaches ``options.drop_after_ms``;
        the session is dropped only if it answers True (LocalAgent lets one session per agent
        be dropped). Without it, the session is dropped."""
        self._conn = connection
        self.options = options
        request = connection.request
        assert request is not None  # the handler only runs after the handshake
        self.path: str = request.path
        self.headers: dict[str, str] = {k.lower(): v for k, v in request.headers.raw_items()}
        self.dialect: str = BETA if self._speaks_beta() else GA
        self.session_id = new_id("sess")
        self.conversation_id = new_id("conv")
        self.config = SessionConfig.initial(
            self.session_id, self._model_from_path(), self.dialect, options.max_session_s
        )

        self.received: list[dict[str, Any]] = []
        self.appends_received = 0
        self.input_audio = bytearray()  # every appended byte, in arrival order
        self.truncations: list[dict[str, Any]] = []
        self.responses: list[AgentResponse] = []
        self.errors_sent: list[dict[str, Any]] = []
        # (role, text) of every text message the client created, in order of creation (a
        # log: conversation.item.delete does not remove entries).
        self.conversation_texts: list[tuple[str, str]] = []
        # Every function call the agent made ({"call_id", "name", "arguments",
        # "response_index"}), and every function_call_output accepted ({"call_id", "name",
        # "output"}), in order.
        self.function_calls: list[dict[str, Any]] = []
        self.function_outputs: list[dict[str, Any]] = []
        # Why the agent did not do something a test planned (e.g. a function call for a
        # tool the session never declared), in order.
        self.notes: list[str] = []
        self.response_audio_ms = 0.0  # response audio sent in this session, all responses
        self.dropped = False  # the agent aborted the connection (drop() or drop_after_ms)
        self.expired = False  # the session hit options.max_session_s
        self.opened_at = time.monotonic()
        self.closed_at: float | None = None
        self._closed = asyncio.Event()
        self._claim_auto_drop = claim_auto_drop or (lambda: True)
        self._auto_drop_checked = False

        self.conversation = Conversation()
        self._active: ResponseRun | None = None
        self._assistant_audio = False
        self._pending_audio_item: str | None = None  # committed caller turn not yet answered
        self._committed_items = 0  # caller audio items committed in this session
        self._later: set[asyncio.Task[None]] = set()  # events sent after a delay
        self._pending_text: str | None = None  # client text/tool output not yet answered
        self._last_input_tokens = (0, 0)  # (text, audio) of the previous response, for caching

        # The uncommitted input buffer, placed on the session's input timeline (ms since the
        # first append) by the position of its first byte.
        self._buffer = bytearray()
        self._buffer_start_ms = 0
        self._vad_pos = 0  # bytes of _buffer already framed and fed to the VAD
        self._vad = EnergyVad(options.vad_threshold_dbfs, options.vad_onset_ms, 500)
        self._speech_item_id: str | None = None
        self._speech_start_ms = 0

        self._handlers: dict[str, Handler] = {
            "session.update": self._on_session_update,
            "session.close": self._on_session_close,
            "input_audio_buffer.append": self._on_append,
            "input_audio_buffer.commit": self._on_commit,
            "input_audio_buffer.clear": self._on_clear,
            "conversation.item.create": self._on_item_create,
            "conversation.item.truncate": self._on_truncate,
            "conversation.item.delete": self._on_item_delete,
            "conversation.item.retrieve": self._on_item_retrieve,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
        }

    def _speaks_beta(self) -> bool:
        """Beta as OpenAI chooses it (the OpenAI-Beta header) or as Azure does (its preview
        API, /openai/realtime?api-version=...); GA otherwise."""
        if "realtime=v1" in self.headers.get("openai-beta", "").replace(" ", "").lower():
            return True
        parts = urlsplit(self.path)
        return parts.path.rstrip("/").endswith("/openai/realtime") and "api-version" in (
            parse_qs(parts.query)
        )

    @property
    def query(self) -> dict[str, str]:
        """The handshake's query parameters (first value of each)."""
        return {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}

    def _model_from_path(self) -> str:
        query = parse_qs(urlsplit(self.path).query)
        for key in ("model", "deployment"):
            if query.get(key):
                return query[key][0]
        return DEFAULT_MODEL

    # --- public helpers -------------------------------------------------------------------

    async def drop(self) -> None:
        """Abort the TCP connection without a close frame, as a network failure or a backend
        crash would; returns once the session is torn down. No-op if already closed."""
        if self._abort_connection():
            await self._closed.wait()

    def _abort_connection(self) -> bool:
        if self._closed.is_set() or self._conn.state is State.CLOSED:
            return False
        self.dropped = True
        log.info("local agent session %s: dropping the connection", self.session_id)
        self._conn.transport.abort()
        return True

    def maybe_auto_drop(self) -> bool:
        """Drop the connection if ``drop_after_ms`` of response audio were sent; True if so.

        Synchronous, so the response streamer can call it between deltas and stop.
        """
        limit = self.options.drop_after_ms
        if limit is None or self._auto_drop_checked or self.response_audio_ms < limit:
            return False
        self._auto_drop_checked = True
        return self._claim_auto_drop() and self._abort_connection()

    async def wait_closed(self, timeout: float) -> bool:
        """True once the socket is closed (either side), False if ``timeout`` passes first."""
        try:
            async with asyncio.timeout(timeout):
                await self._closed.wait()
        except TimeoutError:
            return False
        return True

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        log.info(
            "local agent session %s opened (%s dialect, path %s)",
            self.session_id,
            self.dialect,
            self.path.split("?", 1)[0],  # a gateway-style ?token= must not reach the log
        )
        limit = self.options.max_session_s
        loop = asyncio.get_running_loop()
        deadline = None if limit is None else loop.time() + limit - self._age()
        try:
            await self.emit("session.created", {"session": self.config.render(self.dialect)})
            try:
                # Past the deadline the reader is cancelled wherever it is: the session is
                # over, whatever it was doing.
                async with asyncio.timeout_at(deadline) as lifetime:
                    async for message in self._conn:
                        await self._dispatch(message)
            except TimeoutError:
                if not lifetime.expired():
                    raise
                assert limit is not None
                await self._expire(limit)
        except ConnectionClosed:
            pass
        finally:
            for task in self._later:
                task.cancel()
            try:
                if self._active is not None:
                    reason = "connection_dropped" if self.dropped else "client_disconnected"
                    await self._active.abort(reason)
            finally:
                self.closed_at = time.monotonic()
                self._closed.set()
                log.info(
                    "local agent session %s closed (%d responses, %d errors sent)",
                    self.session_id,
                    len(self.responses),
                    len(self.errors_sent),
                )

    def _age(self) -> float:
        return time.monotonic() - self.opened_at

    async def _expire(self, limit_s: float) -> None:
        """The service's end of a session at its maximum duration: the error, then 1001."""
        self.expired = True
        log.info("local agent session %s hit its maximum duration", self.session_id)
        if self._active is not None:
            await self._active.abort("session_expired")
        error = server_events.session_expired(limit_s)
        await self._send_error(error, None)
        await self._conn.close(1001, error.message)

    async def emit(self, name: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        """Send one server event under its logical (GA) name; None if the dialect lacks it."""
        wire = server_events.wire_name(self.dialect, name)
        if wire is None:
            return None
        event = {"type": wire, "event_id": new_id("event"), **fields}
        await self._conn.send(orjson.dumps(event), text=True)
        return event

    async def _send_error(self, error: RealtimeError, client_event_id: str | None) -> None:
        body = error.body(client_event_id)
        self.errors_sent.append({"type": "error", "error": body})
        log.debug("session %s: error %s: %s", self.session_id, error.code, error.message)
        await self.emit("error", {"error": body})

    async def _dispatch(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            await self._send_error(server_events.binary_frame(), None)
            return
        try:
            event = orjson.loads(message)
        except orjson.JSONDecodeError:
            await self._send_error(server_events.invalid_json(), None)
            return
        if not isinstance(event, dict):
            await self._send_error(server_events.invalid_type("event", "an object"), None)
            return
        kind = event.get("type")
        if kind == "input_audio_buffer.append":
            self.appends_received += 1
        else:
            self.received.append(event)
        client_event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        try:
            if kind is None:
                raise server_events.missing_parameter("type")
            handler = self._handlers.get(kind) if isinstance(kind, str) else None
            if handler is None:
                raise server_events.unknown_event(kind)
            await handler(event)
        except RealtimeError as error:
            await self._send_error(error, client_event_id)
        except ConnectionClosed:
            raise
        except Exception:
            # A bug here must not take the session (or the server) down with it.
            log.exception("session %s: failed to handle %s", self.session_id, kind)
            await self._send_error(server_events.server_error(), client_event_id)

    # --- hooks used by ResponseRun ------------------------------------------------------

    def response_finished(self, run: ResponseRun) -> None:
        if self._active is run:
            self._active = None

    def note_assistant_audio(self, ms: float) -> None:
        self._assistant_audio = True
        self.response_audio_ms += ms

    def input_token_counts(self) -> tuple[int, int, int, int]:
        """(text, audio, cached text, cached audio) input tokens for a response starting now.

        The input is the whole conversation so far plus the instructions; what the previous
        response already read counts as cached, as the service's prompt cache would.
        """
        chars = len(self.config.instructions)
        audio_tokens = 0.0
        for item in self.conversation:
            if item.role == "user" and item.client_item is None:
                audio_tokens += item.audio_ms / 1000 * IN_AUDIO_TOKENS_PER_S
            elif item.is_assistant_audio:
                audio_tokens += item.audio_ms / 1000 * OUT_AUDIO_TOKENS_PER_S
                chars += len(item.transcript or "")
            elif item.type == "function_call" and item.client_item is None:
                chars += len(item.name or "") + len(item.arguments)
            else:
                chars += len(_item_text(item.client_item or {}))
        text = math.ceil(chars / CHARS_PER_TEXT_TOKEN)
        audio = round(audio_tokens)
        prev_text, prev_audio = self._last_input_tokens
        self._last_input_tokens = (text, audio)
        return text, audio, min(prev_text, text), min(prev_audio, audio)

    # --- session ------------------------------------------------------------------------

    async def _on_session_update(self, event: dict[str, Any]) -> None:
        if "session" not in event:
            raise server_events.missing_parameter("session")
        old = self.config
        self.config = old.updated(self.dialect, event["session"], self._assistant_audio)
        if self.config.input_format != old.input_format:
            # Buffered bytes of the old format cannot be framed as the new one.
            self._drop_buffer()
        if self.config.turn_detection is None:
            self._reset_vad()
        await self.emit("session.updated", {"session": self.config.render(self.dialect)})

    async def _on_session_close(self, event: dict[str, Any]) -> None:
        await self._conn.close()

    # --- input audio buffer -------------------------------------------------------------

    async def _on_append(self, event: dict[str, Any]) -> None:
        audio = event.get("audio")
        if audio is None:
            raise server_events.missing_parameter("audio")
        if not isinstance(audio, str):
            raise server_events.invalid_type("audio", "a string")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise server_events.invalid_audio() from None
        self.input_audio += data
        self._buffer += data
        settings = self.config.vad()
        if settings is not None:
            await self._run_vad(settings)

    async def _run_vad(self, settings: VadSettings) -> None:
        fmt = self.config.input_format
        bpm = formats.bytes_per_ms(fmt)
        frame_bytes = FRAME_MS * bpm
        self._vad.threshold_dbfs = self.options.vad_threshold_dbfs + DB_PER_THRESHOLD_UNIT * (
            settings.threshold - 0.5
        )
        self._vad.onset_ms = self.options.vad_onset_ms
        self._vad.silence_ms = settings.silence_duration_ms
        # Whole frames only: the remainder waits for the next append, so decisions never
        # depend on how the client chunked the audio.
        while self._vad_pos + frame_bytes <= len(self._buffer):
            start_ms = self._buffer_start_ms + self._vad_pos // bpm
            frame = bytes(self._buffer[self._vad_pos : self._vad_pos + frame_bytes])
            self._vad_pos += frame_bytes
            vad_event = self._vad.feed(start_ms, formats.level_dbfs(frame, fmt))
            if vad_event is None:
                continue
            if vad_event.kind == "started":
                await self._speech_started(vad_event.ms, settings)
            else:
                await self._speech_stopped(vad_event.ms, settings)
        if self._vad.idle:
            self._trim_idle_buffer(settings.prefix_padding_ms)

    async def _speech_started(self, onset_ms: int, settings: VadSettings) -> None:
        # Prefix padding reaches back before the onset, but not before the buffer's start.
        self._speech_start_ms = max(self._buffer_start_ms, onset_ms - settings.prefix_padding_ms)
        self._speech_item_id = new_id("item")
        await self.emit(
            "input_audio_buffer.speech_started",
            {"audio_start_ms": self._speech_start_ms, "item_id": self._speech_item_id},
        )
        if self._active is not None and settings.interrupt_response:
            # The service cancels by itself; it never truncates for a WebSocket client.
            await self._active.cancel("turn_detected")

    async def _speech_stopped(self, end_ms: int, settings: VadSettings) -> None:
        item_id = self._speech_item_id or new_id("item")
        self._speech_item_id = None
        await self.emit(
            "input_audio_buffer.speech_stopped", {"audio_end_ms": end_ms, "item_id": item_id}
        )
        bpm = formats.bytes_per_ms(self.config.input_format)
        start = (self._speech_start_ms - self._buffer_start_ms) * bpm
        end = (end_ms - self._buffer_start_ms) * bpm
        onset_ms = self._speech_start_ms + settings.prefix_padding_ms
        speech_ms = end_ms - settings.silence_duration_ms - onset_ms
        await self._commit(start, end, item_id, speech_ms)
        if settings.create_response:
            if self._active is None:
                await self._start_response(None)
            else:
                # interrupt_response off and the caller talked over the answer: the turn
                # stays pending until the client asks for a response.
                log.debug("session %s: turn committed while a response is active", self.session_id)

    def _trim_idle_buffer(self, prefix_padding_ms: int) -> None:
        """Drop silence that no future prefix padding can reach, so idle calls stay small."""
        bpm = formats.bytes_per_ms(self.config.input_format)
        drop_ms = self._vad_pos // bpm - prefix_padding_ms
        if drop_ms <= 0:
            return
        drop = drop_ms * bpm
        del self._buffer[:drop]
        self._buffer_start_ms += drop_ms
        self._vad_pos -= drop

    def _reset_vad(self) -> None:
        self._vad.reset()
        self._speech_item_id = None

    def _drop_buffer(self) -> None:
        """Empty the buffer; its audio still counts on the timeline, as on the service."""
        bpm = formats.bytes_per_ms(self.config.input_format)
        self._buffer_start_ms += math.ceil(len(self._buffer) / bpm)
        self._buffer.clear()
        self._vad_pos = 0
        self._reset_vad()

    async def _commit(
        self, start: int, end: int, item_id: str, speech_ms: int | None = None
    ) -> None:
        """Turn buffer bytes [start, end) into a user audio item; the buffer restarts at end.
        `speech_ms`: how long the speech in it lasted (the VAD's), if known."""
        fmt = self.config.input_format
        bpm = formats.bytes_per_ms(fmt)
        audio = bytearray(self._buffer[max(0, start) : end])
        del self._buffer[:end]
        self._buffer_start_ms += math.ceil(end / bpm)
        self._vad_pos = max(0, self._vad_pos - end)
        item = Item(id=item_id, role="user", audio=audio, audio_format=fmt, transcript=None)
        previous = self.conversation.add(item)
        await self.emit(
            "input_audio_buffer.committed", {"previous_item_id": previous, "item_id": item_id}
        )
        rendered = {"previous_item_id": previous, "item": item.render(self.dialect)}
        await self.emit("conversation.item.added", rendered)
        await self.emit("conversation.item.done", rendered)
        self._committed_items += 1
        if self.config.transcription:
            # No speech recognition here: what the test said the caller said, else a
            # placeholder that says how much was heard; nothing for a sound too short to
            # be words (a cough, an "mm-hm"), as the service often transcribes those.
            spoken_ms = item.audio_ms if speech_ms is None else speech_ms
            placeholder = (
                f"({item.audio_ms / 1000:.2f} s of caller audio)"
                if spoken_ms >= WORDS_MIN_MS
                else ""
            )
            transcript = self.options.transcripts.get(self._committed_items, placeholder)
            completed = {
                "item_id": item_id,
                "content_index": 0,
                "transcript": transcript,
                "usage": {"type": "duration", "seconds": item.audio_ms / 1000},
            }
            name = "conversation.item.input_audio_transcription.completed"
            delay_s = self.options.transcript_delay_ms / 1000
            if delay_s:
                task = asyncio.create_task(self._emit_later(delay_s, name, completed))
                self._later.add(task)
                task.add_done_callback(self._later.discard)
            else:
                await self.emit(name, completed)
        self._pending_audio_item = item_id

    async def _emit_later(self, delay_s: float, name: str, fields: dict[str, Any]) -> None:
        await asyncio.sleep(delay_s)
        with contextlib.suppress(ConnectionClosed):
            await self.emit(name, fields)

    async def _on_commit(self, event: dict[str, Any]) -> None:
        bpm = formats.bytes_per_ms(self.config.input_format)
        if len(self._buffer) < MIN_COMMIT_MS * bpm:
            raise server_events.commit_empty(len(self._buffer) / bpm)
        item_id = self._speech_item_id or new_id("item")
        self._reset_vad()
        await self._commit(0, len(self._buffer), item_id)

    async def _on_clear(self, event: dict[str, Any]) -> None:
        self._drop_buffer()
        await self.emit("input_audio_buffer.cleared", {})

    # --- conversation items -------------------------------------------------------------

    async def _on_item_create(self, event: dict[str, Any]) -> None:
        raw = event.get("item")
        if raw is None:
            raise server_events.missing_parameter("item")
        if not isinstance(raw, dict):
            raise server_events.invalid_type("item", "an object")
        kind = raw.get("type")
        if kind is None:
            raise server_events.missing_parameter("item.type")
        kinds = ("message", "function_call", "function_call_output")
        if kind not in kinds:
            raise server_events.invalid_value(kind, kinds, "item.type")
        role = raw.get("role")
        if kind == "message":
            if role is None:
                raise server_events.missing_parameter("item.role")
            if role not in ("user", "assistant", "system"):
                raise server_events.invalid_value(
                    role, ("user", "assistant", "system"), "item.role"
                )
            if not isinstance(raw.get("content"), list):
                raise server_events.missing_parameter("item.content")
            self._check_content(role, raw["content"])
        call: Item | None = None
        if kind == "function_call":
            self._check_function_call(raw)
        elif kind == "function_call_output":
            call = self._check_function_call_output(raw)
        item_id = raw.get("id") or new_id("item")
        if item_id in self.conversation:
            raise RealtimeError(
                f"Item with id '{item_id}' already exists.", "invalid_value", "item.id"
            )
        item = Item(id=str(item_id), type=kind, role=role, client_item=dict(raw))
        if kind == "function_call":
            item.name, item.call_id = raw["name"], raw.get("call_id")
        previous = self.conversation.add(item)
        # Recorded before the events go out, so whoever sees them finds the record complete.
        if kind == "message":
            texts = [p["text"] for p in raw["content"] if p["type"] in _TEXT_PART_TYPES]
            if texts:
                self.conversation_texts.append((str(role), " ".join(texts)))
        if call is not None:
            self.function_outputs.append(
                {"call_id": call.call_id, "name": call.name, "output": raw["output"]}
            )
        text = _item_text(raw)
        if text and (role == "user" or kind == "function_call_output"):
            self._pending_text = text
        rendered = {"previous_item_id": previous, "item": item.render(self.dialect)}
        await self.emit("conversation.item.added", rendered)
        await self.emit("conversation.item.done", rendered)

    @staticmethod
    def _check_function_call(raw: dict[str, Any]) -> None:
        """A client-made function_call item (a conversation restored after a reconnect)."""
        if "name" not in raw:
            raise server_events.missing_parameter("item.name")
        for key in ("name", "call_id", "arguments"):
            if key in raw and not isinstance(raw[key], str):
                raise server_events.invalid_type(f"item.{key}", "a string")

    def _check_function_call_output(self, raw: dict[str, Any]) -> Item:
        """The function_call item this output answers; the service's errors otherwise."""
        call_id = raw.get("call_id")
        if call_id is None:
            raise server_events.missing_parameter("item.call_id")
        if not isinstance(call_id, str):
            raise server_events.invalid_type("item.call_id", "a string")
        if "output" not in raw:
            raise server_events.missing_parameter("item.output")
        if not isinstance(raw["output"], str):
            raise server_events.invalid_type("item.output", "a string")
        # Any function_call item still in the conversation will do, the agent's own or one
        # a client restored, as on the service.
        call = self.conversation.function_call(call_id)
        if call is None:
            raise server_events.unknown_call_id(call_id)
        return call

    def _check_content(self, role: str, content: list[Any]) -> None:
        accepted, named = _CONTENT_TYPES[(self.dialect, role)]
        for index, part in enumerate(content):
            param = f"item.content[{index}]"
            if not isinstance(part, dict):
                raise server_events.invalid_type(param, "an object")
            part_type = part.get("type")
            if part_type is None:
                raise server_events.missing_parameter(f"{param}.type")
            if part_type not in accepted:
                if len(named) == 1:
                    raise server_events.content_type_must_be(part_type, named[0], f"{param}.type")
                raise server_events.invalid_value(part_type, named, f"{param}.type")
            if part_type in _TEXT_PART_TYPES:
                if "text" not in part:
                    raise server_events.missing_parameter(f"{param}.text")
                if not isinstance(part["text"], str):
                    raise server_events.invalid_type(f"{param}.text", "a string")

    async def _on_truncate(self, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        content_index = event.get("content_index", 0)
        audio_end_ms = event.get("audio_end_ms")
        record: dict[str, Any] = {
            "item_id": item_id,
            "audio_end_ms": audio_end_ms,
            "accepted": False,
            "error": None,
        }
        self.truncations.append(record)
        try:
            item = self._check_truncate(item_id, content_index, audio_end_ms)
        except RealtimeError as error:
            record["error"] = error.message
            raise
        assert isinstance(audio_end_ms, int)
        # The service forgets the unheard part, transcript included.
        del item.audio[audio_end_ms * formats.bytes_per_ms(item.audio_format) :]
        item.transcript = ""
        record["accepted"] = True
        await self.emit(
            "conversation.item.truncated",
            {"item_id": item_id, "content_index": content_index, "audio_end_ms": audio_end_ms},
        )

    def _check_truncate(self, item_id: object, content_index: object, audio_end_ms: object) -> Item:
        if item_id is None:
            raise server_events.missing_parameter("item_id")
        if audio_end_ms is None:
            raise server_events.missing_parameter("audio_end_ms")
        if isinstance(audio_end_ms, bool) or not isinstance(audio_end_ms, int):
            raise server_events.invalid_type("audio_end_ms", "an integer")
        if audio_end_ms < 0:
            raise RealtimeError(
                "Invalid 'audio_end_ms': integer below minimum value. Expected a value >= 0, "
                f"but got {audio_end_ms} instead.",
                "integer_below_min_value",
                "audio_end_ms",
            )
        item = self.conversation.get(item_id)
        if item is None:
            raise server_events.truncate_item_not_found(item_id)
        if not item.is_assistant_audio or not item.audio:
            raise server_events.truncate_not_audio()
        if content_index != 0:
            raise RealtimeError(
                f"Invalid 'content_index': item '{item_id}' has no content part at index "
                f"{content_index}.",
                "invalid_value",
                "content_index",
            )
        if audio_end_ms > item.audio_ms:
            raise server_events.truncate_too_long(item.audio_ms, audio_end_ms)
        return item

    async def _on_item_delete(self, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        if item_id not in self.conversation:
            raise server_events.item_missing("deleting", item_id, "item_delete_invalid_item_id")
        assert isinstance(item_id, str)
        self.conversation.delete(item_id)
        if self._pending_audio_item == item_id:
            self._pending_audio_item = None
        await self.emit("conversation.item.deleted", {"item_id": item_id})

    async def _on_item_retrieve(self, event: dict[str, Any]) -> None:
        item = self.conversation.get(event.get("item_id"))
        if item is None:
            raise server_events.item_missing(
                "retrieving", event.get("item_id"), "item_retrieve_invalid_item_id"
            )
        await self.emit("conversation.item.retrieved", {"item": item.render(self.dialect)})

    # --- responses ----------------------------------------------------------------------

    async def _on_response_create(self, event: dict[str, Any]) -> None:
        if self._active is not None:
            raise server_events.active_response(self._active.response_id)
        params = event.get("response") or {}
        if not isinstance(params, dict):
            raise server_events.invalid_type("response", "an object")
        instructions = params.get("instructions")
        metadata = params.get("metadata")
        await self._start_response(
            instructions if isinstance(instructions, str) else None,
            metadata if isinstance(metadata, dict) else None,
        )

    async def _on_response_cancel(self, event: dict[str, Any]) -> None:
        active = self._active
        wanted = event.get("response_id")
        if active is None or (wanted is not None and wanted != active.response_id):
            raise server_events.cancel_not_active()
        await active.cancel("client_cancelled")

    async def _start_response(
        self, instructions: str | None, metadata: dict[str, Any] | None = None
    ) -> None:
        out_fmt = self.config.output_format
        turn = self.conversation.get(self._pending_audio_item)
        if turn is not None and turn.audio:
            # The answer is the caller's own turn, in the session's output format.
            audio = formats.convert(bytes(turn.audio), turn.audio_format, out_fmt)
            transcript = f"(echo of {turn.audio_ms / 1000:.2f} s of your speech)"
        else:
            text = (instructions or self._pending_text or DEFAULT_GREETING).strip()
            text = text or DEFAULT_GREETING
            ms = min(MAX_SYNTHETIC_MS, MS_PER_CHARACTER * len(text))
            audio = formats.convert(synthetic_speech_mulaw(ms), formats.PCMU, out_fmt)
            transcript = f"(synthetic speech for: {text[:80]})"
        self._pending_audio_item = None
        self._pending_text = None
        index = len(self.responses) + 1
        call = self._planned_call(index)
        plan: list[PlannedItem | PlannedFunctionCall] = []
        if call is None or call.speak_first:
            plan.extend(_split(audio, self.options.items_per_response, out_fmt, transcript))
        if call is not None:
            plan.append(PlannedFunctionCall(call.name, call.arguments_json, index))
        run = ResponseRun(self, plan, out_fmt, self.config.voice)
        run.metadata = metadata  # echoed in the response object, as the service does
        self.responses.append(run.response)
        self._active = run
        await self.emit("response.created", {"response": run.render("in_progress")})
        run.start()

    def _planned_call(self, index: int) -> FunctionCallPlan | None:
        """The function call response ``index`` makes, if planned and the session allows it."""
        plan = self.options.function_calls.get(index)
        if plan is None:
            return None
        choice = self.config.tool_choice
        reason = None
        if plan.name not in function_names(self.config.tools):
            reason = f"the session declares no function tool {plan.name!r}"
        elif choice == "none":
            reason = "tool_choice is 'none'"
        elif isinstance(choice, dict) and choice.get("name") != plan.name:
            reason = f"tool_choice forces {choice.get('name')!r}"
        if reason is None:
            return plan
        note = f"response {index}: planned call to {plan.name} not made: {reason}"
        self.notes.append(note)
        log.info("local agent session %s: %s", self.session_id, note)
        return None


def _split(audio: bytes, parts: int, fmt: str, transcript: str) -> list[PlannedItem]:
    """Cut the answer into ``parts`` items on whole-millisecond boundaries."""
    if parts == 1:
        return [PlannedItem(audio, transcript)]
    bpm = formats.bytes_per_ms(fmt)
    total_ms = len(audio) // bpm
    plan = []
    for i in range(parts):
        start = total_ms * i // parts * bpm
        end = len(audio) if i == parts - 1 else total_ms * (i + 1) // parts * bpm
        plan.append(PlannedItem(audio[start:end], f"{transcript} [part {i + 1}/{parts}]"))
    return plan


def _item_text(raw: dict[str, Any]) -> str:
    """The text a client item carries: message text parts, or a tool call's output."""
    if raw.get("type") == "function_call_output":
        return str(raw.get("output") or "")
    parts = raw.get("content")
    if not isinstance(parts, list):
        return ""
    texts = [str(p.get("text") or p.get("transcript") or "") for p in parts if isinstance(p, dict)]
    return " ".join(t for t in texts if t)
