"""A whole simulated call per provider profile and per audio format, against the local
agent: the agent records the URL, query and headers each session was opened with."""

from __future__ import annotations

import warnings
from http import HTTPStatus

import numpy as np
import pytest
from websockets.asyncio.server import serve
from websockets.exceptions import InvalidStatus

from bridge.local_agent import AgentSession, LocalAgent
from bridge.realtime.endpoint import RealtimeEndpoint, open_realtime
from bridge.simulator import CallReport
from tests.helpers.heard_audio import (
    assert_truncations_match_what_was_heard,
    call_with_barge_in,
    heard_bytes_by_item,
    model_audio_by_item,
)
from tests.helpers.running_bridge import RunningBridge, running_bridge
from tests.helpers.twilio_side import simulated_call

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

pytestmark = pytest.mark.integration

FROM = "+15557654321"


async def one_turn_call(bridge: RunningBridge) -> tuple[CallReport, AgentSession]:
    report, session = await simulated_call(
        bridge,
        from_number=FROM,
        turns=1,
        utterance_ms=400,  # a short turn: these tests are about the connection
        answer_idle_ms=300,
    )
    assert report.completed and not report.closed_by_bridge
    assert report.heard_audio, "the caller heard no answer"
    assert session.errors_sent == []
    return report, session


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_openai_profile_sends_the_model_and_a_bearer_key(dialect: str) -> None:
    async with running_bridge(openai_api_key="sk-profile-test", realtime_dialect=dialect) as bridge:
        _, session = await one_turn_call(bridge)
    assert session.path == "/v1/realtime?model=gpt-realtime"
    assert session.headers["authorization"] == "Bearer sk-profile-test"
    assert ("openai-beta" in session.headers) == (dialect == "beta")
    assert session.dialect == dialect


@pytest.mark.parametrize(
    ("api_version", "path", "dialect"),
    [
        (None, "/openai/v1/realtime?model=voice-deployment", "ga"),
        (
            "2025-04-01-preview",
            "/openai/realtime?api-version=2025-04-01-preview&deployment=voice-deployment",
            "beta",
        ),
    ],
)
async def test_azure_profiles_use_their_path_and_the_api_key_header(
    api_version: str | None, path: str, dialect: str
) -> None:
    async with LocalAgent() as agent:
        # Where the Azure resource would be: http://127.0.0.1:<port>.
        resource = agent.url.replace("ws://", "http://").removesuffix("/v1/realtime")
        async with running_bridge(
            agent=agent,
            realtime_url=None,
            azure_openai_endpoint=resource,
            azure_openai_api_key="azure-profile-key",
            azure_openai_deployment="voice-deployment",
            azure_openai_api_version=api_version,
        ) as bridge:
            _, session = await one_turn_call(bridge)
    assert session.path == path
    assert session.headers["api-key"] == "azure-profile-key"
    assert "authorization" not in session.headers and "openai-beta" not in session.headers
    # The agent picks the dialect the way Azure does, from the path: the bridge must match.
    assert session.dialect == dialect


async def test_a_gateway_gets_the_key_as_token_and_per_call_headers() -> None:
    async with running_bridge(
        openai_api_key="gw-profile-key",
        realtime_key_query_param="token",
        realtime_headers='{"Session-Id": "{call_sid}", "User-Id": "{from}", "X-App": "phone"}',
    ) as bridge:
        report, session = await one_turn_call(bridge)
    assert session.query == {"model": "gpt-realtime", "token": "gw-profile-key"}
    assert "authorization" not in session.headers
    assert session.headers["session-id"] == report.call_sid
    assert session.headers["user-id"] == FROM
    assert session.headers["x-app"] == "phone"


def assert_heard_the_models_audio(report: CallReport, session: AgentSession, fmt: str) -> None:
    """What the caller heard of each item is that item's audio, converted to mu-law: the
    same length (1/8 ms per byte) and the same signal."""
    model = model_audio_by_item(session)
    heard = heard_bytes_by_item(report)
    assert heard, "the caller heard nothing"
    bytes_per_mulaw_byte = 6 if fmt == "pcm16" else 1
    for item, audio in heard.items():
        full = len(model[item]) // bytes_per_mulaw_byte
        assert len(audio) <= full + 1, f"heard more of {item} than the model sent"
        original = model[item][: len(audio) * bytes_per_mulaw_byte]
        if fmt == "pcma":
            # a-law and mu-law are both 8 kHz: the conversion is sample for sample.
            expected = audioop.lin2ulaw(audioop.alaw2lin(original, 2), 2)
            assert audio == expected, f"{item} was not converted sample for sample"
        else:
            assert _similarity(audio, original) > 0.95, f"{item} does not sound like the model"
    last_item = session.responses[-1].items[-1]
    full = len(model[last_item]) // bytes_per_mulaw_byte
    assert abs(len(heard[last_item]) - full) <= 1, "the last answer was not heard in full"


def _similarity(mulaw: bytes, pcm16_24k: bytes) -> float:
    """Peak normalised correlation of the heard audio with the model's, the model's taken
    at every third sample (it echoes the caller: nothing above 4 kHz to alias), over lags
    up to 6 ms (the resampling filter's delay is ~2 ms)."""
    heard = np.frombuffer(audioop.ulaw2lin(mulaw, 2), "<i2").astype(float)
    model = np.frombuffer(pcm16_24k, "<i2").astype(float)[::3]
    n = min(len(heard), len(model)) - 48
    best = 0.0
    for lag in range(48):
        a, b = heard[lag : lag + n], model[:n]
        denominator = float(np.linalg.norm(a) * np.linalg.norm(b)) or 1.0
        best = max(best, float(a @ b) / denominator)
    return best


@pytest.mark.parametrize("dialect", ["ga", "beta"])
@pytest.mark.parametrize("fmt", ["pcm16", "pcma"])
async def test_a_transcoded_call_hears_the_answer_and_truncates_where_it_was_heard(
    dialect: str, fmt: str
) -> None:
    async with running_bridge(realtime_dialect=dialect, realtime_audio_format=fmt) as bridge:
        report, session = await call_with_barge_in(bridge, turns=2)
    assert (session.config.input_format, session.config.output_format) == (fmt, fmt)
    assert report.completed and not report.closed_by_bridge
    assert report.clears_received == 1
    assert_heard_the_models_audio(report, session, fmt)
    # audio_end_ms is in the model's own audio: the agent checks it against the item's
    # PCM16 / a-law length, and it matches what the caller heard.
    assert_truncations_match_what_was_heard(report, session)


async def test_an_endpoint_that_redirects_is_refused_so_no_key_reaches_another_host() -> None:
    async with LocalAgent() as agent:

        def redirect(connection, request):  # type: ignore[no-untyped-def]
            response = connection.respond(HTTPStatus.FOUND, "")
            response.headers["Location"] = agent.url
            return response

        async def never(connection) -> None:  # type: ignore[no-untyped-def]
            raise AssertionError("the redirecting server accepted a WebSocket")

        async with serve(never, "127.0.0.1", 0, process_request=redirect) as redirector:
            port = redirector.sockets[0].getsockname()[1]
            endpoint = RealtimeEndpoint(
                f"ws://127.0.0.1:{port}/v1/realtime", headers={"api-key": "az-key"}
            )
            with pytest.raises(InvalidStatus) as refused:
                await open_realtime(endpoint)
        assert refused.value.response.status_code == HTTPStatus.FOUND
        assert agent.sessions == []  # the key never went to the redirect's target
