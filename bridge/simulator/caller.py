"""The simulated call over the network: Twilio's webhook, then its Media Streams WebSocket.

Three tasks share one event loop and the sans-I/O state (no locks needed between awaits):
- the line sends one 20 ms frame on an absolute schedule (start + k·20 ms: no drift);
- the receiver feeds the bridge's media/mark/clear into the `Playback`;
- the player sleeps until the next mark is due (or a message changes the queue) and
  echoes it, and presses keypad keys when they are due, so neither is quantised to the
  20 ms frame clock.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import json
import logging
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from bridge.audio import write_mulaw_wav
from bridge.simulator.playout import Playback
from bridge.simulator.report import CallReport, build_report
from bridge.simulator.script import FRAME_MS, CallerScript, load_utterances
from bridge.simulator.simulator_options import SimulatorError, SimulatorOptions
from bridge.simulator.twiml_client import (
    SIGNATURE_HEADER,
    build_webhook_request,
    fetch_twiml,
    new_sid,
    parse_twiml,
    sign,
    signature_hint,
    webhook_params,
)

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0
MEDIA_FORMAT = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}


def connected_message() -> dict[str, Any]:
    return {"event": "connected", "protocol": "Call", "version": "1.0.0"}


def start_message(
    seq: int,
    stream_sid: str,
    call_sid: str,
    account_sid: str,
    parameters: dict[str, str],
) -> dict[str, Any]:
    return {
        "event": "start",
        "sequenceNumber": str(seq),
        "streamSid": stream_sid,
        "start": {
            "accountSid": account_sid,
            "streamSid": stream_sid,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "customParameters": dict(parameters),
            "mediaFormat": dict(MEDIA_FORMAT),
        },
    }


def media_message(
    seq: int, stream_sid: str, chunk: int, timestamp_ms: int, payload: bytes
) -> dict[str, Any]:
    return {
        "event": "media",
        "sequenceNumber": str(seq),
        "streamSid": stream_sid,
        "media": {
            "track": "inbound",
            "chunk": str(chunk),
            "timestamp": str(timestamp_ms),
            "payload": base64.b64encode(payload).decode("ascii"),
        },
    }


def mark_message(seq: int, stream_sid: str, name: str) -> dict[str, Any]:
    return {
        "event": "mark",
        "sequenceNumber": str(seq),
        "streamSid": stream_sid,
        "mark": {"name": name},
    }


def dtmf_message(seq: int, stream_sid: str, digit: str) -> dict[str, Any]:
    """One key press, as Twilio reports it (one message per key, inbound track only)."""
    return {
        "event": "dtmf",
        "sequenceNumber": str(seq),
        "streamSid": stream_sid,
        "dtmf": {"track": "inbound_track", "digit": digit},
    }


def stop_message(seq: int, stream_sid: str, call_sid: str, account_sid: str) -> dict[str, Any]:
    return {
        "event": "stop",
        "sequenceNumber": str(seq),
        "streamSid": stream_sid,
        "stop": {"accountSid": account_sid, "callSid": call_sid},
    }


async def _open_stream(url: str, auth_token: str | None) -> ClientConnection:
    headers = {}
    if auth_token:
        # Twilio signs the upgrade on the URL exactly as written in the TwiML, params {}.
        headers[SIGNATURE_HEADER] = sign(auth_token, url, {})
    try:
        return await connect(
            url,
            additional_headers=headers,
            user_agent_header="Twilio.TmeWs/1.0 (phone-bridge simulator)",
            compression=None,  # Twilio does not negotiate permessage-deflate
            open_timeout=CONNECT_TIMEOUT_S,
            close_timeout=CLOSE_TIMEOUT_S,
            max_size=16 * 2**20,  # the bridge may send large media; Twilio takes any size
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        hint = signature_hint(status, bool(auth_token))
        raise SimulatorError(
            f"bridge refused the media stream {url}: HTTP {status}{hint}"
        ) from None
    except (InvalidHandshake, InvalidURI) as exc:
        raise SimulatorError(f"media stream handshake with {url} failed: {exc}") from None
    except TimeoutError:
        raise SimulatorError(
            f"media stream {url}: no handshake within {CONNECT_TIMEOUT_S:g} s"
        ) from None
    except OSError as exc:
        raise SimulatorError(f"cannot open media stream {url}: {exc}") from None


class _Stream:
    """One Media Streams connection, from `connected` to `stop`."""

    def __init__(
        self,
        ws: ClientConnection,
        options: SimulatorOptions,
        script: CallerScript,
        playback: Playback,
        call_sid: str,
        account_sid: str,
        parameters: dict[str, str],
    ) -> None:
        self.ws = ws
        self.options = options
        self.script = script
        self.playback = playback
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.stream_sid = new_sid("MZ")
        self.parameters = parameters
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.seq = 0
        self.send_lock = asyncio.Lock()
        self.ended = asyncio.Event()
        self.wake = asyncio.Event()
        self.end_reason = "completed"
        self.completed = False
        self.closed_by_bridge = False
        self.we_closed = False
        self.frames_sent = 0
        self.media_received = 0
        self.bytes_received = 0
        self.marks_received = 0
        self.marks_echoed = 0
        self.clears_received = 0
        self.digits_sent = 0
        self.oddities: Counter[str] = Counter()

    def now(self) -> float:
        """Milliseconds since `start` was sent: the origin of media timestamps."""
        return (self.loop.time() - self.t0) * 1000

    async def _send(self, build: Callable[[int], dict[str, Any]]) -> None:
        # Sequence numbers are allocated and sent under one lock so that they reach the
        # bridge in order even though three tasks send.
        async with self.send_lock:
            self.seq += 1
            await self.ws.send(json.dumps(build(self.seq)))

    async def _press_keys(self) -> None:
        # The script hands each key out once, so the line and the player can both ask.
        for digit in self.script.press_due_keys(self.now()):
            await self._send(
                functools.partial(dtmf_message, stream_sid=self.stream_sid, digit=digit)
            )
            self.digits_sent += 1

    async def _echo(self, names: list[str]) -> None:
        for name in names:
            await self._send(functools.partial(mark_message, stream_sid=self.stream_sid, name=name))
            self.marks_echoed += 1

    def _end(self, reason: str | None = None) -> None:
        if not self.ended.is_set():
            if reason is not None:
                self.end_reason = reason
            # Complete: every utterance went out, and the caller hung up after the last
            # answer or the bridge hung up after the last utterance (an end_call tool).
            self.completed = self.script.finished_speaking and self.end_reason != "max_duration"
            self.script.hang_up(self.now())
            self.ended.set()
            self.wake.set()

    async def run(self) -> None:
        try:
            await self.ws.send(json.dumps(connected_message()))
            self.t0 = self.loop.time()
            await self._send(
                lambda seq: start_message(
                    seq, self.stream_sid, self.call_sid, self.account_sid, self.parameters
                )
            )
        except ConnectionClosed:
            self._bridge_closed()
            return
        tasks = [
            asyncio.create_task(self._guard(self._line()), name="simulator-line"),
            asyncio.create_task(self._guard(self._receive()), name="simulator-receive"),
            asyncio.create_task(self._guard(self._player()), name="simulator-player"),
        ]
        try:
            await self.ended.wait()
            if not self.closed_by_bridge:
                self.we_closed = True
                try:
                    await self._send(
                        lambda seq: stop_message(
                            seq, self.stream_sid, self.call_sid, self.account_sid
                        )
                    )
                    await self.ws.close()
                except ConnectionClosed:
                    pass
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            self.playback.finish(self.now())
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, ConnectionClosed):
                raise result

    async def _guard(self, work: Coroutine[Any, Any, None]) -> None:
        # A failing task must end the call (and surface from run()), not leave it hanging.
        try:
            await work
        except BaseException:
            self._end("error")
            raise

    async def _line(self) -> None:
        """The caller's phone line: a frame every 20 ms on an absolute schedule."""
        max_ms = self.options.max_duration_s * 1000
        k = 0
        try:
            while not self.ended.is_set():
                # Frame k carries audio [20k, 20k+20) ms and, like a real line, leaves once
                # that audio has been captured.
                due = self.t0 + (k + 1) * FRAME_MS / 1000
                delay = due - self.loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self.ended.is_set():
                    return
                now = self.now()
                if now >= max_ms:
                    self._end("max_duration")
                    return
                # Marks due by now are echoed before the script looks at what was heard.
                await self._echo(self.playback.advance(now))
                frame = self.script.next_frame(k * FRAME_MS, now)
                if frame is None:
                    self._end("completed")
                    return
                await self._send(
                    functools.partial(
                        media_message,
                        stream_sid=self.stream_sid,
                        chunk=k + 1,
                        timestamp_ms=k * FRAME_MS,
                        payload=frame,
                    )
                )
                self.frames_sent += 1
                k += 1
                if self.script.next_key_time() is not None:
                    await self._press_keys()  # a keypad turn's first key goes out at once
                    self.wake.set()  # the player times the keys that follow
        except ConnectionClosed:
            await self._send_failed()

    async def _player(self) -> None:
        """Echo marks when playback reaches them and press keys when due, between frames."""
        while not self.ended.is_set():
            self.wake.clear()  # before reading the schedule, so no change is missed
            times = [self.playback.next_event_time(), self.script.next_key_time()]
            due = min((t for t in times if t is not None), default=None)
            timeout = None if due is None else max(0.0, (due - self.now()) / 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)
            if self.ended.is_set():
                return
            try:
                await self._echo(self.playback.advance(self.now()))
                await self._press_keys()
            except ConnectionClosed:
                await self._send_failed()
                return

    async def _receive(self) -> None:
        try:
            async for raw in self.ws:
                # After hanging up keep draining, so the close handshake is not stalled by
                # a full receive buffer.
                if not self.ended.is_set():
                    await self._handle(raw)
        except ConnectionClosed:
            pass
        self._bridge_closed()

    async def _send_failed(self) -> None:
        """A send found the stream closed by the bridge. What the bridge sent before closing
        may still be queued for the receiver, which ends the call once it has read it all;
        ending here would drop those last messages (a final mark, say) unread."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ended.wait(), CLOSE_TIMEOUT_S)
        self._bridge_closed()

    def _bridge_closed(self) -> None:
        if not self.we_closed and not self.ended.is_set():
            self.closed_by_bridge = True
            self._end("closed_by_bridge")

    async def _handle(self, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            self.oddities["binary frames"] += 1
            return
        try:
            message = json.loads(raw)
            event = message["event"]
        except (ValueError, TypeError, KeyError):
            self.oddities["messages that are not Twilio JSON"] += 1
            return
        if message.get("streamSid") != self.stream_sid:
            self.oddities[f"{event} messages with a wrong or missing streamSid"] += 1
        now = self.now()
        echoes: list[str]
        if event == "media":
            try:
                payload = base64.b64decode(message["media"]["payload"], validate=True)
            except (KeyError, TypeError, binascii.Error):
                self.oddities["media messages without a valid base64 payload"] += 1
                return
            self.media_received += 1
            self.bytes_received += len(payload)
            echoes = self.playback.advance(now)
            response = self.script.response_for_audio()
            echoes += self.playback.push_audio(payload, now, response)
        elif event == "mark":
            name = (message.get("mark") or {}).get("name")
            if not isinstance(name, str):
                self.oddities["mark messages without a name"] += 1
                return
            self.marks_received += 1
            echoes = self.playback.push_mark(name, now)
        elif event == "clear":
            self.clears_received += 1
            echoes = self.playback.clear(now)
        else:
            self.oddities[f"unknown {event!r} events"] += 1
            return
        self.wake.set()
        await self._echo(echoes)

    def notes(self) -> list[str]:
        return [f"received {n} {what}" for what, n in self.oddities.items()]


# What the caller says, given what it hears: a script over the call's Playback.
ScriptFactory = Callable[[Playback], CallerScript]


async def simulate_call(
    options: SimulatorOptions, script_for: ScriptFactory | None = None
) -> CallReport:
    """Place one simulated inbound call against a bridge and report what the caller heard.

    The caller speaks `options`' turns, or what `script_for` makes of the playback (a
    recorded caller, say: `ReplayScript`).

    Raises `SimulatorError` when the call cannot be set up (webhook unreachable or non-2xx,
    bad TwiML, WebSocket refused). A bridge that closes the stream itself ends the call
    normally; the report says so (`closed_by_bridge`, `close_code`, `completed`).
    """
    options.validate()
    if script_for is None:
        utterances = load_utterances(options)  # fail on a bad WAV before placing the call
        script_for = functools.partial(CallerScript, utterances, options)
    call_sid, account_sid = new_sid("CA"), new_sid("AC")
    params = webhook_params(call_sid, account_sid, options.from_number, options.to_number)
    request = build_webhook_request(options.webhook_url, params, options.auth_token, options.method)
    target = parse_twiml(await fetch_twiml(request))
    notes: list[str] = []
    if target.url.startswith("ws://"):
        note = (
            f"stream url {target.url} is ws://: fine for local testing, real Twilio requires wss://"
        )
        notes.append(note)
        logger.info(note)
    logger.info("call %s: webhook answered, opening %s", call_sid, target.url)
    ws = await _open_stream(target.url, options.auth_token)
    playback = Playback()
    script = script_for(playback)
    stream = _Stream(ws, options, script, playback, call_sid, account_sid, target.parameters)
    try:
        await stream.run()
    finally:
        if not stream.we_closed and not stream.closed_by_bridge:
            await ws.close()
    notes.extend(stream.notes())
    duration_ms = stream.now()
    report = build_report(
        playback=playback,
        script=script,
        call_sid=call_sid,
        account_sid=account_sid,
        stream_sid=stream.stream_sid,
        webhook_url=options.webhook_url,
        stream_url=target.url,
        parameters=target.parameters,
        frames_sent=stream.frames_sent,
        media_received=stream.media_received,
        bytes_received=stream.bytes_received,
        marks_received=stream.marks_received,
        marks_echoed=stream.marks_echoed,
        clears_received=stream.clears_received,
        digits_sent=stream.digits_sent,
        duration_ms=duration_ms,
        end_reason=stream.end_reason,
        completed=stream.completed,
        closed_by_bridge=stream.closed_by_bridge,
        close_code=ws.close_code if stream.closed_by_bridge else None,
        close_reason=(ws.close_reason or "") if stream.closed_by_bridge else "",
        notes=notes,
    )
    if options.out_path:
        try:
            write_mulaw_wav(options.out_path, report.heard_audio)
        except OSError as exc:  # checked before the call, but a disk can fill up
            report.wav_error = exc.strerror or str(exc)
            report.notes.append(f"could not write {options.out_path}: {report.wav_error}")
    logger.info("call %s ended: %s", call_sid, report.end_reason)
    return report
