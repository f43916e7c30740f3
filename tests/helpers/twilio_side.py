"""Twilio's side of a call played by hand, for tests that must misbehave where the
simulator would not: webhook, signed upgrade, connected/start with chosen parameters."""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect

from bridge.local_agent import AgentSession
from bridge.records.model import CallRecord
from bridge.simulator import CallReport, SimulatorOptions, simulate_call
from tests.helpers.running_bridge import (
    AUTH_TOKEN,
    RunningBridge,
    running_bridge,
    stored_record,
    wait_until,
)
from twiml.answer import stream_url

STREAM_SID = "MZ" + "1" * 32
CALL_SID = "CA" + "1" * 32


def call_tasks() -> list[asyncio.Task]:
    """Tasks the bridge started for calls (named after their role by the call runner)."""
    roles = ("twilio-reader", "realtime", "call-clock")
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(roles) and not t.done()]


async def assert_call_fully_gone(bridge: RunningBridge) -> None:
    await wait_until(lambda: not bridge.app.state.calls.active, 1, "the call to be gone")
    assert call_tasks() == []


async def bridged_session(bridge: RunningBridge) -> AgentSession:
    """The call's Realtime session at the agent, once the bridge has configured it."""
    session = await bridge.agent.wait_for_session(0, timeout=5)
    await wait_until(lambda: session.received, 5, "session.update at the agent")
    return session


def signed_headers(url: str, params: dict[str, str] | None = None) -> dict[str, str]:
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params or {})
    return {"X-Twilio-Signature": signature}


async def answer_call(bridge: RunningBridge, public_base: str | None = None) -> dict[str, str]:
    """Twilio's first move: the signed voice webhook. Returns the TwiML's stream parameters."""
    public_base = public_base or bridge.base_url
    form = {"CallSid": CALL_SID, "From": "+15550001111", "To": "+15550002222"}
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            bridge.webhook_url, data=form, headers=signed_headers(public_base + "/voice", form)
        )
    assert answer.status_code == 200, answer.text
    return {p.get("name"): p.get("value") for p in ET.fromstring(answer.text).iter("Parameter")}


def start_message(parameters: dict[str, str]) -> str:
    start = {
        "accountSid": "AC" + "0" * 32,
        "streamSid": STREAM_SID,
        "callSid": CALL_SID,
        "tracks": ["inbound"],
        "customParameters": parameters,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    return json.dumps(
        {"event": "start", "sequenceNumber": "1", "streamSid": STREAM_SID, "start": start}
    )


async def start_stream(
    bridge: RunningBridge, parameters: dict[str, str], public_base: str | None = None
) -> ClientConnection:
    """Open the media stream as Twilio does (signed for the TwiML's URL), send connected and
    start with `parameters`. The socket itself goes to the bridge's loopback address, as it
    does behind a proxy."""
    headers = signed_headers(stream_url(public_base or bridge.base_url))
    ws = await connect(bridge.stream_url, additional_headers=headers)
    await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    await ws.send(start_message(parameters))
    return ws


async def open_stream(bridge: RunningBridge, public_base: str | None = None) -> ClientConnection:
    """A call as Twilio places it: the webhook, then the stream with the TwiML's parameters."""
    return await start_stream(bridge, await answer_call(bridge, public_base), public_base)


async def simulated_call(
    bridge: RunningBridge, **options: object
) -> tuple[CallReport, AgentSession]:
    """A whole call placed by the simulator (signed webhook and stream), and the agent's
    session for it, which must be gone within 1 s of the call's end."""
    settings = {"turn_timeout_s": 10, "max_duration_s": 30, **options}
    report = await simulate_call(
        SimulatorOptions(
            webhook_url=bridge.webhook_url,
            auth_token=AUTH_TOKEN,
            **settings,  # type: ignore[arg-type]
        )
    )
    session = bridge.agent.sessions[0]
    assert await session.wait_closed(timeout=1.0), "the Realtime session outlived the call"
    return report, session


async def call_with_two_barge_ins(bridge: RunningBridge) -> tuple[CallReport, CallRecord]:
    """A simulated call of three turns, the caller talking over the first two answers 600 ms
    into each, and its record once stored."""
    report, _ = await simulated_call(bridge, turns=3, barge_in_after_ms=600)
    return report, await stored_record(bridge, report.call_sid)


@asynccontextmanager
async def recorded_call_with_two_barge_ins(
    recordings: Path, console_password: str
) -> AsyncIterator[tuple[RunningBridge, CallReport, CallRecord]]:
    """A bridge that records its calls into `recordings`, its console on, and such a call
    placed on it."""
    async with running_bridge(
        recording="bridge", recordings_dir=str(recordings), console_password=console_password
    ) as bridge:
        report, record = await call_with_two_barge_ins(bridge)
        yield bridge, report, record
