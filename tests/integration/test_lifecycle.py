"""Call lifecycle over real loopback sockets: hang-ups, backend failures, signatures."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.local_agent import LocalAgent
from bridge.logs import configure_logging
from bridge.simulator import SimulatorOptions, simulate_call
from tests.helpers.running_bridge import AUTH_TOKEN, running_bridge, wait_until
from tests.helpers.twilio_side import (
    CALL_SID,
    STREAM_SID,
    answer_call,
    assert_call_fully_gone,
    bridged_session,
    open_stream,
    signed_headers,
    start_stream,
)

pytestmark = pytest.mark.integration


async def test_stop_closes_the_realtime_session_within_a_second() -> None:
    async with running_bridge() as bridge:
        ws = await open_stream(bridge)
        session = await bridged_session(bridge)
        hung_up_at = time.monotonic()
        await ws.send(json.dumps({"event": "stop", "streamSid": STREAM_SID, "stop": {}}))
        assert await session.wait_closed(timeout=1.0)
        assert session.closed_at is not None and session.closed_at - hung_up_at < 1.0
        await assert_call_fully_gone(bridge)
        await ws.close()


async def test_a_dropped_twilio_socket_closes_the_realtime_session_within_a_second() -> None:
    async with running_bridge() as bridge:
        ws = await open_stream(bridge)
        session = await bridged_session(bridge)
        hung_up_at = time.monotonic()
        ws.transport.abort()  # no stop, no close frame: the line just went dead
        assert await session.wait_closed(timeout=1.0)
        assert session.closed_at is not None and session.closed_at - hung_up_at < 1.0
        await assert_call_fully_gone(bridge)


async def test_a_refused_backend_ends_the_twilio_stream_cleanly_and_logs_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_bridge(realtime_url="ws://127.0.0.1:9/v1/realtime") as bridge:
        ws = await open_stream(bridge)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        # A normal close lets Twilio go on to the TwiML after <Connect> (the apology).
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        await assert_call_fully_gone(bridge)
    failures = [r for r in caplog.records if r.levelname == "ERROR" and "Realtime" in r.message]
    assert failures and all(getattr(r, "call_sid", None) == CALL_SID for r in failures)


async def test_a_backend_that_stays_down_ends_the_stream_after_the_reconnect_budget() -> None:
    async with running_bridge(reconnect_budget_s=1.0) as bridge:
        ws = await open_stream(bridge)
        await bridged_session(bridge)
        await bridge.agent.stop()  # gone for good: every reconnect is refused
        lost_at = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        # Retried for the whole budget and not longer: the call's clock ticks every 0.25 s
        # (the old overshoot was a backoff step, 1 s here; slack for a loaded machine).
        assert 1.0 <= time.monotonic() - lost_at < 1.0 + 0.25 + 0.5
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000  # apology
        await assert_call_fully_gone(bridge)


async def test_a_backend_that_accepts_and_then_says_nothing_is_given_up_within_the_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_bridge(session_setup_timeout_s=0.5, reconnect_budget_s=1.5) as bridge:
        bridge.agent.hang_new_sessions = True  # every session: accepted, then silence
        opened_at = time.monotonic()
        ws = await open_stream(bridge)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        ended_after = time.monotonic() - opened_at
        # Silent for its setup time, then retried (each silent too) within the budget.
        assert 0.5 + 1.5 <= ended_after < 0.5 + 1.5 + 1.0
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000  # apology
        assert bridge.agent.hung >= 2
        await assert_call_fully_gone(bridge)
        await wait_until(lambda: bridge.agent.hung_open == 0, 1, "the hung sockets to close")
    causes = [r.getMessage() for r in caplog.records if "session.created" in r.getMessage()]
    assert causes and causes[0].startswith("Realtime session gave no session.created")


async def test_a_reconnected_session_that_says_nothing_ends_the_call_within_the_budget() -> None:
    async with running_bridge(session_setup_timeout_s=0.5, reconnect_budget_s=1.5) as bridge:
        ws = await open_stream(bridge)
        session = await bridged_session(bridge)
        bridge.agent.hang_new_sessions = True  # the backend hangs from now on
        await session.drop()
        lost_at = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert 1.5 <= time.monotonic() - lost_at < 1.5 + 1.0  # the budget is a bound
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        await assert_call_fully_gone(bridge)
        await wait_until(lambda: bridge.agent.hung_open == 0, 1, "the hung sockets to close")


async def test_unsigned_or_wrongly_signed_requests_are_refused_before_any_work() -> None:
    async with running_bridge() as bridge:
        form = {"CallSid": CALL_SID, "From": "+15550001111", "To": "+15550002222"}
        async with httpx.AsyncClient() as http:
            unsigned = await http.post(bridge.webhook_url, data=form)
            forged = await http.post(
                bridge.webhook_url,
                data=form,
                headers={"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"},
            )
            tampered = await http.post(
                bridge.webhook_url,
                data={**form, "To": "+15559999999"},
                headers=signed_headers(bridge.webhook_url, form),
            )
            signed = await http.post(
                bridge.webhook_url, data=form, headers=signed_headers(bridge.webhook_url, form)
            )
        assert [r.status_code for r in (unsigned, forged, tampered)] == [403, 403, 403]
        assert "Connect" not in unsigned.text
        assert signed.status_code == 200 and "<Stream" in signed.text

        for headers in ({}, {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}):
            with pytest.raises(InvalidStatus) as rejected:
                await connect(bridge.stream_url, additional_headers=headers)
            assert rejected.value.response.status_code == 403
        assert bridge.agent.sessions == []  # no Realtime session was opened for them


async def test_voice_answers_get_and_post_with_the_call_as_stream_parameters() -> None:
    async with running_bridge() as bridge:
        query = "CallSid=CA42&From=%2B15550001111&To=%2B15550002222"
        url = f"{bridge.webhook_url}?{query}"
        async with httpx.AsyncClient() as http:
            got = await http.get(url, headers=signed_headers(url))
        assert got.status_code == 200
        assert got.headers["content-type"].startswith("application/xml")
        assert f'url="{bridge.stream_url}"' in got.text
        assert '<Parameter name="CallSid" value="CA42"' in got.text
        assert '<Parameter name="From" value="+15550001111"' in got.text
        assert "<Say>" in got.text.split("</Connect>")[1]


async def test_behind_a_proxy_signatures_are_checked_against_public_url() -> None:
    public = "https://bridge.example.com"
    async with running_bridge(public_url=public) as bridge:
        form = {"CallSid": CALL_SID, "From": "+15550001111", "To": "+15550002222"}
        async with httpx.AsyncClient() as http:
            as_twilio_signs = await http.post(
                bridge.webhook_url, data=form, headers=signed_headers(public + "/voice", form)
            )
            as_the_app_sees_it = await http.post(
                bridge.webhook_url, data=form, headers=signed_headers(bridge.webhook_url, form)
            )
        assert as_twilio_signs.status_code == 200
        assert 'url="wss://bridge.example.com/media-stream"' in as_twilio_signs.text
        assert as_the_app_sees_it.status_code == 403

        with pytest.raises(InvalidStatus):  # signed for the loopback URL: not what Twilio signs
            await connect(bridge.stream_url, additional_headers=signed_headers(bridge.stream_url))
        ws = await open_stream(bridge, public_base=public)
        session = await bridge.agent.wait_for_session(0, timeout=5)
        assert len(bridge.agent.sessions) == 1
        await ws.close()
        assert await session.wait_closed(timeout=1.0)


async def test_without_public_url_the_base_comes_from_the_request_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_bridge(public_url=None) as bridge:
        report = await simulate_call(
            SimulatorOptions(webhook_url=bridge.webhook_url, auth_token=AUTH_TOKEN, turns=1)
        )
    assert report.completed and report.turns[0].answer_complete
    assert report.stream_url == bridge.stream_url
    assert any("PUBLIC_URL is not set" in r.getMessage() for r in caplog.records)


async def test_a_refused_session_configuration_ends_the_stream_for_the_apology() -> None:
    async with running_bridge(voice="Marin") as bridge:  # voices are lower-case
        ws = await open_stream(bridge)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        session = bridge.agent.sessions[0]
        assert [e["error"]["code"] for e in session.errors_sent] == ["invalid_value"]
        assert await session.wait_closed(timeout=1.0)
        await assert_call_fully_gone(bridge)


async def test_debug_logs_keep_keys_tokens_and_signatures_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api_key, gateway_token = "sk-proj-never-logged", "gw-never-logged"
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("websockets").level
    configure_logging("debug")
    root.addHandler(caplog.handler)  # configure_logging replaced pytest's handlers
    agent = LocalAgent()
    try:
        url = await agent.start()
        async with running_bridge(
            agent=agent, openai_api_key=api_key, realtime_url=f"{url}?token={gateway_token}"
        ) as bridge:
            report = await simulate_call(
                SimulatorOptions(webhook_url=bridge.webhook_url, auth_token=AUTH_TOKEN, turns=1)
            )
            stream_signature = signed_headers(bridge.stream_url)["X-Twilio-Signature"]
        assert agent.sessions[0].headers["authorization"] == f"Bearer {api_key}"
    finally:
        await agent.stop()
        root.handlers[:], level, websockets_level = saved
        root.setLevel(level)
        logging.getLogger("websockets").setLevel(websockets_level)
    assert report.completed
    logged = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    assert "bridge.call" in logged  # the capture did see the call
    for secret in (api_key, gateway_token, AUTH_TOKEN, stream_signature):
        assert secret not in logged


async def test_a_stream_needs_the_fresh_single_use_token_of_its_own_call() -> None:
    async with running_bridge() as bridge:
        parameters = await answer_call(bridge)
        assert len(parameters["token"]) > 40
        forged = {**parameters, "token": parameters["token"][:-2] + "AA"}
        for bad in ({"CallSid": CALL_SID}, forged):  # missing, forged
            ws = await start_stream(bridge, bad)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert bridge.agent.sessions == []  # no paid session for either

        ws = await start_stream(bridge, parameters)  # the real one works ...
        session = await bridged_session(bridge)
        await ws.close()
        assert await session.wait_closed(timeout=1.0)
        replay = await start_stream(bridge, parameters)  # ... once
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(replay.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert len(bridge.agent.sessions) == 1
