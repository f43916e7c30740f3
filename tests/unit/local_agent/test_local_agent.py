"""The local agent, driven over a real WebSocket like the bridge drives OpenAI Realtime."""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.audio import (
    mulaw_silence,
    mulaw_to_pcm16,
    pcm16_to_alaw,
    synthetic_speech_mulaw,
)
from bridge.local_agent import AgentOptions, AgentSession, FunctionCallPlan, LocalAgent

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

# A caller turn: 600 ms silence, 1 s of speech, 800 ms silence (mu-law, 8 bytes per ms).
LEAD_MS, SPEECH_MS, TAIL_MS = 600, 1000, 800
TURN = mulaw_silence(LEAD_MS) + synthetic_speech_mulaw(SPEECH_MS) + mulaw_silence(TAIL_MS)
# Default VAD: 40 ms onset, 300 ms prefix padding, 500 ms silence -> speech from 600 ms is
# reported from 300 ms; the silence from 1600 ms is confirmed at 2100 ms.
EXPECTED_START_MS = LEAD_MS - 300
EXPECTED_END_MS = LEAD_MS + SPEECH_MS + 500
ECHO = TURN[EXPECTED_START_MS * 8 : EXPECTED_END_MS * 8]

GA_PCMU = {
    "type": "realtime",
    "audio": {
        "input": {"format": {"type": "audio/pcmu"}},
        "output": {"format": {"type": "audio/pcmu"}},
    },
}
BETA_PCMU = {"input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}


class Client:
    """A Realtime client that keeps every server event it saw, in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(event).decode())

    async def next(self, timeout: float = 3.0) -> dict[str, Any]:
        event = orjson.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.events.append(event)
        return event

    async def until(
        self,
        kind: str,
        timeout: float = 3.0,
        where: Callable[[dict[str, Any]], bool] = lambda e: True,
    ) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next(timeout)
                if event["type"] == kind and where(event):
                    return event

    async def append(self, audio: bytes, sizes: list[int] | None = None) -> None:
        chunks = itertools.cycle(sizes or [160])
        pos = 0
        while pos < len(audio):
            size = next(chunks)
            part = base64.b64encode(audio[pos : pos + size]).decode()
            await self.send({"type": "input_audio_buffer.append", "audio": part})
            pos += size

    async def update(self, session: dict[str, Any]) -> dict[str, Any]:
        await self.send({"type": "session.update", "session": session})
        return await self.until("session.updated")

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def deltas(self, kind: str = "response.output_audio.delta") -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for e in self.events:
            if e["type"] == kind:
                out[e["item_id"]] = out.get(e["item_id"], b"") + base64.b64decode(e["delta"])
        return out


AgentFactory = Callable[..., Awaitable[LocalAgent]]


@pytest.fixture
async def make_agent() -> AsyncIterator[AgentFactory]:
    agents: list[LocalAgent] = []

    async def factory(**options: Any) -> LocalAgent:
        agent = LocalAgent(AgentOptions(**options))
        await agent.start("127.0.0.1", 0)
        agents.append(agent)
        return agent

    yield factory
    for agent in agents:
        await agent.stop()


@asynccontextmanager
async def client(agent: LocalAgent, *, beta: bool = False) -> AsyncIterator[Client]:
    headers = {"Authorization": "Bearer sk-test"}
    if beta:
        headers["OpenAI-Beta"] = "realtime=v1"
    async with connect(agent.url + "?model=gpt-realtime", additional_headers=headers) as ws:
        c = Client(ws)
        await c.until("session.created")
        yield c


async def speak_turn(c: Client, sizes: list[int] | None = None) -> dict[str, Any]:
    await c.append(TURN, sizes)
    return await c.until("response.done")


# --- dialects and session configuration ----------------------------------------------------


async def test_ga_session_created_update_and_request_details(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=0)
    async with client(agent) as c:
        created = c.events[0]
        assert created["type"] == "session.created" and created["event_id"].startswith("event_")
        session = created["session"]
        assert session["type"] == "realtime"
        assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        assert "input_audio_format" not in session

        updated = await c.update(
            {
                "type": "realtime",
                "instructions": "be brief",
                "audio": {
                    "input": {"format": {"type": "audio/pcmu"}},
                    "output": {"voice": "marin"},
                },
            }
        )
        new = updated["session"]
        assert new["audio"]["input"]["format"] == {"type": "audio/pcmu"}
        # Only the fields sent change.
        assert new["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert new["audio"]["output"]["voice"] == "marin"
        assert new["instructions"] == "be brief"

        session_obj = await agent.wait_for_session(0)
        assert session_obj.dialect == "ga"
        assert session_obj.path == "/v1/realtime?model=gpt-realtime"
        assert session_obj.headers["authorization"] == "Bearer sk-test"
        assert [e["type"] for e in session_obj.received] == ["session.update"]


async def test_beta_dialect_speaks_beta_names(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=0)
    async with client(agent, beta=True) as c:
        session = c.events[0]["session"]
        assert session["input_audio_format"] == "pcm16"
        assert "audio" not in session and "type" not in session

        # A GA-shaped update is not beta: the service names the stray field.
        await c.send({"type": "session.update", "session": GA_PCMU})
        error = (await c.until("error"))["error"]
        assert (error["code"], error["param"]) == ("unknown_parameter", "session.type")

        await c.send({"type": "session.update", "session": {"input_audio_format": "g711-ulaw"}})
        error = (await c.until("error"))["error"]
        assert error["message"] == (
            "Invalid value: 'g711-ulaw'. Supported values are: 'pcm16', 'g711_ulaw', and "
            "'g711_alaw'."
        )
        assert error["param"] == "session.input_audio_format"

        assert (await c.update(BETA_PCMU))["session"]["output_audio_format"] == "g711_ulaw"
        done = await speak_turn(c)

    types = c.types()
    for name in (
        "conversation.item.created",
        "response.audio.delta",
        "response.audio.done",
        "response.audio_transcript.done",
    ):
        assert name in types
    for ga_name in (
        "conversation.item.added",
        "conversation.item.done",
        "response.output_audio.delta",
        "response.output_audio.done",
    ):
        assert ga_name not in types
    assert done["response"]["output"][0]["content"][0]["type"] == "audio"
    assert b"".join(c.deltas("response.audio.delta").values()) == ECHO
    assert agent.sessions[0].dialect == "beta"


async def test_ga_request_errors_match_the_service(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=0)
    async with client(agent) as c:
        await c.send({"type": "session.update", "event_id": "evt_1", "session": {"voice": "x"}})
        error = (await c.until("error"))["error"]
        assert error == {
            "type": "invalid_request_error",
            "code": "missing_required_parameter",
            "message": "Missing required parameter: 'session.type'.",
            "param": "session.type",
            "event_id": "evt_1",
        }

        bad_format = {"type": "realtime", "audio": {"input": {"format": {"type": "audio/opus"}}}}
        await c.send({"type": "session.update", "session": bad_format})
        error = (await c.until("error"))["error"]
        assert (error["code"], error["param"]) == (
            "invalid_value",
            "session.audio.input.format.type",
        )

        await c.send({"type": "nope"})
        error = (await c.until("error"))["error"]
        assert (error["code"], error["param"]) == ("invalid_value", "type")
        assert error["message"].startswith(
            "Invalid value: 'nope'. Supported values are: 'session.update', "
        )

        await c.send({"type": "input_audio_buffer.append", "audio": "%%% not base64 %%%"})
        error = (await c.until("error"))["error"]
        assert (error["code"], error["param"]) == ("invalid_value", "audio")

        await c.ws.send("not json")
        assert (await c.until("error"))["error"]["code"] == "invalid_json"
        await c.ws.send(b"\x00\x01")
        assert (await c.until("error"))["error"]["code"] == "invalid_event"

        # None of that hurt the session.
        await c.update(GA_PCMU)
        await speak_turn(c)

    session = agent.sessions[0]
    assert len(session.errors_sent) == 6
    assert session.appends_received == len(TURN) // 160 + 1
    assert bytes(session.input_audio) == TURN


# --- VAD, commit and the echo ---------------------------------------------------------------


def _turn_signature(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    keep = {
        "input_audio_buffer.speech_started": "audio_start_ms",
        "input_audio_buffer.speech_stopped": "audio_end_ms",
        "input_audio_buffer.committed": None,
        "conversation.item.added": None,
        "conversation.item.done": None,
        "response.created": None,
    }
    return [(e["type"], e.get(keep[e["type"]] or "")) for e in events if e["type"] in keep]


@pytest.mark.parametrize("sizes", [[160], [77, 333, 1, 1000, 159]], ids=["20ms", "odd-sizes"])
async def test_vad_turn_is_independent_of_chunking(
    make_agent: AgentFactory, sizes: list[int]
) -> None:
    agent = await make_agent(speed=0)
    async with client(agent) as c:
        await c.update(GA_PCMU)
        done = await speak_turn(c, sizes)

    started = next(e for e in c.events if e["type"] == "input_audio_buffer.speech_started")
    stopped = next(e for e in c.events if e["type"] == "input_audio_buffer.speech_stopped")
    committed = next(e for e in c.events if e["type"] == "input_audio_buffer.committed")
    assert started["item_id"] == stopped["item_id"] == committed["item_id"]
    assert _turn_signature(c.events)[:6] == [
        ("input_audio_buffer.speech_started", EXPECTED_START_MS),
        ("input_audio_buffer.speech_stopped", EXPECTED_END_MS),
        ("input_audio_buffer.committed", None),
        ("conversation.item.added", None),  # the user item
        ("conversation.item.done", None),
        ("response.created", None),
    ]
    user_item = next(e for e in c.events if e["type"] == "conversation.item.added")["item"]
    assert user_item["role"] == "user"
    assert user_item["content"] == [{"type": "input_audio", "transcript": None}]

    # The answer is exactly the caller's utterance, and the record matches the wire.
    session = agent.sessions[0]
    response = session.responses[0]
    assert response.status == "completed"
    assert c.deltas() == response.audio_sent
    assert b"".join(response.audio_sent.values()) == ECHO
    assert done["response"]["status"] == "completed"
    assert done["response"]["output"][0]["role"] == "assistant"
    assert done["response"]["output"][0]["content"][0]["type"] == "output_audio"
    assert "echo of 1.80 s" in done["response"]["output"][0]["content"][0]["transcript"]
    usage = done["response"]["usage"]
    assert usage["output_token_details"]["audio_tokens"] == 36  # 1.8 s x 20 tokens/s
    assert usage["input_token_details"]["audio_tokens"] == 18  # 1.8 s x 10 tokens/s
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


@pytest.mark.parametrize(
    ("ga_type", "convert"),
    [
        ("audio/pcma", lambda a: pcm16_to_alaw(mulaw_to_pcm16(a))),
        ("audio/pcm", lambda a: audioop.ratecv(mulaw_to_pcm16(a), 2, 1, 8000, 24000, None)[0]),
    ],
    ids=["alaw", "pcm16"],
)
async def test_vad_and_echo_in_other_input_formats(
    make_agent: AgentFactory, ga_type: str, convert: Callable[[bytes], bytes]
) -> None:
    agent = await make_agent(speed=0)
    audio = convert(TURN)
    fmt = {"type": ga_type}
    async with client(agent) as c:
        await c.update(
            {"type": "realtime", "audio": {"input": {"format": fmt}, "output": {"format": fmt}}}
        )
        await c.append(audio, [1001])
        await c.until("response.done")
    signature = _turn_signature(c.events)[:2]
    assert signature == [
        ("input_audio_buffer.speech_started", EXPECTED_START_MS),
        ("input_audio_buffer.speech_stopped", EXPECTED_END_MS),
    ]
    bpm = 48 if ga_type == "audio/pcm" else 8  # bytes per ms
    echo = b"".join(agent.sessions[0].responses[0].audio_sent.values())
    assert echo == audio[EXPECTED_START_MS * bpm : EXPECTED_END_MS * bpm]


async def test_response_event_sequence(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=0, chunk_ms=500)
    async with client(agent) as c:
        await c.update(GA_PCMU)
        await speak_turn(c)
    after = c.types()[c.types().index("response.created") :]
    assert after == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio_transcript.delta",
        *["response.output_audio.delta"] * 4,  # 1800 ms in 500 ms deltas
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
    ]
    delta = next(e for e in c.events if e["type"] == "response.output_audio.delta")
    created = next(e for e in c.events if e["type"] == "response.created")
    assert delta["response_id"] == created["response"]["id"]
    assert (delta["output_index"], delta["content_index"]) == (0, 0)


async def test_echo_is_converted_to_the_output_format(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=0)
    async with client(agent) as c:
        # Caller audio in mu-law, answer in the default 24 kHz pcm16.
        await c.update({"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}}}})
        await speak_turn(c)
    audio = b"".join(agent.sessions[0].responses[0].audio_sent.values())
    expected = (EXPECTED_END_MS - EXPECTED_START_MS) * 48
    assert abs(len(audio) - expected) <= 6


async def test_items_per_response_split_the_echo(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=0, items_per_response=2)
    async with client(agent) as c:
        await c.update(GA_PCMU)
        done = await speak_turn(c)
    response = agent.sessions[0].responses[0]
    assert len(response.items) == 2
    assert [item["id"] for item in done["response"]["output"]] == response.items
    sent = response.audio_sent
    assert all(sent[item_id] for item_id in response.items)
    assert b"".join(sent[item_id] for item_id in response.items) == ECHO
    added = [e for e in c.events if e["type"] == "response.output_item.added"]
    assert [e["output_index"] for e in added] == [0, 1]


async def test_manual_turns_without_vad(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=0)
    async with client(agent) as c:
        manual = {
            "type": "realtime",
            "audio": {
                "input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
                "output": {"format": {"type": "audio/pcmu"}},
            },
        }
        assert (await c.update(manual))["session"]["audio"]["input"]["turn_detection"] is None

        await c.send({"type": "input_audio_buffer.commit"})
        assert (await c.until("error"))["error"]["code"] == "input_audio_buffer_commit_empty"

        await c.append(mulaw_silence(200))
        await c.send({"type": "input_audio_buffer.clear"})
        await c.until("input_audio_buffer.cleared")

        await c.append(TURN)
        await c.send({"type": "input_audio_buffer.commit"})
        committed = await c.until("input_audio_buffer.committed")
        await c.send({"type": "response.create"})
        done = await c.until("response.done")

    assert "input_audio_buffer.speech_started" not in c.types()
    assert done["response"]["status"] == "completed"
    # Without VAD the whole buffer is the turn.
    assert b"".join(agent.sessions[0].responses[0].audio_sent.values()) == TURN
    assert committed["previous_item_id"] is None


async def test_greeting_without_caller_audio_is_synthetic_speech(
    make_agent: AgentFactory,
) -> None:
    agent = await make_agent(speed=0)
    async with client(agent) as c:
        await c.send({"type": "response.create", "response": {"instructions": "Say hello"}})
        await c.until("response.done")
        await c.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "x" * 200}],
                },
            }
        )
        added = await c.until("conversation.item.added")
        await c.until("conversation.item.done")
        await c.send({"type": "response.create"})
        await c.until("response.done")
    assert added["item"]["role"] == "user" and added["item"]["id"].startswith("item_")
    first, second = agent.sessions[0].responses
    # pcm16 at 24 kHz is 48 bytes per ms: 9 characters x 60 ms, then the 3 s cap.
    assert abs(sum(map(len, first.audio_sent.values())) - 540 * 48) <= 6
    assert abs(sum(map(len, second.audio_sent.values())) - 3000 * 48) <= 6


# --- barge-in, cancel, truncate ---------------------------------------------------------------


async def test_barge_in_cancels_with_turn_detected(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=1.0, chunk_ms=100)
    async with client(agent) as c:
        await c.update(GA_PCMU)
        await c.append(TURN)
        created = await c.until("response.created")
        await c.until("response.output_audio.delta")
        await c.append(synthetic_speech_mulaw(300, seed=1))
        started = await c.until("input_audio_buffer.speech_started")
        done = await c.until("response.done")

    rid = created["response"]["id"]
    assert done["response"]["id"] == rid
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    tail = c.events[c.events.index(started) :]
    tail_types = [e["type"] for e in tail]
    audio_done = tail_types.index("response.output_audio.done")
    item_done = tail_types.index("response.output_item.done")
    assert audio_done < item_done < tail_types.index("response.done")
    assert tail[item_done]["item"]["status"] == "incomplete"
    # No audio for the cancelled response after its audio .done.
    assert not any(
        e["type"] == "response.output_audio.delta" and e["response_id"] == rid
        for e in tail[audio_done:]
    )
    session = agent.sessions[0]
    response = session.responses[0]
    assert (response.status, response.status_reason) == ("cancelled", "turn_detected")
    assert 0 < len(b"".join(response.audio_sent.values())) < len(ECHO)
    assert c.deltas() == response.audio_sent
    assert session.truncations == []  # the service never truncates by itself


async def test_truncate(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=0)
    async with client(agent) as c:
        await c.update(GA_PCMU)
        done = await speak_turn(c)
        assistant_id = done["response"]["output"][0]["id"]
        user_id = next(e for e in c.events if e["type"] == "input_audio_buffer.committed")[
            "item_id"
        ]

        async def truncate(item_id: str, ms: int) -> dict[str, Any]:
            await c.send(
                {
                    "type": "conversation.item.truncate",
                    "item_id": item_id,
                    "content_index": 0,
                    "audio_end_ms": ms,
                }
            )
            event = await c.next()
            while event["type"] == "rate_limits.updated":  # trails response.done
                event = await c.next()
            return event

        too_long = await truncate(assistant_id, 99_999)
        assert too_long["type"] == "error"
        assert (
            too_long["error"]["message"]
            == "Audio content of 1800ms is already shorter than 99999ms"
        )

        ok = await truncate(assistant_id, 500)
        assert ok["type"] == "conversation.item.truncated"
        assert (ok["item_id"], ok["content_index"], ok["audio_end_ms"]) == (assistant_id, 0, 500)

        shorter = await truncate(assistant_id, 600)
        assert shorter["error"]["message"] == "Audio content of 500ms is already shorter than 600ms"
        assert (await truncate(assistant_id, 0))["type"] == "conversation.item.truncated"

        unknown = await truncate("item_nope", 10)
        assert unknown["error"]["code"] == "item_truncate_invalid_item_id"
        not_audio = await truncate(user_id, 10)
        assert not_audio["error"]["message"] == "Only model output audio messages can be truncated"

    records = agent.sessions[0].truncations
    assert [(r["audio_end_ms"], r["accepted"]) for r in records] == [
        (99_999, False),
        (500, True),
        (600, False),
        (0, True),
        (10, False),
        (10, False),
    ]
    assert records[0]["error"].startswith("Audio content of") and records[1]["error"] is None


async def test_cancel_with_no_active_response_is_an_error(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=0)
    async with client(agent) as c:
        await c.send({"type": "response.cancel"})
        error = (await c.until("error"))["error"]
    assert error["code"] == "response_cancel_not_active"
    assert error["message"] == "Cancellation failed: no active response found"
    assert agent.sessions[0].errors_sent[0]["error"]["code"] == "response_cancel_not_active"


async def test_create_while_active_errors_and_cancel_stops_it(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=1.0)
    async with client(agent) as c:
        await c.send({"type": "response.create", "response": {"instructions": "a long answer"}})
        created = await c.until("response.created")
        rid = created["response"]["id"]
        await c.send({"type": "response.create"})
        error = (await c.until("error"))["error"]
        assert error["code"] == "conversation_already_has_active_response"
        assert rid in error["message"]

        await c.send({"type": "response.cancel"})
        done = await c.until("response.done")
    assert done["response"]["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    response = agent.sessions[0].responses[0]
    assert (response.status, response.status_reason) == ("cancelled", "client_cancelled")
    assert len(agent.sessions[0].responses) == 1


# --- pacing ---------------------------------------------------------------------------------


async def _greeting_times(agent: LocalAgent, text: str) -> list[float]:
    async with client(agent) as c:
        await c.send({"type": "response.create", "response": {"instructions": text}})
        await c.until("response.done")
    response = agent.sessions[-1].responses[0]
    return [t for t, _ in response.sent_times[response.items[0]]]


async def test_stall_delays_deltas_once(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=0, chunk_ms=100, stall_after_ms=200, stall_ms=300)
    times = await _greeting_times(agent, "x" * 20)  # 1200 ms of audio, 12 deltas
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 12
    assert gaps[1] >= 0.29  # after 200 ms of audio were sent
    assert max(gaps[:1] + gaps[2:]) < 0.1


async def test_deltas_are_paced_at_speed(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=5.0, chunk_ms=100)
    times = await _greeting_times(agent, "x" * 20)
    # The last delta starts at 1100 ms of audio: 0.22 s at 5x real time.
    assert 0.21 <= times[-1] - times[0] < 1.0


# --- lifecycle and isolation ----------------------------------------------------------------


def _response_tasks() -> list[asyncio.Task[Any]]:
    return [
        t
        for t in asyncio.all_tasks()
        if t.get_name().startswith("local-agent-response-") and not t.done()
    ]


async def test_disconnect_mid_response_cleans_up(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=1.0)
    async with client(agent) as c:
        await c.send({"type": "response.create"})
        await c.until("response.output_audio.delta")
        session: AgentSession = agent.sessions[0]
        assert session.closed_at is None
        assert _response_tasks()
    assert await session.wait_closed(2.0)
    assert session.closed_at is not None
    assert _response_tasks() == []
    assert session.responses[0].status == "cancelled"


async def test_stop_closes_sessions(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=0)
    async with client(agent) as c:
        session = await agent.wait_for_session(0)
        await agent.stop()
        with pytest.raises(ConnectionClosed):
            await c.next()
    assert session.closed_at is not None
    with pytest.raises(TimeoutError):
        await LocalAgent().wait_for_session(0, timeout=0.05)


async def test_a_misbehaving_client_does_not_affect_another(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=4.0)
    async with client(agent) as good, client(agent) as bad:
        await good.update(GA_PCMU)
        await bad.send({"type": "response.create"})
        await bad.until("response.output_audio.delta")
        await bad.ws.send("{{{")
        await good.append(TURN)
        await bad.ws.close()
        done = await good.until("response.done")
    assert done["response"]["status"] == "completed"
    first, second = agent.sessions
    assert await second.wait_closed(2.0)
    assert b"".join(first.responses[0].audio_sent.values()) == ECHO


# --- restoring a conversation as text items ---------------------------------------------------


def _text_item(role: str, part_type: str, text: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": role, "content": [{"type": part_type, "text": text}]},
    }


async def test_ga_text_items_are_added_and_recorded_in_order(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=0)
    restored = [
        ("system", "input_text", "The caller is Ada."),
        ("user", "input_text", "Hi, I'd like to book a table."),
        ("assistant", "output_text", "Sure, for how many people?"),
        ("user", "input_text", "Four."),
    ]
    async with client(agent) as c:
        previous = None
        for role, part_type, text in restored:
            await c.send(_text_item(role, part_type, text))
            added = await c.next()
            done = await c.next()
            assert (added["type"], done["type"]) == (
                "conversation.item.added",
                "conversation.item.done",
            )
            item = added["item"]
            assert done["item"] == item
            assert added["previous_item_id"] == previous
            assert item["id"].startswith("item_") and item["object"] == "realtime.item"
            assert (item["role"], item["status"]) == (role, "completed")
            assert item["content"] == [{"type": part_type, "text": text}]
            previous = item["id"]
        # The restored conversation goes on: the last user text is answered.
        await c.send({"type": "response.create"})
        done = await c.until("response.done")
    assert done["response"]["status"] == "completed"
    session = agent.sessions[0]
    assert session.conversation_texts == [(role, text) for role, _, text in restored]
    assert session.errors_sent == []


async def test_beta_text_items_answer_created_only(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=0)
    async with client(agent, beta=True) as c:
        await c.send(_text_item("system", "input_text", "Be brief."))
        await c.send(_text_item("user", "input_text", "Hello?"))
        await c.send(_text_item("assistant", "text", "Hello! How can I help?"))
        created = [await c.next() for _ in range(3)]
        # Nothing more was sent for them: the next event answers the next request.
        await c.send({"type": "response.cancel"})
        assert (await c.next())["type"] == "error"
    assert [e["type"] for e in created] == ["conversation.item.created"] * 3
    assert [e["item"]["content"][0]["type"] for e in created] == [
        "input_text",
        "input_text",
        "text",
    ]
    assert [e["previous_item_id"] for e in created[1:]] == [e["item"]["id"] for e in created[:2]]
    assert agent.sessions[0].conversation_texts == [
        ("system", "Be brief."),
        ("user", "Hello?"),
        ("assistant", "Hello! How can I help?"),
    ]


@pytest.mark.parametrize(
    ("beta", "role", "part_type", "message"),
    [
        (
            False,
            "assistant",
            "input_text",
            "Invalid value: 'input_text'. Value must be 'output_text'.",
        ),
        (False, "assistant", "text", "Invalid value: 'text'. Value must be 'output_text'."),
        (False, "system", "text", "Invalid value: 'text'. Value must be 'input_text'."),
        (
            False,
            "system",
            "output_text",
            "Invalid value: 'output_text'. Value must be 'input_text'.",
        ),
        (
            False,
            "user",
            "output_text",
            "Invalid value: 'output_text'. Supported values are: 'input_text' and 'input_audio'.",
        ),
        (True, "assistant", "input_text", "Invalid value: 'input_text'. Value must be 'text'."),
        (True, "assistant", "output_text", "Invalid value: 'output_text'. Value must be 'text'."),
        (
            True,
            "user",
            "text",
            "Invalid value: 'text'. Supported values are: 'input_text' and 'input_audio'.",
        ),
    ],
)
async def test_wrong_content_type_for_the_role_is_the_service_error(
    make_agent: AgentFactory, beta: bool, role: str, part_type: str, message: str
) -> None:
    agent = await make_agent(speed=0)
    async with client(agent, beta=beta) as c:
        event = _text_item(role, part_type, "hello")
        # The part is checked wherever it is in the content list.
        good = "input_text" if role != "assistant" else ("text" if beta else "output_text")
        event["item"]["content"].insert(0, {"type": good, "text": "fine"})
        await c.send({**event, "event_id": "evt_7"})
        error = (await c.next())["error"]
    assert error == {
        "type": "invalid_request_error",
        "code": "invalid_value",
        "message": message,
        "param": "item.content[1].type",
        "event_id": "evt_7",
    }
    session = agent.sessions[0]
    assert session.conversation_texts == []
    assert list(session.conversation) == []


async def test_malformed_text_parts_are_refused(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=0)
    async with client(agent) as c:

        async def refusal(content: list[Any]) -> dict[str, Any]:
            item = {"type": "message", "role": "user", "content": content}
            await c.send({"type": "conversation.item.create", "item": item})
            event = await c.next()
            assert event["type"] == "error"
            return event["error"]

        missing_text = await refusal([{"type": "input_text"}])
        assert (missing_text["code"], missing_text["param"]) == (
            "missing_required_parameter",
            "item.content[0].text",
        )
        not_a_string = await refusal([{"type": "input_text", "text": 5}])
        assert (not_a_string["code"], not_a_string["param"]) == (
            "invalid_type",
            "item.content[0].text",
        )
        no_type = await refusal([{"text": "hi"}])
        assert (no_type["code"], no_type["param"]) == (
            "missing_required_parameter",
            "item.content[0].type",
        )
        assert (await refusal(["hi"]))["param"] == "item.content[0]"
        # Several text parts make one entry; audio-only user items are not text items.
        await c.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "one"},
                        {"type": "input_audio", "audio": ""},
                        {"type": "input_text", "text": "two"},
                    ],
                },
            }
        )
        await c.until("conversation.item.done")
        audio_only = {"type": "message", "role": "user", "content": [{"type": "input_audio"}]}
        await c.send({"type": "conversation.item.create", "item": audio_only})
        await c.until("conversation.item.done")
    assert agent.sessions[0].conversation_texts == [("user", "one two")]


# --- dropped connections ------------------------------------------------------------------------


async def _until_connection_lost(c: Client) -> ConnectionClosed:
    with pytest.raises(ConnectionClosed) as lost:
        while True:
            await c.next()
    return lost.value


async def test_drop_aborts_without_a_close_frame(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=1.0)
    async with client(agent) as c:
        session = await agent.wait_for_session(0)
        await c.send({"type": "response.create"})
        await c.until("response.output_audio.delta")
        await session.drop()
        # Torn down by the time drop() returns.
        assert session.dropped and session.closed_at is not None
        assert _response_tasks() == []
        lost = await _until_connection_lost(c)
    assert lost.rcvd is None  # no close frame: a network failure, not a goodbye
    response = session.responses[0]
    assert (response.status, response.status_reason) == ("cancelled", "connection_dropped")
    assert "response.done" not in c.types()
    assert not session.expired

    # Dropping a closed session is a no-op.
    async with client(agent):
        pass
    closed = agent.sessions[1]
    assert await closed.wait_closed(2.0)
    await closed.drop()
    assert not closed.dropped


async def test_drop_after_ms_drops_the_first_session_mid_answer(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=0, chunk_ms=100, drop_after_ms=300)
    async with client(agent) as c:
        await c.update(GA_PCMU)
        # 1200 ms of synthetic speech: dropped right after the delta that reaches 300 ms.
        await c.send({"type": "response.create", "response": {"instructions": "x" * 20}})
        lost = await _until_connection_lost(c)
    assert lost.rcvd is None
    first = agent.sessions[0]
    assert await first.wait_closed(2.0)
    assert first.dropped and not first.expired
    assert first.response_audio_ms == 300
    response = first.responses[0]
    assert (response.status, response.status_reason) == ("cancelled", "connection_dropped")
    sent = b"".join(response.audio_sent.values())
    assert len(sent) == 300 * 8
    # What the client got before the drop is a prefix of what was sent; no closing events.
    assert sent.startswith(b"".join(c.deltas().values()))
    assert "response.output_audio.done" not in c.types()

    # The reconnection is not dropped: the agent drops once.
    async with client(agent) as c:
        await c.update(GA_PCMU)
        await c.send({"type": "response.create", "response": {"instructions": "x" * 20}})
        done = await c.until("response.done")
    second = agent.sessions[1]
    assert done["response"]["status"] == "completed"
    assert not second.dropped and second.response_audio_ms == 1200


async def test_drop_after_ms_counts_audio_across_responses(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=0, chunk_ms=100, drop_after_ms=700)
    async with client(agent) as c:
        await c.update(GA_PCMU)
        await c.send({"type": "response.create", "response": {"instructions": "x" * 10}})
        assert (await c.until("response.done"))["response"]["status"] == "completed"  # 600 ms
        await c.send({"type": "response.create", "response": {"instructions": "x" * 10}})
        await _until_connection_lost(c)
    session = agent.sessions[0]
    assert session.dropped
    assert [sum(map(len, r.audio_sent.values())) // 8 for r in session.responses] == [600, 100]


async def test_drop_after_zero_ms_drops_before_any_audio(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=0, drop_after_ms=0)
    async with client(agent) as c:
        await c.send({"type": "response.create"})
        await _until_connection_lost(c)
    session = agent.sessions[0]
    assert session.dropped and session.response_audio_ms == 0
    assert "response.created" in c.types()
    assert "response.output_audio.delta" not in c.types()
    assert session.responses[0].status_reason == "connection_dropped"


# --- session length limit -------------------------------------------------------------------


async def test_max_session_s_expires_like_the_service(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=1.0, max_session_s=0.3)
    loop = asyncio.get_running_loop()
    opened = loop.time()
    async with client(agent) as c:
        expires_at = c.events[0]["session"]["expires_at"]
        # A long answer is under way when the session ends.
        await c.send({"type": "response.create", "response": {"instructions": "x" * 200}})
        await c.until("response.output_audio.delta")
        error = await c.until("error", timeout=5.0)
        expired_after = loop.time() - opened
        with pytest.raises(ConnectionClosed) as closed:
            await c.next()
    assert error["error"] == {
        "type": "invalid_request_error",
        "code": "session_expired",
        "message": "Your session hit the maximum duration of 0.3 seconds.",
        "param": None,
        "event_id": None,
    }
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, error["error"]["message"])
    assert 0.3 <= expired_after < 2.0
    session = agent.sessions[0]
    assert await session.wait_closed(2.0)
    assert session.expired and not session.dropped
    assert session.closed_at is not None and session.closed_at - session.opened_at >= 0.3
    assert session.errors_sent[-1]["error"]["code"] == "session_expired"
    assert (session.responses[0].status, session.responses[0].status_reason) == (
        "cancelled",
        "session_expired",
    )
    # Nothing of the response after the error: it was the session's last event.
    assert c.events[-1] == error
    assert abs(expires_at - (time.time() + 0.3)) <= 2
    assert _response_tasks() == []


def test_session_expired_wording_for_service_limits() -> None:
    from bridge.local_agent import server_events as events

    assert events.session_expired(3600).message == (
        "Your session hit the maximum duration of 60 minutes."
    )
    assert events.session_expired(1800).message.endswith("of 30 minutes.")
    assert events.session_expired(60).message.endswith("of 1 minute.")
    assert events.session_expired(1.5).message.endswith("of 1.5 seconds.")
    assert events.session_expired(3600).code == "session_expired"


async def test_sessions_within_max_session_s_are_untouched(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=0, max_session_s=30)
    async with client(agent) as c:
        created = c.events[0]["session"]
        await c.update(GA_PCMU)
        await speak_turn(c)
    session = agent.sessions[0]
    assert await session.wait_closed(2.0)
    assert not session.expired and session.errors_sent == []
    assert abs(created["expires_at"] - (time.time() + 30)) <= 2


def test_option_validation() -> None:
    with pytest.raises(ValueError, match="drop_after_ms"):
        AgentOptions(drop_after_ms=-1)
    with pytest.raises(ValueError, match="max_session_s"):
        AgentOptions(max_session_s=0)


# --- refusing connections, and awaiting later sessions --------------------------------------


async def test_refuse_connections_answers_503_until_cleared(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=0)
    async with client(agent) as open_before:
        agent.refuse_connections = True
        for _ in range(2):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(agent.url):
                    pass
            assert refused.value.response.status_code == 503
        assert agent.refused == 2
        assert len(agent.sessions) == 1
        # A session opened before is not affected.
        await open_before.send({"type": "response.create"})
        assert (await open_before.until("response.done"))["response"]["status"] == "completed"

        agent.refuse_connections = False
        url = agent.url
        async with client(agent) as c:
            await c.send({"type": "response.create"})
            await c.until("response.done")
    assert agent.url == url  # same port throughout
    assert agent.refused == 2
    assert len(agent.sessions) == 2


async def test_wait_for_session_after_earlier_sessions_closed(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=0)
    async with client(agent):
        pass
    first = await agent.wait_for_session(0)
    assert await first.wait_closed(2.0)

    # Waiting for the next session before it connects.
    waiter = asyncio.create_task(agent.wait_for_session(1, timeout=5.0))
    await asyncio.wait({waiter}, timeout=0)
    assert not waiter.done()
    async with client(agent):
        second = await waiter
        assert second is agent.sessions[1] and second is not first
        assert second.closed_at is None
    assert await agent.wait_for_session(0) is first  # earlier indexes answer at once

    # Also after a drop, with a refused attempt in between.
    await agent.wait_for_session(1)
    agent.refuse_connections = True
    with pytest.raises(InvalidStatus):
        async with connect(agent.url):
            pass
    agent.refuse_connections = False
    async with client(agent) as c:
        third = await agent.wait_for_session(2)
        await third.drop()
        await _until_connection_lost(c)
    async with client(agent):
        assert (await agent.wait_for_session(3)) is agent.sessions[3]
    with pytest.raises(TimeoutError):
        await agent.wait_for_session(4, timeout=0.05)


# --- function calling -----------------------------------------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
END_CALL_TOOL = {
    "type": "function",
    "name": "end_call",
    "description": "Hang up.",
    "parameters": {"type": "object", "properties": {}},
}


def _with_tools(beta: bool, **fields: Any) -> dict[str, Any]:
    """A session.update body in the dialect's shape, mu-law both ways, with these fields."""
    base = dict(BETA_PCMU) if beta else dict(GA_PCMU)
    return {**base, **fields}


def _function_output(call_id: str, output: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": call_id, "output": output},
    }


@pytest.mark.parametrize("beta", [False, True], ids=["ga", "beta"])
async def test_tools_are_kept_and_rendered_back(make_agent: AgentFactory, beta: bool) -> None:
    agent = await make_agent(speed=0)
    async with client(agent, beta=beta) as c:
        created = c.events[0]["session"]
        assert (created["tools"], created["tool_choice"]) == ([], "auto")
        tools = [WEATHER_TOOL, END_CALL_TOOL]
        forced = {"type": "function", "name": "end_call"}
        updated = await c.update(_with_tools(beta, tools=tools, tool_choice=forced))
        assert updated["session"]["tools"] == tools
        assert updated["session"]["tool_choice"] == forced
        # Only the fields sent change: the tools stay while the choice moves on.
        again = await c.update(_with_tools(beta, tool_choice="required"))
        assert (again["session"]["tools"], again["session"]["tool_choice"]) == (tools, "required")
    session = agent.sessions[0]
    assert session.config.tools == tools and session.errors_sent == []


@pytest.mark.parametrize(
    ("beta", "fields", "code", "param"),
    [
        (False, {"tools": {"name": "x"}}, "invalid_type", "session.tools"),
        (False, {"tools": ["end_call"]}, "invalid_type", "session.tools[0]"),
        (
            False,
            {"tools": [{"name": "end_call"}]},
            "missing_required_parameter",
            "session.tools[0].type",
        ),
        (
            False,
            {"tools": [WEATHER_TOOL, {"type": "function"}]},
            "missing_required_parameter",
            "session.tools[1].name",
        ),
        (False, {"tools": [{"type": "code"}]}, "invalid_value", "session.tools[0].type"),
        (True, {"tools": [{"type": "mcp"}]}, "invalid_value", "session.tools[0].type"),
        (
            False,
            {"tools": [{"type": "function", "name": "end call"}]},
            "invalid_value",
            "session.tools[0].name",
        ),
        (
            True,
            {"tools": [{"type": "function", "name": "x" * 65}]},
            "string_above_max_length",
            "session.tools[0].name",
        ),
        (
            False,
            # The Chat Completions shape is not the Realtime one.
            {"tools": [{"type": "function", "function": {"name": "end_call"}}]},
            "unknown_parameter",
            "session.tools[0].function",
        ),
        (
            True,
            {"tools": [{"type": "function", "name": "f", "parameters": {"type": "string"}}]},
            "invalid_function_parameters",
            "session.tools[0].parameters",
        ),
        (
            False,
            {"tools": [{"type": "function", "name": "f", "description": 5}]},
            "invalid_type",
            "session.tools[0].description",
        ),
        (False, {"tool_choice": "always"}, "invalid_value", "session.tool_choice"),
        (
            True,
            {"tool_choice": {"type": "function"}},
            "missing_required_parameter",
            "session.tool_choice.name",
        ),
        (
            False,
            {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "name": "end_call"}},
            "invalid_value",
            "session.tool_choice.name",
        ),
    ],
)
async def test_malformed_tools_are_refused_whole(
    make_agent: AgentFactory, beta: bool, fields: dict[str, Any], code: str, param: str
) -> None:
    agent = await make_agent(speed=0)
    async with client(agent, beta=beta) as c:
        await c.update(_with_tools(beta, tools=[END_CALL_TOOL]))
        await c.send(
            {"type": "session.update", "event_id": "evt_9", "session": _with_tools(beta, **fields)}
        )
        error = (await c.next())["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)
    assert error["event_id"] == "evt_9" and error["message"]
    # Nothing of the update was applied.
    assert agent.sessions[0].config.tools == [END_CALL_TOOL]
    assert agent.sessions[0].config.tool_choice == "auto"


def test_malformed_tool_messages_read_like_the_service() -> None:
    from bridge.local_agent.config import SessionConfig
    from bridge.local_agent.server_events import RealtimeError

    config = SessionConfig.initial("sess_1", "gpt-realtime", "ga")

    def refusal(**fields: Any) -> str:
        with pytest.raises(RealtimeError) as refused:
            config.updated("ga", {"type": "realtime", **fields}, False)
        return refused.value.message

    assert refusal(tools=[{"type": "function"}]) == (
        "Missing required parameter: 'session.tools[0].name'."
    )
    assert refusal(tools=[{"type": "function", "name": "end_call", "strict": True}]) == (
        "Unknown parameter: 'session.tools[0].strict'."
    )
    assert refusal(tools=[{"type": "function", "name": "a.b"}]) == (
        "Invalid 'session.tools[0].name': string does not match pattern. Expected a string "
        "that matches the pattern '^[a-zA-Z0-9_-]+$'."
    )
    assert refusal(tool_choice="always") == (
        "Invalid value: 'always'. Supported values are: 'none', 'auto', and 'required'."
    )


def _function_call_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        e
        for e in events
        if e["type"].startswith("response.function_call_arguments")
        or e.get("item", {}).get("type") == "function_call"
    ]


async def test_a_planned_call_follows_the_spoken_answer_with_matching_ids(
    make_agent: AgentFactory,
) -> None:
    plan = FunctionCallPlan("get_weather", {"city": "Paris"})
    agent = await make_agent(speed=0, chunk_ms=1000, function_calls={1: plan})
    async with client(agent) as c:
        await c.update(_with_tools(False, tools=[WEATHER_TOOL]))
        done = await speak_turn(c)  # the echo of a 1.8 s turn, then the call
    after = c.types()[c.types().index("response.created") :]
    assert after == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio_transcript.delta",
        *["response.output_audio.delta"] * 2,
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        # The function call, a second output item.
        "response.output_item.added",
        "conversation.item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
    ]
    added, item_added, delta1, delta2, args_done, item_done, output_done = _function_call_events(
        c.events
    )
    rid = done["response"]["id"]
    item = added["item"]
    call_id = item["call_id"]
    assert call_id.startswith("call_") and len(call_id) == 21
    assert item == {
        "id": item["id"],
        "object": "realtime.item",
        "type": "function_call",
        "status": "in_progress",
        "name": "get_weather",
        "call_id": call_id,
        "arguments": "",
    }
    assert (added["response_id"], added["output_index"]) == (rid, 1)
    assert item_added["item"] == item
    assert item_added["previous_item_id"] == done["response"]["output"][0]["id"]
    arguments = '{"city": "Paris"}'
    for delta in (delta1, delta2):
        assert {k: delta[k] for k in ("response_id", "item_id", "output_index", "call_id")} == {
            "response_id": rid,
            "item_id": item["id"],
            "output_index": 1,
            "call_id": call_id,
        }
    assert delta1["delta"] + delta2["delta"] == arguments
    assert (args_done["item_id"], args_done["call_id"], args_done["output_index"]) == (
        item["id"],
        call_id,
        1,
    )
    assert (args_done["name"], args_done["arguments"]) == ("get_weather", arguments)
    completed = {**item, "status": "completed", "arguments": arguments}
    assert item_done["item"] == completed
    assert (output_done["response_id"], output_done["output_index"]) == (rid, 1)
    assert output_done["item"] == completed
    assert done["response"]["status"] == "completed"
    assert done["response"]["output"][1] == completed
    assert done["response"]["output"][0]["content"][0]["type"] == "output_audio"
    # The call is text output: name + arguments, 4 characters a token.
    transcript = done["response"]["output"][0]["content"][0]["transcript"]
    expected_text = -(-len(transcript) // 4) + -(-len("get_weather" + arguments) // 4)
    assert done["response"]["usage"]["output_token_details"]["text_tokens"] == expected_text

    session = agent.sessions[0]
    record = {
        "call_id": call_id,
        "name": "get_weather",
        "arguments": arguments,
        "response_index": 1,
    }
    assert session.function_calls == [record]
    response = session.responses[0]
    assert response.function_calls == [record]
    assert response.items == [done["response"]["output"][0]["id"]]  # audio items only
    assert b"".join(response.audio_sent.values()) == ECHO
    assert session.notes == [] and session.errors_sent == []


async def test_a_call_only_response_in_beta_speaks_nothing(make_agent: AgentFactory) -> None:
    plan = FunctionCallPlan("end_call", {}, speak_first=False)
    agent = await make_agent(speed=0, function_calls={2: plan})
    async with client(agent, beta=True) as c:
        await c.update(_with_tools(True, tools=[WEATHER_TOOL, END_CALL_TOOL]))
        await c.send({"type": "response.create", "response": {"instructions": "Hello"}})
        first = await c.until("response.done")
        start = len(c.events)
        await c.send({"type": "response.create"})
        second = await c.until("response.done")
    assert not _function_call_events(c.events[:start])  # response 1 had no plan
    assert first["response"]["output"][0]["type"] == "message"
    assert [e["type"] for e in c.events[start:] if e["type"] != "rate_limits.updated"] == [
        "response.created",
        "response.output_item.added",
        "conversation.item.created",  # beta's name; beta has no conversation.item.done
        "response.function_call_arguments.delta",  # "{"
        "response.function_call_arguments.delta",  # "}"
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.done",
    ]
    [call] = second["response"]["output"]
    assert (call["type"], call["name"], call["arguments"], call["status"]) == (
        "function_call",
        "end_call",
        "{}",
        "completed",
    )
    usage = second["response"]["usage"]
    assert usage["output_token_details"] == {"text_tokens": 3, "audio_tokens": 0}
    session = agent.sessions[0]
    assert [r["response_index"] for r in session.function_calls] == [2]
    assert session.responses[1].items == [] and session.responses[1].audio_sent == {}


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({}, "the session declares no function tool 'end_call'"),
        ({"tools": [WEATHER_TOOL]}, "the session declares no function tool 'end_call'"),
        ({"tools": [END_CALL_TOOL], "tool_choice": "none"}, "tool_choice is 'none'"),
        (
            {
                "tools": [END_CALL_TOOL, WEATHER_TOOL],
                "tool_choice": {"type": "function", "name": "get_weather"},
            },
            "tool_choice forces 'get_weather'",
        ),
    ],
    ids=["no-tools", "other-tool", "choice-none", "choice-forces-another"],
)
async def test_a_plan_the_session_does_not_allow_is_not_carried_out(
    make_agent: AgentFactory, fields: dict[str, Any], reason: str
) -> None:
    agent = await make_agent(speed=0, function_calls={1: FunctionCallPlan("end_call")})
    async with client(agent) as c:
        await c.update(_with_tools(False, **fields))
        done = await speak_turn(c)
    assert not _function_call_events(c.events)
    assert [item["type"] for item in done["response"]["output"]] == ["message"]
    session = agent.sessions[0]
    assert session.function_calls == []
    assert b"".join(session.responses[0].audio_sent.values()) == ECHO  # the normal answer
    assert session.notes == [f"response 1: planned call to end_call not made: {reason}"]


async def test_a_function_output_is_accepted_and_answered_with_speech(
    make_agent: AgentFactory,
) -> None:
    plan = FunctionCallPlan("get_weather", {"city": "Oslo"}, speak_first=False)
    agent = await make_agent(speed=0, function_calls={1: plan})
    async with client(agent) as c:
        await c.update(_with_tools(False, tools=[WEATHER_TOOL]))
        await c.send({"type": "response.create"})
        call = (await c.until("response.function_call_arguments.done"))["call_id"]
        await c.until("response.done")
        output = '{"forecast": "sunny", "celsius": 21}'
        await c.send(_function_output(call, output))
        added = await c.until("conversation.item.added")
        assert (await c.next())["type"] == "conversation.item.done"
        await c.send({"type": "response.create"})
        done = await c.until("response.done")
    assert added["item"]["type"] == "function_call_output"
    assert (added["item"]["call_id"], added["item"]["output"]) == (call, output)
    session = agent.sessions[0]
    call_item = session.conversation.function_call(call)
    assert call_item is not None and added["previous_item_id"] == call_item.id
    assert session.function_outputs == [{"call_id": call, "name": "get_weather", "output": output}]
    # The answer is synthetic speech sized by the output: 60 ms a character.
    assert done["response"]["status"] == "completed"
    assert (
        'synthetic speech for: {"forecast"'
        in (done["response"]["output"][0]["content"][0]["transcript"])
    )
    answer = session.responses[1]
    assert abs(sum(map(len, answer.audio_sent.values())) - len(output) * 60 * 8) <= 8
    # The output was part of the answer's input.
    assert done["response"]["usage"]["input_token_details"]["text_tokens"] >= len(output) // 4
    assert session.errors_sent == []


async def test_a_function_output_for_an_unknown_call_is_the_service_error(
    make_agent: AgentFactory,
) -> None:
    agent = await make_agent(speed=0)
    async with client(agent) as c:
        await c.send({**_function_output("call_nope", "{}"), "event_id": "evt_3"})
        error = (await c.next())["error"]
        # A call restored by the client (after a reconnect) is a call in the conversation.
        restored = {
            "type": "function_call",
            "call_id": "call_restored",
            "name": "get_weather",
            "arguments": '{"city": "Rome"}',
        }
        await c.send({"type": "conversation.item.create", "item": restored})
        await c.until("conversation.item.done")
        await c.send(_function_output("call_restored", "rainy"))
        await c.until("conversation.item.done")
        await c.send({"type": "conversation.item.create", "item": {"type": "function_call_output"}})
        missing = (await c.next())["error"]
        await c.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": "call_restored"},
            }
        )
        no_output = (await c.next())["error"]
    assert error == {
        "type": "invalid_request_error",
        "code": "invalid_tool_call_id",
        "message": "Tool call ID 'call_nope' not found in conversation.",
        "param": "item.call_id",
        "event_id": "evt_3",
    }
    assert (missing["code"], missing["param"]) == ("missing_required_parameter", "item.call_id")
    assert (no_output["code"], no_output["param"]) == ("missing_required_parameter", "item.output")
    session = agent.sessions[0]
    assert session.function_outputs == [
        {"call_id": "call_restored", "name": "get_weather", "output": "rainy"}
    ]
    assert session.function_calls == []  # the agent itself made none
    assert len(session.errors_sent) == 3


async def test_a_response_cancelled_while_speaking_makes_no_call(make_agent: AgentFactory) -> None:
    agent = await make_agent(speed=1.0, function_calls={1: FunctionCallPlan("end_call")})
    async with client(agent) as c:
        await c.update(_with_tools(False, tools=[END_CALL_TOOL]))
        await c.send({"type": "response.create", "response": {"instructions": "x" * 30}})
        await c.until("response.output_audio.delta")
        await c.send({"type": "response.cancel"})
        done = await c.until("response.done")
    assert done["response"]["status"] == "cancelled"
    assert [item["type"] for item in done["response"]["output"]] == ["message"]
    assert not _function_call_events(c.events)
    assert agent.sessions[0].function_calls == []


def test_function_call_plans_are_validated() -> None:
    with pytest.raises(ValueError, match="response numbers"):
        AgentOptions(function_calls={0: FunctionCallPlan("end_call")})
    with pytest.raises(ValueError, match="FunctionCallPlan"):
        AgentOptions(function_calls={1: "end_call"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="name"):
        FunctionCallPlan("")
    with pytest.raises(ValueError, match="JSON"):
        FunctionCallPlan("f", {"when": object()})
    assert FunctionCallPlan("f", {"a": [1, "é"]}).arguments_json == '{"a": [1, "é"]}'


def test_call_function_cli_specs() -> None:
    from bridge.local_agent.__main__ import parse_function_call

    assert parse_function_call('2:transfer_call:{"to": "sales:desk"}') == (
        2,
        FunctionCallPlan("transfer_call", {"to": "sales:desk"}),
    )
    assert parse_function_call("1:end_call", speak_first=False) == (
        1,
        FunctionCallPlan("end_call", {}, speak_first=False),
    )
    for bad in ("end_call", "x:end_call", "0:end_call", "1:", "1:f:[1]", "1:f:{nope"):
        with pytest.raises(ValueError):
            parse_function_call(bad)
