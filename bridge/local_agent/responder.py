"""One model response: its event sequence, paced audio deltas, cancellation and usage.

The audio is streamed by a per-response task so the session keeps reading client events
(barge-in, cancel, truncate) while deltas go out. Every step is flagged as sent *before* its
frame is written (websockets writes synchronously before its first await), so whoever
finishes a cancelled response knows exactly which closing events are still owed.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed

from . import formats
from .conversation import Item
from .server_events import BETA, GA, new_id

if TYPE_CHECKING:
    from .session import AgentSession

log = logging.getLogger(__name__)

IN_AUDIO_TOKENS_PER_S = 10
OUT_AUDIO_TOKENS_PER_S = 20
CHARS_PER_TEXT_TOKEN = 4


@dataclass
class AgentResponse:
    """What a test can check about one response after (or while) it ran."""

    response_id: str
    status: str = "in_progress"  # in_progress | completed | cancelled (| failed: agent bug)
    # turn_detected | client_cancelled | client_disconnected | connection_dropped (the agent
    # dropped it) | session_expired (max_session_s)
    status_reason: str | None = None
    items: list[str] = field(default_factory=list)  # the audio items, in order
    # Function calls this response made (the same records as AgentSession.function_calls).
    function_calls: list[dict[str, Any]] = field(default_factory=list)
    # Per item: (time.monotonic() of each delta send, byte offset of that delta's end).
    sent_times: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    created_at: float = field(default_factory=time.monotonic)
    done_at: float | None = None
    _audio: dict[str, bytearray] = field(default_factory=dict, repr=False)

    @property
    def audio_sent(self) -> dict[str, bytes]:
        """Exactly the decoded bytes sent in deltas, per item id."""
        return {item_id: bytes(data) for item_id, data in self._audio.items()}


@dataclass
class PlannedItem:
    audio: bytes  # in the response's output format
    transcript: str


@dataclass
class PlannedFunctionCall:
    name: str
    arguments: str  # the JSON text the "model" writes
    response_index: int  # 1-based, within the session


@dataclass
class _Progress:
    item: Item
    output_index: int
    sent: set[str] = field(default_factory=set)  # logical names of the events already sent


class _Dropped(Exception):
    """The agent dropped the connection under this response (drop_after_ms)."""


class ResponseRun:
    def __init__(
        self,
        session: AgentSession,
        plan: list[PlannedItem | PlannedFunctionCall],
        output_format: str,
        voice: str,
    ) -> None:
        self.session = session
        self.plan = plan
        self.output_format = output_format
        self.voice = voice
        self.metadata: dict[str, Any] | None = None
        self.response = AgentResponse(new_id("resp"))
        self._progress: list[_Progress] = []
        self._task: asyncio.Task[None] | None = None
        self._finished = False
        self._sent_ms = 0.0  # audio of this response sent so far
        self._stalled = False
        self._base = 0.0  # loop time the pacing schedule counts from
        self._input_usage = session.input_token_counts()

    @property
    def response_id(self) -> str:
        return self.response.response_id

    def start(self) -> None:
        self._task = asyncio.create_task(
            self._stream(), name=f"local-agent-response-{self.session.session_id}"
        )

    # --- ending ---------------------------------------------------------------------------

    async def cancel(self, reason: str) -> None:
        """Stop the deltas and close what was opened, like the service on barge-in or cancel."""
        await self._stop_task()
        if self._finished:
            return
        for progress in self._progress:
            await self._close_item(progress, "incomplete")
        await self._finish("cancelled", reason)

    async def abort(self, reason: str = "client_disconnected") -> None:
        """The socket is gone (or going): stop without sending anything."""
        await self._stop_task()
        if not self._finished:
            self._finished = True
            self._record_end("cancelled", reason)

    async def _stop_task(self) -> None:
        task = self._task
        if task is None or task.done():
            return
        task.cancel()
        # asyncio.wait never raises the task's CancelledError into us, yet still lets our own
        # cancellation through.
        await asyncio.wait({task})

    # --- streaming ------------------------------------------------------------------------

    async def _stream(self) -> None:
        try:
            self._base = asyncio.get_running_loop().time()
            for index, planned in enumerate(self.plan):
                if isinstance(planned, PlannedFunctionCall):
                    await self._stream_function_call(index, planned)
                else:
                    await self._stream_item(index, planned)
            await self._finish("completed", None)
        except (ConnectionClosed, _Dropped):
            pass  # the session's teardown records the end
        except Exception:
            log.exception("local agent response %s failed", self.response_id)
            # Free the session for the next response rather than leave this one "active".
            if not self._finished:
                self._finished = True
                self._record_end("failed", None)

    async def _stream_item(self, index: int, planned: PlannedItem) -> None:
        session = self.session
        item = Item(
            id=new_id("item"),
            role="assistant",
            status="in_progress",
            audio_format=self.output_format,
            transcript=planned.transcript,
        )
        progress = _Progress(item, index)
        self._progress.append(progress)
        previous = session.conversation.add(item)
        self.response.items.append(item.id)
        self.response._audio[item.id] = bytearray()
        self.response.sent_times[item.id] = []
        ids = {"response_id": self.response_id, "item_id": item.id, "output_index": index}
        part = {"content_index": 0}

        await self._send_step(
            progress,
            "response.output_item.added",
            {
                "response_id": self.response_id,
                "output_index": index,
                "item": item.render(session.dialect, with_content=False),
            },
        )
        await self._send_step(
            progress,
            "conversation.item.added",
            {
                "previous_item_id": previous,
                "item": item.render(session.dialect, with_content=False),
            },
        )
        await self._send_step(
            progress,
            "response.content_part.added",
            {**ids, **part, "part": {"type": "audio", "transcript": ""}},
        )
        await self._send_step(
            progress,
            "response.output_audio_transcript.delta",
            {**ids, **part, "delta": planned.transcript},
        )

        bpm = formats.bytes_per_ms(self.output_format)
        chunk_bytes = session.options.chunk_ms * bpm
        audio = planned.audio
        for start in range(0, len(audio), chunk_bytes):
            chunk = audio[start : start + chunk_bytes]
            await self._pace()
            self._check_drop()  # drop_after_ms = 0: before any audio
            # Record before the write: the frame goes out synchronously inside send().
            item.audio += chunk
            self.response._audio[item.id] += chunk
            self.response.sent_times[item.id].append((time.monotonic(), start + len(chunk)))
            self._sent_ms += len(chunk) / bpm
            session.note_assistant_audio(len(chunk) / bpm)
            await session.emit(
                "response.output_audio.delta",
                {**ids, **part, "delta": base64.b64encode(chunk).decode("ascii")},
            )
            self._check_drop()  # as soon as the delta reaching drop_after_ms went out
        await self._close_item(progress, "completed")

    async def _stream_function_call(self, index: int, planned: PlannedFunctionCall) -> None:
        session = self.session
        dialect = session.dialect
        item = Item(
            id=new_id("item"),
            type="function_call",
            status="in_progress",
            name=planned.name,
            call_id=new_id("call", 16),
        )
        progress = _Progress(item, index)
        self._progress.append(progress)
        previous = session.conversation.add(item)
        ids = {
            "response_id": self.response_id,
            "item_id": item.id,
            "output_index": index,
            "call_id": item.call_id,
        }
        await self._send_step(
            progress,
            "response.output_item.added",
            {"response_id": self.response_id, "output_index": index, "item": item.render(dialect)},
        )
        await self._send_step(
            progress,
            "conversation.item.added",
            {"previous_item_id": previous, "item": item.render(dialect)},
        )
        for delta in _argument_deltas(planned.arguments):
            # Yield between deltas, as tokens arrive, so a cancel can land mid-call.
            await asyncio.sleep(0)
            item.arguments += delta
            await session.emit("response.function_call_arguments.delta", {**ids, "delta": delta})
        record = {
            "call_id": item.call_id,
            "name": item.name,
            "arguments": item.arguments,
            "response_index": planned.response_index,
        }
        # Recorded before .done goes out: whoever acts on it finds the call on record.
        session.function_calls.append(record)
        self.response.function_calls.append(record)
        await self._send_step(
            progress,
            "response.function_call_arguments.done",
            {**ids, "name": item.name, "arguments": item.arguments},
        )
        await self._close_item(progress, "completed")

    def _check_drop(self) -> None:
        if self.session.maybe_auto_drop():
            raise _Dropped

    async def _pace(self) -> None:
        options = self.session.options
        loop = asyncio.get_running_loop()
        if (
            not self._stalled
            and options.stall_after_ms is not None
            and self._sent_ms >= options.stall_after_ms
        ):
            self._stalled = True
            await asyncio.sleep(options.stall_ms / 1000)
            self._base += options.stall_ms / 1000  # the stall shifts the rest of the schedule
        if options.speed > 0:
            due = self._base + self._sent_ms / 1000 / options.speed
            await asyncio.sleep(max(0.0, due - loop.time()))
        else:
            # Unpaced, but still yield so other sessions and this session's reader run.
            await asyncio.sleep(0)

    async def _send_step(self, progress: _Progress, name: str, fields: dict[str, Any]) -> None:
        if name in progress.sent:
            return
        progress.sent.add(name)
        await self.session.emit(name, fields)

    async def _close_item(self, progress: _Progress, status: str) -> None:
        item = progress.item
        if "response.output_item.done" in progress.sent:
            return
        if "response.function_call_arguments.done" in progress.sent:
            status = "completed"  # the call was made whole; only its closing events are owed
        ids = {
            "response_id": self.response_id,
            "item_id": item.id,
            "output_index": progress.output_index,
        }
        part = {"content_index": 0}
        if "response.content_part.added" in progress.sent:
            await self._send_step(progress, "response.output_audio.done", {**ids, **part})
            await self._send_step(
                progress,
                "response.output_audio_transcript.done",
                {**ids, **part, "transcript": item.transcript},
            )
            await self._send_step(
                progress,
                "response.content_part.done",
                {**ids, **part, "part": {"type": "audio", "transcript": item.transcript}},
            )
        item.status = status
        dialect = self.session.dialect
        # Real GA order: conversation.item.done, then response.output_item.done.
        if "conversation.item.added" in progress.sent:
            await self._send_step(
                progress, "conversation.item.done", {"item": item.render(dialect)}
            )
        await self._send_step(
            progress,
            "response.output_item.done",
            {
                "response_id": self.response_id,
                "output_index": progress.output_index,
                "item": item.render(dialect),
            },
        )

    async def _finish(self, status: str, reason: str | None) -> None:
        if self._finished:
            return
        self._finished = True
        self._record_end(status, reason)
        body = self.render(status, reason)
        body["usage"] = self._usage()
        await self.session.emit("response.done", {"response": body})
        usage = body["usage"]
        await self.session.emit(
            "rate_limits.updated",
            {
                "rate_limits": [
                    {
                        "name": "tokens",
                        "limit": 15_000_000,
                        "remaining": 15_000_000 - usage["total_tokens"],
                        "reset_seconds": 0.001,
                    }
                ]
            },
        )

    def _record_end(self, status: str, reason: str | None) -> None:
        self.response.status = status
        self.response.status_reason = reason
        self.response.done_at = time.monotonic()
        # Cleared before response.done is written, so a client that answers it at once
        # with response.create is not told a response is still active.
        self.session.response_finished(self)

    # --- shapes ---------------------------------------------------------------------------

    def render(self, status: str, reason: str | None = None) -> dict[str, Any]:
        dialect = self.session.dialect
        details = None if reason is None else {"type": "cancelled", "reason": reason}
        output = [p.item.render(dialect) for p in self._progress]
        body: dict[str, Any] = {
            "object": "realtime.response",
            "id": self.response_id,
            "status": status,
            "status_details": details,
            "output": output,
            "conversation_id": self.session.conversation_id,
        }
        fmt = self.output_format
        if dialect == GA:
            body.update(
                output_modalities=["audio"],
                max_output_tokens="inf",
                audio={"output": {"format": formats.to_ga(fmt), "voice": self.voice}},
            )
        else:
            assert dialect == BETA
            body.update(
                modalities=["audio", "text"],
                voice=self.voice,
                output_audio_format=formats.to_beta(fmt),
                temperature=self.session.config.temperature,
                max_output_tokens="inf",
            )
        body.update(usage=None, metadata=self.metadata)
        return body

    def _usage(self) -> dict[str, Any]:
        text_in, audio_in, cached_text, cached_audio = self._input_usage
        audio_out = round(self._sent_ms / 1000 * OUT_AUDIO_TOKENS_PER_S)
        text_out = sum(
            math.ceil(len(p.item.transcript or "") / CHARS_PER_TEXT_TOKEN)
            for p in self._progress
            if "response.output_audio_transcript.delta" in p.sent
        )
        # A function call is text the model wrote: its name and the arguments sent so far.
        text_out += sum(
            math.ceil(len((p.item.name or "") + p.item.arguments) / CHARS_PER_TEXT_TOKEN)
            for p in self._progress
            if p.item.type == "function_call" and "response.output_item.added" in p.sent
        )
        input_tokens = text_in + audio_in
        output_tokens = text_out + audio_out
        return {
            "total_tokens": input_tokens + output_tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "input_token_details": {
                "text_tokens": text_in,
                "audio_tokens": audio_in,
                "image_tokens": 0,
                "cached_tokens": cached_text + cached_audio,
                "cached_tokens_details": {
                    "text_tokens": cached_text,
                    "audio_tokens": cached_audio,
                    "image_tokens": 0,
                },
            },
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }


def _argument_deltas(arguments: str) -> list[str]:
    """The arguments in two deltas (one when too short to split), as a model streams them."""
    if len(arguments) < 2:
        return [arguments]
    half = len(arguments) // 2
    return [arguments[:half], arguments[half:]]
