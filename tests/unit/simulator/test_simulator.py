"""The call simulator: its Twilio playback model, TwiML/webhook handling, and a short call
against a fake bridge to check what goes over the wire."""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, Say, VoiceResponse
from websockets.asyncio.server import ServerConnection, serve

from bridge.audio import mulaw_silence, synthetic_speech_mulaw
from bridge.core.events import KeyPressed
from bridge.simulator import (
    Playback,
    SimulatorError,
    SimulatorOptions,
    format_report,
    main,
    parse_mark_name,
    parse_twiml,
    simulate_call,
)
from bridge.simulator.caller import dtmf_message
from bridge.simulator.command import build_parser, keypad_entry, options_from_args
from bridge.simulator.script import SILENCE_FRAME, CallerScript, split_utterances
from bridge.simulator.twiml_client import build_webhook_request, webhook_params
from bridge.wire.twilio import ItemMark, TruncationMark
from bridge.wire.twilio import decode as decode_twilio

TOKEN = "0123456789abcdef0123456789abcdef"


def audio(ms: float, byte: bytes = b"\x10") -> bytes:
    return byte * int(ms * 8)


# ----- the sans-I/O player ---------------------------------------------------------------


def test_mark_is_echoed_when_playback_reaches_it() -> None:
    p = Playback()
    assert p.push_audio(audio(200), now=0) == []
    assert p.push_mark("item_a:1600", now=0) == []
    assert p.next_event_time() == 200
    assert p.advance(199.9) == []
    assert p.advance(200) == ["item_a:1600"]
    assert not p.is_playing
    assert p.idle_since() == 200


def test_mark_is_echoed_at_once_when_nothing_is_queued() -> None:
    p = Playback()
    assert p.push_mark("first", now=5) == ["first"]
    p.push_audio(audio(20), now=10)
    assert p.advance(40) == []
    assert p.push_mark("late", now=41) == ["late"]


def test_marks_in_a_queue_come_back_in_order_at_their_own_times() -> None:
    p = Playback()
    for k in range(3):
        p.push_audio(audio(100), now=0)
        p.push_mark(f"item_a:{800 * (k + 1)}", now=0)
    assert p.next_event_time() == 100
    assert p.advance(150) == ["item_a:800"]
    assert p.next_event_time() == 200
    assert p.advance(1000) == ["item_a:1600", "item_a:2400"]
    assert p.next_event_time() is None


def test_audio_pushed_while_playing_waits_its_turn_and_idle_audio_starts_at_once() -> None:
    p = Playback()
    p.push_audio(audio(100), now=0)
    p.push_audio(audio(100), now=30)  # queued behind the first
    p.advance(500)
    assert [(s.start_ms, s.end_ms) for s in p.segments] == [(0, 100), (100, 200)]
    p.push_audio(audio(50), now=600)  # the line was idle: plays from its arrival
    p.advance(700)
    assert (p.segments[-1].start_ms, p.segments[-1].end_ms) == (600, 650)


def test_clear_flushes_the_queue_and_echoes_pending_marks() -> None:
    p = Playback()
    p.push_audio(audio(100), now=0)
    p.push_mark("item_a:800", now=0)
    p.push_audio(audio(100), now=0)
    p.push_mark("item_a:1600", now=0)
    assert p.clear(now=50) == ["item_a:800", "item_a:1600"]
    assert not p.is_playing
    assert p.advance(1000) == []
    assert p.unheard_bytes_by_response[1] == 1600 - 400
    assert p.clears[-1].cut_bytes == 400
    assert p.clears[-1].flushed_bytes == 1200


def test_clear_returns_marks_already_reached_before_the_flushed_ones() -> None:
    p = Playback()
    p.push_audio(audio(100), now=0)
    p.push_mark("a:800", now=0)
    p.push_audio(audio(100), now=0)
    p.push_mark("a:1600", now=0)
    # No advance between 100 and 150: the first mark is reached, the second flushed.
    assert p.clear(now=150) == ["a:800", "a:1600"]
    assert p.heard_by_item() == {"a": 1200}


def test_clear_cuts_the_playing_chunk_at_the_exact_byte() -> None:
    p = Playback()
    data = bytes(range(256)) * 7  # 1792 bytes = 224 ms, every byte tells its position
    p.push_audio(data, now=10)
    p.clear(now=10 + 73.25)  # 73.25 ms * 8 bytes/ms = 586 bytes, mid 20 ms frame
    assert bytes(p.heard_audio) == data[:586]
    assert p.segments[-1].cut
    assert p.segments[-1].end_ms == pytest.approx(83.25)


def test_heard_bytes_count_the_playing_chunk_in_continuous_time() -> None:
    p = Playback()
    p.push_audio(audio(100), now=0, response=3)
    p.push_audio(audio(100), now=0, response=3)
    assert p.heard_bytes_for_response(3, now=37.5) == 300
    p.advance(137.5)
    assert p.heard_bytes_for_response(3, now=137.5) == 1100
    assert p.heard_bytes_for_response(4, now=137.5) == 0


def test_heard_audio_is_attributed_to_items_by_mark_names() -> None:
    p = Playback()
    p.push_audio(audio(100), now=0)
    p.push_mark("item_a:800", now=0)
    p.push_audio(audio(50), now=0)
    p.push_mark("item_a:1200", now=0)
    p.push_audio(audio(100), now=0)
    p.push_mark("item_b:800", now=0)
    p.push_audio(audio(100), now=0)
    p.push_mark("item_b:1600", now=0)
    p.clear(now=200)  # item_b heard for 50 ms
    assert p.heard_by_item() == {"item_a": 1200, "item_b": 400}
    assert p.item_end_offsets == {"item_a": 1200, "item_b": 1600}


def test_audio_heard_before_its_mark_arrives_still_goes_to_that_item() -> None:
    p = Playback()
    p.push_audio(audio(10), now=0)
    p.advance(50)  # played out before the bridge sent the mark
    assert p.push_mark("item_x:80", now=60) == ["item_x:80"]
    assert p.heard_by_item() == {"item_x": 80}


def test_unparsable_mark_names_fall_back_to_one_item_per_response() -> None:
    p = Playback()
    p.push_audio(audio(100), now=0)
    p.push_mark("chunk-1", now=0)
    p.push_audio(audio(100), now=0)  # no mark after it at all
    p.advance(300)
    p.push_audio(audio(50), now=400)  # into an idle queue: a new response
    p.push_mark("whatever", now=400)
    p.advance(500)
    assert p.heard_by_item() == {"response-1": 1600, "response-2": 400}


def test_explicit_response_tags_name_the_fallback_items() -> None:
    p = Playback()
    p.push_audio(audio(20), now=0, response=2)
    p.advance(100)
    assert p.heard_by_item() == {"response-2": 160}


def test_truncated_mark_is_recorded_and_names_the_cut_audio() -> None:
    p = Playback()
    p.push_audio(audio(100), now=0)
    p.push_mark("item_a:800", now=0)
    p.push_audio(audio(500), now=0)  # its mark never comes: the clear arrives first
    assert p.clear(now=181) == ["item_a:800"]
    assert p.push_mark("truncated:item_a:180", now=182) == ["truncated:item_a:180"]
    assert [(t.item_id, t.audio_end_ms) for t in p.truncations] == [("item_a", 180.0)]
    assert p.heard_by_item() == {"item_a": 181 * 8}


def test_finish_drops_queued_audio_without_echoing() -> None:
    p = Playback()
    p.push_audio(audio(100), now=0)
    p.push_mark("a:800", now=0)
    p.finish(now=25)
    assert p.heard_by_item() == {"a": 200}
    assert p.unheard_bytes_by_response[1] == 600
    assert p.marks_echoed == 0


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("item_abc:1600", ItemMark("item_abc", 1600)),
        ("ns:item:42", ItemMark("ns:item", 42)),
        ("truncated:item_abc:648", TruncationMark("item_abc", 648)),
        ("truncated:item_abc:648.5", None),  # the bridge truncates at whole ms
        ("item_abc", None),
        ("item_abc:-3", None),
        (":12", None),
        ("truncated:item_abc", None),
        ("truncated:item_abc:soon", None),
    ],
)
def test_parse_mark_name(name: str, parsed: object) -> None:
    assert parse_mark_name(name) == parsed


# ----- TwiML and the webhook -------------------------------------------------------------


def test_parse_twiml_finds_connect_stream_and_parameters() -> None:
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url="wss://bridge.example.com/media-stream", name="agent")
    stream.parameter(name="token", value="t0k")
    stream.parameter(name="caller", value="+15550001111")
    response.append(connect)
    response.append(Say("Sorry, the assistant is unavailable."))
    target = parse_twiml(str(response))
    assert target.url == "wss://bridge.example.com/media-stream"
    assert target.parameters == {"token": "t0k", "caller": "+15550001111"}
    assert target.name == "agent"


def test_parse_twiml_without_connect_stream_is_an_error() -> None:
    with pytest.raises(SimulatorError, match=r"no <Connect><Stream>.*<Say>"):
        parse_twiml("<Response><Say>hello</Say><Hangup/></Response>")
    with pytest.raises(SimulatorError, match="one-way"):
        parse_twiml('<Response><Start><Stream url="wss://x/y"/></Start></Response>')


def test_parse_twiml_rejects_a_query_string_in_the_stream_url() -> None:
    with pytest.raises(SimulatorError, match="query string"):
        parse_twiml(
            '<Response><Connect><Stream url="wss://x.example/ms?token=1"/></Connect></Response>'
        )


def test_parse_twiml_rejects_garbage_and_non_websocket_urls() -> None:
    with pytest.raises(SimulatorError, match="not valid TwiML"):
        parse_twiml("Internal Server Error")
    with pytest.raises(SimulatorError, match="wss://"):
        parse_twiml('<Response><Connect><Stream url="https://x/ms"/></Connect></Response>')


def test_signed_post_webhook_validates_with_twilio() -> None:
    url = "https://bridge.example.com/voice?tenant=7"
    params = webhook_params("CA" + "1" * 32, "AC" + "2" * 32, "+15550001111", "+15550002222")
    request = build_webhook_request(url, params, TOKEN, "POST")
    signature = request.headers["X-Twilio-Signature"]
    assert request.url == url
    assert dict(urllib.parse.parse_qsl(request.body.decode())) == params
    assert RequestValidator(TOKEN).validate(url, params, signature)
    assert not RequestValidator("another token").validate(url, params, signature)
    assert not RequestValidator(TOKEN).validate(url, {**params, "From": "+1999"}, signature)


def test_signed_get_webhook_validates_on_the_full_url() -> None:
    params = webhook_params("CA" + "1" * 32, "AC" + "2" * 32, "+15550001111", "+15550002222")
    request = build_webhook_request("https://bridge.example.com/voice", params, TOKEN, "GET")
    assert request.body is None
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(request.url).query))
    assert query == params
    assert RequestValidator(TOKEN).validate(request.url, {}, request.headers["X-Twilio-Signature"])


def test_unsigned_webhook_has_no_signature_header() -> None:
    request = build_webhook_request("http://localhost/voice", {"a": "b"}, None)
    assert "X-Twilio-Signature" not in request.headers


def test_split_utterances_at_long_pauses_only() -> None:
    a, b = synthetic_speech_mulaw(600, seed=1), synthetic_speech_mulaw(400, seed=2)
    two = split_utterances(mulaw_silence(300) + a + mulaw_silence(500) + b + mulaw_silence(200))
    assert len(two) == 2
    assert abs(len(two[0]) - len(a)) <= 2 * 160 and abs(len(two[1]) - len(b)) <= 2 * 160
    assert len(split_utterances(a + mulaw_silence(300) + b)) == 1
    assert split_utterances(mulaw_silence(1000)) == []


# ----- a call against a fake bridge ------------------------------------------------------


class FakeBridge:
    """Webhook (stdlib HTTP) + media stream (websockets) in a background thread.

    It greets with `greeting_ms` of audio (item_0) after `start`, and answers the caller's
    speech as soon as the caller falls silent, with `answer_ms` of audio (item_N for turn N)
    sent all at once in 100 ms chunks, each followed by an item mark. When the caller
    speaks while marks are outstanding it barges in like a real bridge: `clear`, then
    `truncated:{item}:{ms}` with ms estimated from its own clock. A `#` key press is answered
    like speech. `hang_up_after_turn`: once the answer to that turn has played, close the
    stream (1000), as a bridge does after hanging up through Twilio's REST API.
    `last_words_ms`: right after `start`, send that much audio and a mark, then close.
    """

    def __init__(
        self,
        token: str | None = None,
        answer_ms: int = 300,
        greeting_ms: int = 0,
        close_after_start: bool = False,
        hang_up_after_turn: int | None = None,
        last_words_ms: int = 0,
    ) -> None:
        self.token = token
        self.answer_ms = answer_ms
        self.greeting_ms = greeting_ms
        self.close_after_start = close_after_start
        self.hang_up_after_turn = hang_up_after_turn
        self.last_words_ms = last_words_ms
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.sent_audio_at: dict[str, float] = {}
        self.echoed_at: dict[str, float] = {}
        self.webhook_params: dict[str, str] = {}
        self.ws_headers: dict[str, str] = {}
        self.done = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run_ws, daemon=True)
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._http_handler())
        self._http_thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/voice"

    @property
    def stream_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/media-stream"

    def __enter__(self) -> FakeBridge:
        self._thread.start()
        assert self._ready.wait(5)
        self._http_thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(5)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for _, m in self.received if m.get("event") == name]

    def _http_handler(self) -> type[BaseHTTPRequestHandler]:
        bridge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                params = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                self._answer(f"http://127.0.0.1:{self.server.server_address[1]}{self.path}", params)

            def do_GET(self) -> None:
                url = f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"
                bridge.webhook_params = dict(
                    urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query)
                )
                self._answer(url, {})

            def _answer(self, url: str, params: dict[str, str]) -> None:
                bridge.webhook_params = bridge.webhook_params or params
                signature = self.headers.get("X-Twilio-Signature", "")
                if bridge.token and not RequestValidator(bridge.token).validate(
                    url, params, signature
                ):
                    self.send_response(403)
                    self.end_headers()
                    self.wfile.write(b"bad signature")
                    return
                response = VoiceResponse()
                connect = Connect()
                stream = connect.stream(url=bridge.stream_url)
                stream.parameter(name="tenant", value="acme")
                response.append(connect)
                body = str(response).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def _run_ws(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop: asyncio.Future[None] = self._loop.create_future()
            async with serve(self._media_stream, "127.0.0.1", 0, compression=None) as server:
                self.ws_port = next(iter(server.sockets)).getsockname()[1]
                self._ready.set()
                await self._stop

        asyncio.run(run())

    async def _media_stream(self, ws: ServerConnection) -> None:
        try:
            self.ws_headers = dict(ws.request.headers)
            signature = ws.request.headers.get("x-twilio-signature", "")
            if self.token and not RequestValidator(self.token).validate(
                self.stream_url, {}, signature
            ):
                await ws.close(1008, "bad signature")
                return
            await self._converse(ws)
        finally:
            self.done.set()

    async def _converse(self, ws: ServerConnection) -> None:
        sid, in_speech, outstanding, item, answer_started = "", False, set(), "", 0.0
        async for raw in ws:
            now = time.monotonic()
            message = json.loads(raw)
            self.received.append((now, message))
            event = message["event"]
            if event == "start":
                sid = message["streamSid"]
                if self.close_after_start:
                    await ws.close(1011, "bridge gave up")
                    return
                if self.last_words_ms:
                    await self._speak(ws, sid, "item_0", self.last_words_ms, outstanding)
                    await ws.close(1000, "goodbye")
                    return
                if self.greeting_ms:
                    item, answer_started = "item_0", time.monotonic()
                    await self._speak(ws, sid, item, self.greeting_ms, outstanding)
            elif event == "mark":
                outstanding.discard(message["mark"]["name"])
                self.echoed_at[message["mark"]["name"]] = now
                last = f"item_{self.hang_up_after_turn}:{self.answer_ms * 8}"
                if message["mark"]["name"] == last:
                    await ws.close(1000, "call ended")
                    return
            elif event == "dtmf" and message["dtmf"]["digit"] == "#" and self.answer_ms:
                item = f"item_{len(self.sent_audio_at) + 1}"
                answer_started = time.monotonic()
                await self._speak(ws, sid, item, self.answer_ms, outstanding)
            elif event == "media":
                speech = base64.b64decode(message["media"]["payload"]) != mulaw_silence(20)
                if speech and not in_speech and outstanding:
                    heard_ms = (now - answer_started) * 1000
                    outstanding.clear()
                    await ws.send(json.dumps({"event": "clear", "streamSid": sid}))
                    name = f"truncated:{item}:{heard_ms:.0f}"
                    await ws.send(
                        json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": name}})
                    )
                if in_speech and not speech and self.answer_ms:
                    item = f"item_{len(self.sent_audio_at) + 1}"
                    answer_started = time.monotonic()
                    await self._speak(ws, sid, item, self.answer_ms, outstanding)
                in_speech = speech

    async def _speak(
        self, ws: ServerConnection, sid: str, item: str, ms: int, outstanding: set[str]
    ) -> None:
        self.sent_audio_at[item] = time.monotonic()
        answer = synthetic_speech_mulaw(ms, seed=len(self.sent_audio_at))
        for offset in range(0, len(answer), 800):
            chunk = answer[offset : offset + 800]
            payload = base64.b64encode(chunk).decode()
            await ws.send(
                json.dumps({"event": "media", "streamSid": sid, "media": {"payload": payload}})
            )
            name = f"{item}:{offset + len(chunk)}"
            outstanding.add(name)
            await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": name}}))


def quick_options(url: str, **overrides: Any) -> SimulatorOptions:
    options = SimulatorOptions(
        webhook_url=url,
        utterance_ms=200,
        turns=2,
        pause_ms=100,
        answer_idle_ms=150,
        turn_timeout_s=3,
        max_duration_s=10,
    )
    for key, value in overrides.items():
        setattr(options, key, value)
    return options


async def test_call_speaks_twilio_on_the_wire_and_reports_each_turn(tmp_path: Any) -> None:
    out = tmp_path / "heard.wav"
    with FakeBridge(token=TOKEN) as bridge:
        report = await asyncio.wait_for(
            simulate_call(quick_options(bridge.webhook_url, auth_token=TOKEN, out_path=str(out))),
            10,
        )
        assert await asyncio.to_thread(bridge.done.wait, 5)

    # Webhook fields and the signed upgrade (the fake bridge rejects bad signatures).
    assert bridge.webhook_params["CallStatus"] == "ringing"
    assert bridge.webhook_params["CallSid"] == report.call_sid
    assert report.call_sid.startswith("CA") and len(report.call_sid) == 34
    assert "x-twilio-signature" in {k.lower() for k in bridge.ws_headers}

    events = [m["event"] for _, m in bridge.received]
    assert events[:2] == ["connected", "start"] and events[-1] == "stop"
    assert bridge.received[0][1] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = bridge.events("start")[0]
    assert start["sequenceNumber"] == "1"
    assert start["streamSid"] == report.stream_sid and report.stream_sid.startswith("MZ")
    assert start["start"] == {
        "accountSid": report.account_sid,
        "streamSid": report.stream_sid,
        "callSid": report.call_sid,
        "tracks": ["inbound"],
        "customParameters": {"tenant": "acme"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    stop = bridge.events("stop")[0]
    assert stop["stop"] == {"accountSid": report.account_sid, "callSid": report.call_sid}

    # Every message after `connected` is numbered 1, 2, 3... as strings.
    numbers = [m["sequenceNumber"] for _, m in bridge.received[1:]]
    assert numbers == [str(n) for n in range(1, len(numbers) + 1)]

    # Media: 160-byte frames, string chunk/timestamp, at 50 frames a second.
    media = [(t, m) for t, m in bridge.received if m["event"] == "media"]
    assert len(media) == report.frames_sent
    for k, (_, m) in enumerate(media):
        assert m["media"]["track"] == "inbound"
        assert m["media"]["chunk"] == str(k + 1)
        assert m["media"]["timestamp"] == str(20 * k)
        assert len(base64.b64decode(m["media"]["payload"])) == 160
    span = media[-1][0] - media[0][0]
    assert span == pytest.approx((len(media) - 1) * 0.020, rel=0.1)

    # Marks come back once the audio before them has played: 100 ms apart per chunk.
    for n in (1, 2):
        item = f"item_{n}"
        for k in (1, 2, 3):
            played = bridge.echoed_at[f"{item}:{800 * k}"] - bridge.sent_audio_at[item]
            assert 0.1 * k - 0.005 <= played <= 0.1 * k + 0.06
    assert report.marks_echoed == report.marks_received == 6

    assert [t.index for t in report.turns] == [1, 2]
    first = report.turns[0]
    assert (first.speech_start_ms, first.speech_end_ms) == (100, 300)
    for turn in report.turns:
        assert not turn.barged_in and turn.answer_complete
        assert turn.answer_heard_ms == 300
        assert turn.response_latency_ms is not None and 0 <= turn.response_latency_ms < 150
        assert turn.answer_items == [f"item_{turn.index}"]
    assert report.heard_by_item == {"item_1": 2400, "item_2": 2400}
    assert len(report.heard_audio) == 4800 and out.stat().st_size > 9600
    assert report.completed and not report.closed_by_bridge
    assert any("real Twilio requires wss" in note for note in report.notes)
    text = format_report(report)
    assert text.startswith(f"call {report.call_sid} stream {report.stream_sid} via ws://")
    lines = text.splitlines()
    turn_1 = lines.index("turn 1  caller 0.10–0.30 s")
    assert re.fullmatch(
        r" +answer 1  first audio heard after \d+ ms \(arrived after \d+ ms\); "
        r"heard 300 ms \(complete\)",
        lines[turn_1 + 1],
    ), lines[turn_1 + 1]
    assert any(line.startswith("legend") for line in lines)


async def test_barge_in_is_cut_by_clear_and_compared_with_the_truncation() -> None:
    with FakeBridge(answer_ms=800) as bridge:
        options = quick_options(bridge.webhook_url, barge_in_after_ms=200, method="GET")
        report = await asyncio.wait_for(simulate_call(options), 10)
        assert await asyncio.to_thread(bridge.done.wait, 5)

    assert bridge.webhook_params["Direction"] == "inbound"  # fields travelled in the query
    first, second = report.turns
    assert first.answer_complete is False
    assert second.barged_in and second.intentional_barge_in
    assert 200 <= second.barge_in_heard_ms < 240
    assert second.clear_latency_ms is not None and 0 <= second.clear_latency_ms < 60
    assert second.truncated_item_id == "item_1"
    heard_item_1 = report.heard_by_item["item_1"] / 8
    assert second.truncated_heard_ms == pytest.approx(heard_item_1, abs=0.051)
    assert heard_item_1 == pytest.approx(first.answer_heard_ms)
    assert abs(second.truncation_delta_ms) < 15
    # The last answer is not barged into: the caller listens to the end.
    assert second.answer_complete and second.answer_heard_ms == 800
    assert report.clears_received == 1
    # In order: turn 1, its answer, the barge-in that cut it, then turn 2.
    lines = format_report(report).splitlines()
    turn_1 = next(i for i, line in enumerate(lines) if line.startswith("turn 1"))
    answer, barge_in, turn_2 = (line.strip() for line in lines[turn_1 + 1 : turn_1 + 4])
    assert answer.startswith("answer 1") and answer.endswith("(cut)"), answer
    assert barge_in.startswith("BARGE-IN at 0.") and "ms into answer 1: clear after" in barge_in
    assert "truncated item_1 at" in barge_in and "(Δ " in barge_in, barge_in
    assert turn_2.startswith("turn 2  caller"), turn_2
    assert "Δ: what the caller heard of the cut answer" in "\n".join(lines)


async def test_caller_listens_to_a_greeting_and_gives_up_on_a_missing_answer() -> None:
    with FakeBridge(greeting_ms=300, answer_ms=0) as bridge:
        options = quick_options(bridge.webhook_url, turns=1, turn_timeout_s=0.5)
        report = await asyncio.wait_for(simulate_call(options), 10)
    assert report.greeting_heard_ms == 300 and report.greeting_complete
    (turn,) = report.turns
    # Not over the greeting: after it played and answer_idle_ms of quiet (the first speech
    # frame covers the 20 ms before it is sent, when the caller decides).
    assert turn.speech_start_ms + 20 >= 300 + 150 and not turn.barged_in
    assert turn.timed_out and turn.answer_complete is None
    assert report.heard_by_item == {"item_0": 2400}
    assert report.completed
    text = format_report(report)
    assert "greeting  heard 300 ms (complete)" in text and "no answer (timed out)" in text


async def test_bridge_closing_the_stream_ends_the_call_without_a_crash() -> None:
    with FakeBridge(close_after_start=True) as bridge:
        report = await asyncio.wait_for(simulate_call(quick_options(bridge.webhook_url)), 10)
    assert report.closed_by_bridge and report.close_code == 1011
    assert report.close_reason == "bridge gave up"
    assert not report.completed
    assert "ended EARLY" in format_report(report)


async def test_bad_signature_is_a_clear_error() -> None:
    with FakeBridge(token=TOKEN) as bridge:
        options = quick_options(bridge.webhook_url, auth_token="not the token")
        with pytest.raises(SimulatorError, match="HTTP 403"):
            await simulate_call(options)


def test_main_reports_failures_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["http://127.0.0.1:9/voice", "--auth-token", ""]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot reach webhook") and "\n" not in err

    with FakeBridge(close_after_start=True) as bridge:
        assert main([bridge.webhook_url, "--turns", "1", "--utterance-ms", "100"]) == 1
    captured = capsys.readouterr()
    assert "closed the stream early (code 1011)" in captured.err
    assert captured.out.startswith("call CA")


def test_main_completes_a_short_call(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeBridge(token=TOKEN, answer_ms=100) as bridge:
        argv = [bridge.webhook_url, "--auth-token", TOKEN, "--turns", "1"]
        argv += ["--utterance-ms", "100", "--answer-idle-ms", "100"]
        assert main([*argv, "--timeout", "10"]) == 0
    out = capsys.readouterr().out
    assert "turn 1  caller 0.50–0.60 s" in out and "heard 100 ms (complete)" in out


# ----- keypad turns and calls the bridge ends ----------------------------------------------


@pytest.mark.parametrize(
    ("keypad", "message"),
    [
        ({3: "1"}, "--keypad: turn 3 is not one of the call's turns (1 to 2)"),
        ({0: "1"}, "--keypad: turn 0 is not one of the call's turns"),
        ({1: ""}, "--keypad: the keys for turn 1 must be 0-9, *, # or A-D, not ''"),
        ({1: "12 3"}, "not '12 3'"),
        ({2: "1a"}, "not '1a'"),  # Twilio reports the letter keys in upper case
        ({2: 5}, "not 5"),
    ],
)
def test_keypad_option_is_validated(keypad: dict[Any, Any], message: str) -> None:
    options = SimulatorOptions(webhook_url="http://x/voice", turns=2, keypad=keypad)
    with pytest.raises(SimulatorError, match=re.escape(message)):
        options.validate()


def test_every_keypad_key_is_accepted() -> None:
    SimulatorOptions(webhook_url="http://x/voice", keypad={1: "0123456789*#ABCD"}).validate()
    assert SimulatorOptions(webhook_url="http://x/voice").keypad == {}


def test_dtmf_message_is_twilios_and_parses_as_the_bridge_reads_it() -> None:
    message = dtmf_message(7, "MZ123", "#")
    assert message == {
        "event": "dtmf",
        "sequenceNumber": "7",
        "streamSid": "MZ123",
        "dtmf": {"track": "inbound_track", "digit": "#"},
    }
    assert decode_twilio(json.dumps(message)) == KeyPressed(stream_sid="MZ123", digit="#")


def test_keypad_turn_presses_keys_250_ms_apart_over_a_silent_line() -> None:
    options = SimulatorOptions(
        webhook_url="http://x/voice", turns=2, pause_ms=100, keypad={1: "12#"}
    )
    playback = Playback()
    script = CallerScript([b"\x00" * 160, synthetic_speech_mulaw(100)], options, playback)
    frames, pressed = [], []
    for k in range(40):  # 800 ms of line
        now = (k + 1) * 20.0
        frames.append(script.next_frame(k * 20, now))
        pressed.append((now, script.press_due_keys(now)))
        due = script.next_key_time()
        if due is not None and due < now + 20:
            # Between two frames, as the player task presses them.
            pressed.append((due, script.press_due_keys(due)))
    keys = [(t, k) for t, k in pressed if k]
    # The turn starts with the frame covering 100 ms, sent at 120 ms.
    assert keys == [(120.0, "1"), (370.0, "2"), (620.0, "#")]
    assert all(frame == SILENCE_FRAME for frame in frames)
    assert script.speech_frames_sent == 0 and script.keys_pressed == 3
    (turn,) = script.turns
    assert turn.keys == "12#"
    assert (turn.speech_start_ms, turn.speech_end_ms) == (100, 620)
    assert turn.speech_started_at == 120.0 and turn.speech_ended_at == 620.0
    assert script.next_key_time() is None  # now waiting for the answer
    assert script.press_due_keys(10_000) == ""


async def test_a_keypad_turn_sends_dtmf_between_media_frames() -> None:
    with FakeBridge(answer_ms=200) as bridge:
        options = quick_options(bridge.webhook_url, keypad={2: "42#"})
        report = await asyncio.wait_for(simulate_call(options), 10)
        assert await asyncio.to_thread(bridge.done.wait, 5)

    dtmf = [(t, m) for t, m in bridge.received if m["event"] == "dtmf"]
    assert [m for _, m in dtmf] == [
        {
            "event": "dtmf",
            "sequenceNumber": m["sequenceNumber"],
            "streamSid": report.stream_sid,
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
        for (_, m), digit in zip(dtmf, "42#", strict=True)
    ]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(dtmf)]
    assert all(0.235 <= gap <= 0.29 for gap in gaps), gaps
    # The line kept its 20 ms pace of (silent) media while the keys went out.
    numbers = [m["sequenceNumber"] for _, m in bridge.received[1:]]
    assert numbers == [str(n) for n in range(1, len(numbers) + 1)]
    during = [
        m for t, m in bridge.received if m["event"] == "media" and dtmf[0][0] <= t <= dtmf[-1][0]
    ]
    assert 22 <= len(during) <= 28
    assert all(base64.b64decode(m["media"]["payload"]) == mulaw_silence(20) for m in during)

    first, second = report.turns
    assert first.keys is None and second.keys == "42#"
    assert report.digits_sent == 3
    assert report.speech_frames_sent == 10  # turn 1's 200 ms; no speech on turn 2
    assert second.speech_end_ms is not None
    assert second.speech_end_ms - second.speech_start_ms == pytest.approx(520, abs=25)
    assert second.answer_complete and second.answer_heard_ms == 200
    assert second.answer_items == ["item_2"]
    assert report.completed and report.ended_by == "caller"
    text = format_report(report)
    lines = text.splitlines()
    turn_2 = next(i for i, line in enumerate(lines) if line.startswith("turn 2"))
    assert "caller pressed 42# " in lines[turn_2]
    assert "heard 200 ms (complete)" in lines[turn_2 + 1]
    assert ", 3 keypad digits;" in text


@pytest.mark.parametrize("turns", [1, 3])
async def test_a_bridge_hang_up_ends_the_call_and_no_later_turn_is_tried(turns: int) -> None:
    with FakeBridge(answer_ms=200, hang_up_after_turn=1) as bridge:
        options = quick_options(bridge.webhook_url, turns=turns, answer_idle_ms=400)
        report = await asyncio.wait_for(simulate_call(options), 10)
        assert await asyncio.to_thread(bridge.done.wait, 5)

    assert report.closed_by_bridge and report.ended_by == "bridge"
    assert (report.close_code, report.close_reason) == (1000, "call ended")
    assert [t.index for t in report.turns] == [1]  # the rest never started
    assert report.turns[0].answer_complete and report.heard_by_item == {"item_1": 1600}
    assert report.speech_frames_sent == 10
    assert not bridge.events("stop")  # the caller did not hang up: the bridge did
    # Complete only if the caller had nothing left to say.
    assert report.completed is (turns == 1)
    last = format_report(report).splitlines()[-2 if report.notes else -1]
    assert last.startswith("ended: " if turns == 1 else "ended EARLY: ")


async def test_what_the_bridge_sent_just_before_closing_is_read() -> None:
    with FakeBridge(last_words_ms=100) as bridge:
        report = await asyncio.wait_for(simulate_call(quick_options(bridge.webhook_url)), 10)
    assert report.closed_by_bridge and report.close_code == 1000
    assert (report.media_received, report.marks_received) == (1, 1)
    assert report.turns == []


def test_keypad_cli_entries() -> None:
    args = build_parser().parse_args(
        ["http://x/voice", "--turns", "3", "--keypad", "2:1234#", "--keypad", "3:*9"]
    )
    assert options_from_args(args).keypad == {2: "1234#", 3: "*9"}
    assert keypad_entry("1:#") == (1, "#")
    for bad in ("1234#", "x:12", ":1", "2:"):
        with pytest.raises(argparse.ArgumentTypeError):
            keypad_entry(bad)
    twice = build_parser().parse_args(["http://x/voice", "--keypad", "1:1", "--keypad", "1:2"])
    with pytest.raises(SimulatorError, match="twice"):
        options_from_args(twice)


def refusal(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line `phone-bridge simulate` answers options that cannot work with, before
    placing any call (exit status 2)."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("phone-bridge simulate: error: "), err
    return err


def test_main_refuses_bad_keypad_keys_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    err = refusal(["http://127.0.0.1:9/voice", "--keypad", "1:12x"], capsys)
    assert "--keypad: the keys for turn 1 must be 0-9, *, # or A-D, not '12x'" in err
    assert "TURN:DIGITS" in refusal(["http://127.0.0.1:9/voice", "--keypad", "12"], capsys)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--turns", "0"], "--turns must be at least 1"),
        (["--utterance-ms", "5"], "--utterance-ms must be at least 20"),
        (["--pause-ms", "-1"], "--pause-ms must not be negative"),
        (["--answer-idle-ms", "-1"], "--answer-idle-ms must not be negative"),
        (["--barge-in-after", "-1"], "--barge-in-after must not be negative"),
        (["--turn-timeout", "0"], "--turn-timeout must be more than 0"),
        (["--timeout", "-5"], "--timeout must be more than 0"),
    ],
)
def test_main_names_the_flag_of_a_bad_value(
    capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    assert message in refusal(["http://127.0.0.1:9/voice", *flags], capsys)


def test_main_says_what_to_write_for_a_webhook_without_a_scheme(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = refusal(["127.0.0.1:8080/voice"], capsys)
    assert "has no http:// or https://: write http://127.0.0.1:8080/voice" in err
    assert "unknown url type" not in err


def test_main_checks_the_wav_path_before_dialling(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with FakeBridge() as bridge:
        missing = tmp_path / "no" / "heard.wav"
        err = refusal([bridge.webhook_url, "--out", str(missing)], capsys)
        assert f"--out {missing}: the directory {missing.parent} does not exist" in err
        assert "directory" in refusal([bridge.webhook_url, "--out", str(tmp_path)], capsys)
        assert bridge.webhook_params == {}  # no call was placed


async def test_a_refused_signature_suggests_the_auth_token() -> None:
    with FakeBridge(token=TOKEN) as bridge:
        with pytest.raises(SimulatorError, match="pass --auth-token with its TWILIO_AUTH_TOKEN"):
            await simulate_call(quick_options(bridge.webhook_url))
        with pytest.raises(SimulatorError, match="is --auth-token the bridge's TWILIO_AUTH"):
            await simulate_call(quick_options(bridge.webhook_url, auth_token="not the token"))
