"""Providers: each one's URL, headers, dialect and audio format, from the environment."""

from __future__ import annotations

import pytest

from bridge.call_runner import _describe
from bridge.realtime.dialects import Dialect
from bridge.realtime.providers import call_fields, endpoint_from_settings
from bridge.settings import load_settings
from bridge.transcode import AudioFormat
from bridge.usage import LOCAL_AGENT_MODEL
from tests.helpers.settings_env import problems


@pytest.fixture(autouse=True)
def clean_env(no_settings_in_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "twilio-token")


def endpoint(monkeypatch: pytest.MonkeyPatch, **env: str):  # type: ignore[no-untyped-def]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return endpoint_from_settings(load_settings())


def test_openai_ga_is_the_default_with_a_bearer_key_and_mulaw_passthrough(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ep = endpoint(monkeypatch, OPENAI_API_KEY="sk-1")
    assert ep.url == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert ep.headers == {"Authorization": "Bearer sk-1"}
    assert (ep.provider, ep.dialect, ep.audio_format) == ("openai", Dialect.GA, AudioFormat.PCMU)
    assert load_settings().rollover_after_s == 55 * 60


def test_openai_beta_adds_the_beta_header_and_rolls_over_before_30_minutes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ep = endpoint(monkeypatch, OPENAI_API_KEY="sk-1", REALTIME_DIALECT="beta")
    assert ep.headers["OpenAI-Beta"] == "realtime=v1"
    assert ep.dialect is Dialect.BETA
    assert load_settings().rollover_after_s == 25 * 60


@pytest.mark.parametrize(
    ("api_version", "url", "dialect"),
    [
        (None, "wss://my-res.openai.azure.com/openai/v1/realtime?model=voice-prod", Dialect.GA),
        (
            "2025-04-01-preview",
            "wss://my-res.openai.azure.com/openai/realtime"
            "?api-version=2025-04-01-preview&deployment=voice-prod",
            Dialect.BETA,  # the preview API speaks beta, with no OpenAI-Beta header
        ),
    ],
)
def test_azure_uses_its_path_the_deployment_and_an_api_key_header(
    monkeypatch: pytest.MonkeyPatch, api_version: str | None, url: str, dialect: Dialect
) -> None:
    if api_version:
        monkeypatch.setenv("AZURE_OPENAI_API_VERSION", api_version)
    ep = endpoint(
        monkeypatch,
        AZURE_OPENAI_ENDPOINT="https://my-res.openai.azure.com/",
        AZURE_OPENAI_API_KEY="az-key",
        AZURE_OPENAI_DEPLOYMENT="voice-prod",
    )
    assert ep.url == url  # the GA form has no api-version: Azure answers 401 to one
    assert ep.headers == {"api-key": "az-key"}  # no Bearer, no OpenAI-Beta
    assert (ep.provider, ep.dialect, ep.model) == ("azure", dialect, "voice-prod")
    assert ep.audio_format is AudioFormat.PCMU
    assert load_settings().rollover_after_s == 25 * 60  # Azure sessions end at 30 min


def test_a_gateway_takes_the_key_as_a_query_parameter_and_templated_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ep = endpoint(
        monkeypatch,
        REALTIME_URL="wss://gw.example.com/v1/realtime",
        OPENAI_API_KEY="gw-key",
        OPENAI_MODEL="gpt-realtime-mini",
        REALTIME_KEY_QUERY_PARAM="token",
        REALTIME_HEADERS='{"Session-Id": "{call_sid}", "User-Id": "{from}", '
        '"X-Team": "voice {{support}}"}',
    )
    assert ep.url == "wss://gw.example.com/v1/realtime?model=gpt-realtime-mini&token=gw-key"
    assert "Authorization" not in ep.headers  # the key goes in the URL only
    fields = call_fields("CA1", "AC1", "MZ1", {"From": "+15551230000", "To": "+15559870000"})
    headers = ep.headers_for(fields)
    assert headers["Session-Id"] == "CA1"
    assert headers["User-Id"] == "+15551230000"
    assert headers["X-Team"] == "voice {support}"
    # The template itself is untouched: the next call gets its own values.
    assert ep.headers_for(call_fields("CA2", "", "", {}))["Session-Id"] == "CA2"


def test_realtime_url_is_used_as_given_unless_openai_model_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A gateway may choose its own model, or refuse parameters it does not know.
    ep = endpoint(monkeypatch, REALTIME_URL="wss://gw.example.com/v1/realtime?sig=abc")
    assert ep.url == "wss://gw.example.com/v1/realtime?sig=abc"
    ep = endpoint(monkeypatch, OPENAI_MODEL="gpt-realtime-mini")
    assert ep.url == "wss://gw.example.com/v1/realtime?sig=abc&model=gpt-realtime-mini"


def test_a_callers_from_cannot_inject_header_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = endpoint(
        monkeypatch,
        REALTIME_URL="wss://gw.example.com/v1/realtime",
        REALTIME_HEADERS='{"User-Id": "{from}"}',
    )
    hostile = "sip:a@b\r\nX-Admin: yes" + "x" * 1000
    value = ep.headers_for(call_fields("CA1", "", "", {"From": hostile}))["User-Id"]
    assert "\r" not in value and "\n" not in value
    assert value.startswith("sip:a@b??X-Admin: yes")
    assert len(value) == 256


def test_an_operator_header_replaces_the_providers_own(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = endpoint(
        monkeypatch,
        OPENAI_API_KEY="sk-1",
        REALTIME_URL="wss://gw.example.com/v1/realtime?model=m1",
        REALTIME_HEADERS='{"authorization": "Bearer gateway-key"}',
    )
    headers = ep.headers_for({})
    assert headers == {"authorization": "Bearer gateway-key"}
    assert ep.url == "wss://gw.example.com/v1/realtime?model=m1"  # model given: not added
    assert ep.model == "m1"


@pytest.mark.parametrize(
    "url",
    [
        "wss://my-res.openai.azure.com/openai/realtime?api-version=2025-04-01-preview"
        "&deployment=my-voice",
        "wss://gw.example.com/azure/openai/v1/realtime?model=my-voice",
        "wss://gw.example.com/rt?deployment=my-voice",
    ],
)
def test_azure_behind_realtime_url_keeps_mulaw_whatever_the_deployment_is_called(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    assert endpoint(monkeypatch, REALTIME_URL=url).audio_format is AudioFormat.PCMU


def test_audio_format_follows_the_model_and_can_be_overridden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway = {"REALTIME_URL": "wss://gw.example.com/v1/realtime"}
    assert endpoint(monkeypatch, **gateway).audio_format is AudioFormat.PCMU  # gpt-realtime
    monkeypatch.setenv("OPENAI_MODEL", "open-voice-7b")
    assert endpoint(monkeypatch, **gateway).audio_format is AudioFormat.PCM16
    monkeypatch.setenv("REALTIME_AUDIO_FORMAT", "pcma")
    assert endpoint(monkeypatch, **gateway).audio_format is AudioFormat.PCMA
    # OpenAI itself: every model takes mu-law.
    monkeypatch.delenv("REALTIME_AUDIO_FORMAT")
    monkeypatch.delenv("REALTIME_URL")
    assert endpoint(monkeypatch, OPENAI_API_KEY="sk").audio_format is AudioFormat.PCMU


def test_azure_settings_missing_are_each_named(monkeypatch: pytest.MonkeyPatch) -> None:
    found = problems(
        monkeypatch,
        AZURE_OPENAI_ENDPOINT="https://my-res.openai.azure.com",
        REALTIME_URL="wss://gw.example.com/v1/realtime",
    )
    assert sorted(p.split(":")[0] for p in found) == [
        "AZURE_OPENAI_API_KEY",
        "AZURE_OPENAI_DEPLOYMENT",
        "REALTIME_URL",
    ]


def test_bad_gateway_settings_are_each_named_without_echoing_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = problems(
        monkeypatch,
        OPENAI_API_KEY="sk-1",
        REALTIME_KEY_QUERY_PARAM="to ken",
        REALTIME_HEADERS='{"Session-Id": "{caller}", "Host": "x", "Bad Name": "v", '
        '"X-Key": "secret-header-value {from.__class__}", "X-Quote": "\u2019 {from}", '
        '"X-Ctl": "a\\u0001b", "X-Spec": "{from:>10}", "X-Conv": "{to!r}", "X-Brace": "{"}',
    )
    text = "\n".join(found)
    assert "{caller}" in text and "{call_sid}" in text  # names the field and the known ones
    assert "Host belongs to the WebSocket handshake" in text
    assert "'Bad Name' is not a valid header name" in text
    assert "{from.__class__}" in text
    assert "value of X-Quote must be printable ASCII" in text
    assert "value of X-Ctl must be printable ASCII" in text
    assert "X-Spec may only use plain fields" in text and "X-Conv may only use" in text
    assert "X-Brace has an unmatched brace" in text
    assert "REALTIME_KEY_QUERY_PARAM" in text
    assert "secret-header-value" not in text
    assert all(line.startswith("REALTIME_") for line in found)


def test_headers_that_are_not_json_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    found = problems(monkeypatch, REALTIME_HEADERS="Session-Id: {call_sid}")
    assert len(found) == 1 and found[0].startswith("REALTIME_HEADERS: must be a JSON object")


def test_a_key_query_parameter_without_a_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # The Azure key is not the OpenAI provider's key: nothing would be sent.
    found = problems(
        monkeypatch,
        REALTIME_URL="wss://gw.example.com/rt",
        REALTIME_KEY_QUERY_PARAM="token",
        AZURE_OPENAI_API_KEY="az",
        REALTIME_PROVIDER="openai",
    )
    assert found == ["REALTIME_KEY_QUERY_PARAM: there is no API key to send"]


@pytest.mark.parametrize("present", ["AZURE_OPENAI_DEPLOYMENT", "AZURE_OPENAI_API_KEY"])
def test_azure_settings_without_an_endpoint_never_fall_back_to_the_echo_agent(
    monkeypatch: pytest.MonkeyPatch, present: str
) -> None:
    found = problems(monkeypatch, **{present: "x"})
    assert "AZURE_OPENAI_ENDPOINT: required for Azure OpenAI" in found


def test_blank_choices_are_unset_and_keys_lose_a_trailing_newline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # compose writes VAR= for an unset ${VAR}; `echo key | base64` keeps the newline.
    ep = endpoint(
        monkeypatch,
        OPENAI_API_KEY="sk-abc\n",
        REALTIME_PROVIDER="",
        REALTIME_DIALECT=" ",
        REALTIME_AUDIO_FORMAT="",
    )
    assert ep.headers == {"Authorization": "Bearer sk-abc"}
    assert (ep.provider, ep.dialect, ep.audio_format) == ("openai", Dialect.GA, AudioFormat.PCMU)


def test_no_secret_reaches_a_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = endpoint(
        monkeypatch,
        AZURE_OPENAI_ENDPOINT="https://my-res.openai.azure.com",
        AZURE_OPENAI_API_KEY="az-secret-value",
        AZURE_OPENAI_DEPLOYMENT="d",
        REALTIME_KEY_QUERY_PARAM="token",
        REALTIME_HEADERS='{"X-Gateway-Key": "hdr-secret-value"}',
    )
    assert "token=az-secret-value" in ep.url and "api-key" not in ep.headers
    for text in (repr(ep), ep.safe_url, repr(load_settings()), str(load_settings())):
        assert "az-secret-value" not in text and "hdr-secret-value" not in text


def test_connection_errors_are_logged_without_any_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = endpoint(
        monkeypatch,
        REALTIME_URL="wss://user:pw-secret-value@gw.example.com:8443/rt?token=q-secret-value",
        OPENAI_API_KEY="sk-secret-value",
        REALTIME_HEADERS='{"X-Gateway-Key": "hdr-secret-value"}',
    )
    assert ep.safe_url == "wss://gw.example.com:8443/rt"
    # What websockets says of a header it refuses, and of a failed handshake.
    for error in (
        ValueError("invalid Authorization header: Bearer sk-secret-value"),
        ValueError("invalid X-Gateway-Key header: hdr-secret-value"),
        OSError(f"cannot connect to {ep.url}"),
        ValueError("rejected q-secret-value"),
    ):
        text = _describe(error, ep)
        assert "secret-value" not in text, text


def test_a_profiles_model_replaces_the_configured_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk")
    settings = load_settings()
    ep = endpoint_from_settings(settings, model="gpt-realtime-mini")
    assert ep.url == "wss://api.openai.com/v1/realtime?model=gpt-realtime-mini"
    assert ep.model == "gpt-realtime-mini"
    monkeypatch.setenv("REALTIME_URL", "wss://gw.example.com/rt?model=gpt-realtime&sig=1")
    ep = endpoint_from_settings(load_settings(), model="gpt-realtime-mini")
    assert ep.url == "wss://gw.example.com/rt?sig=1&model=gpt-realtime-mini"


def test_the_local_echo_agent_is_its_own_model_whatever_a_profile_asks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    settings = load_settings()
    agent = "ws://127.0.0.1:8765/v1/realtime"
    for asked in (None, "gpt-realtime-mini"):
        endpoint = endpoint_from_settings(settings, agent, model=asked)
        assert endpoint.model == LOCAL_AGENT_MODEL
        assert endpoint.url == f"{agent}?model={LOCAL_AGENT_MODEL}"
