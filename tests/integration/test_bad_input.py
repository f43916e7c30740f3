"""Bad input from Twilio's side, over loopback, next to a good call.

Each case misbehaves on one media stream while a simulated caller has a normal call on the
same bridge. Whatever the case, the server keeps serving, the good call hears exactly what
the model sent, and no Realtime session is left open. What happens to the bad stream is
decided per case (README, "Bad input"): frames that cannot be used are dropped and the call
goes on; an oversized message or a flood ends that call.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bridge.local_agent import AgentSession
from bridge.simulator import SimulatorOptions, simulate_call
from tests.helpers.heard_audio import heard_bytes_by_item, model_audio_by_item
from tests.helpers.running_bridge import AUTH_TOKEN, RunningBridge, running_bridge, wait_until
from tests.helpers.twilio_side import (
    STREAM_SID,
    answer_call,
    bridged_session,
    open_stream,
    signed_headers,
    start_message,
)

pytestmark = pytest.mark.integration

GOOD_FRAME = base64.b64encode(b"\xff" * 160).decode()


def media(payload: str, stream_sid: str = STREAM_SID) -> str:
    return json.dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}})


async def appended(session: AgentSession, count: int) -> None:
    await wait_until(lambda: session.appends_received >= count, 5, f"{count} appends")
    assert session.appends_received == count


async def malformed_json(ws: ClientConnection, session: AgentSession) -> None:
    for bad in ["{not json", "[]", "null", '{"event": 7}', '{"event":"media","media":[]}']:
        await ws.send(bad)
    await ws.send(media(GOOD_FRAME))
    await appended(session, 1)


async def unknown_event(ws: ClientConnection, session: AgentSession) -> None:
    await ws.send(json.dumps({"event": "bogus", "streamSid": STREAM_SID, "bogus": {}}))
    await ws.send(media(GOOD_FRAME))
    await appended(session, 1)


async def invalid_base64(ws: ClientConnection, session: AgentSession) -> None:
    for bad in ["!!!!", "abc", '"}, {"type": "response.create"}']:
        await ws.send(media(bad))
    await ws.send(media(GOOD_FRAME))
    await appended(session, 1)  # only the good frame reached the backend
    assert session.errors_sent == []


async def wrong_stream_sid(ws: ClientConnection, session: AgentSession) -> None:
    await ws.send(media(GOOD_FRAME, stream_sid="MZ" + "9" * 32))
    await ws.send(media(GOOD_FRAME))
    await appended(session, 1)


async def second_start(ws: ClientConnection, session: AgentSession) -> None:
    start = {"streamSid": "MZ" + "8" * 32, "callSid": "CA" + "8" * 32, "accountSid": "AC"}
    await ws.send(json.dumps({"event": "start", "streamSid": start["streamSid"], "start": start}))
    await ws.send(media(GOOD_FRAME))
    await appended(session, 1)


async def oversized_message(ws: ClientConnection, session: AgentSession) -> None:
    await ws.send(media("A" * 200_000))  # 200 kB: over the 64 KiB limit
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def message_flood(ws: ClientConnection, session: AgentSession) -> None:
    mark = json.dumps({"event": "mark", "streamSid": STREAM_SID, "mark": {"name": "x"}})
    with pytest.raises(ConnectionClosed) as closed:
        for _ in range(5000):
            await ws.send(mark)
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


Misbehaviour = Callable[[ClientConnection, AgentSession], Awaitable[None]]
CASES: dict[str, Misbehaviour] = {
    "malformed-json": malformed_json,
    "unknown-event": unknown_event,
    "invalid-base64": invalid_base64,
    "wrong-stream-sid": wrong_stream_sid,
    "second-start": second_start,
    "oversized-message": oversized_message,
    "message-flood": message_flood,
}


async def good_call(bridge: RunningBridge) -> None:
    report = await simulate_call(
        SimulatorOptions(
            webhook_url=bridge.webhook_url, auth_token=AUTH_TOKEN, turns=1, utterance_ms=600
        )
    )
    assert report.completed and report.turns[0].answer_complete
    session = next(s for s in bridge.agent.sessions if s.path and s.responses)
    heard, model = heard_bytes_by_item(report), model_audio_by_item(session)
    assert heard and all(model[item] == audio for item, audio in heard.items())


@pytest.mark.parametrize("misbehave", CASES.values(), ids=CASES.keys())
async def test_bad_input_costs_only_its_own_call(misbehave: Misbehaviour) -> None:
    async with running_bridge() as bridge:
        bad = await open_stream(bridge)
        bad_session = await bridged_session(bridge)
        good = asyncio.create_task(good_call(bridge))
        await misbehave(bad, bad_session)
        await good  # the other call did not notice
        async with httpx.AsyncClient() as http:
            assert (await http.get(bridge.base_url + "/healthz")).status_code == 200
        await bad.close()
        # no Realtime session outlives its call, bad or good
        for session in bridge.agent.sessions:
            assert await session.wait_closed(timeout=1.0)


async def test_media_before_start_is_dropped_and_the_call_then_proceeds() -> None:
    async with running_bridge() as bridge:
        parameters = await answer_call(bridge)
        ws = await connect(bridge.stream_url, additional_headers=signed_headers(bridge.stream_url))
        for _ in range(5):
            await ws.send(media(GOOD_FRAME))
        await ws.send(start_message(parameters))
        session = await bridged_session(bridge)
        await ws.send(media(GOOD_FRAME))
        await appended(session, 1)  # none of the five early frames
        await ws.close()
        assert await session.wait_closed(timeout=1.0)
