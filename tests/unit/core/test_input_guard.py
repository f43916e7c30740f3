"""What Twilio's side may send: valid base64 audio, no faster than real time (with slack for
bursts), and no flood of messages; the burst of mark echoes a clear causes is not one."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bridge.core.actions import AppendAudio, ClearAudio, EndReason, EndStream
from tests.helpers.core_harness import CallHarness, configured_call, of

FRAME = base64.b64encode(b"\xff" * 160).decode()  # 20 ms of caller audio


@pytest.mark.parametrize(
    "payload", ["", "abc", "ab=c", "a===", "////=///", "é" * 4, 'AAA"', "AA AA", "/w==/w=="]
)
def test_caller_audio_that_is_not_base64_is_dropped(payload: str) -> None:
    h = CallHarness()
    assert h.media(payload, 0.0) == []
    assert h.media("/w==", 0.0) == [AppendAudio("/w==")]  # the call goes on


# Standard base64 padded to 4s: the definition, as a regex (too slow for 50 frames a second).
BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


@settings(max_examples=2000, deadline=None)
@given(payload=st.text(alphabet="AZaz09+/=-_ \n\x00é٠Ａ", max_size=12))
@example(payload="AAA=")
@example(payload="AA==")
@example(payload="A===")
@example(payload="====")
@example(payload="A=A=")
@example(payload="AA=A")
def test_caller_audio_is_forwarded_exactly_when_it_is_padded_standard_base64(
    payload: str,
) -> None:
    is_base64 = bool(payload) and len(payload) % 4 == 0 and BASE64.fullmatch(payload) is not None
    h = CallHarness()
    assert h.media(payload, 0.0) == ([AppendAudio(payload)] if is_base64 else [])


def test_caller_audio_at_real_time_pace_is_never_dropped() -> None:
    h = CallHarness()
    sent = [h.media(FRAME, k * 0.020) for k in range(3000)]  # 60 s
    assert all(actions == [AppendAudio(FRAME)] for actions in sent)


def test_caller_audio_far_faster_than_real_time_is_capped() -> None:
    h = CallHarness()
    # 10 s of audio within one second: the 3 s burst plus 1.5 s of sustained rate pass.
    forwarded = sum(len(h.media(FRAME, k * 0.002)) for k in range(500))
    assert 3.0 * 50 <= forwarded <= 4.6 * 50


def test_a_message_flood_ends_the_call_once() -> None:
    h = CallHarness()
    results = [h.echo("x", 1.0) for _ in range(1000)]
    ends = [a for actions in results for a in of(EndStream, actions)]
    assert ends == [EndStream(EndReason.FLOODED)]
    assert "flood" in ends[0].description


def test_the_burst_of_echoes_after_a_clear_is_not_a_flood() -> None:
    h = configured_call()
    h.response_created("r1", 0.0)
    for _ in range(450):
        h.delta("r1", "a", 800, 0.0)  # a 45 s answer queued at Twilio
    actions = h.speech_started(0.5)
    assert isinstance(actions[0], ClearAudio)
    echoes = [h.echo(mark, 0.51) for mark in [*h.played_marks, "truncated:a:500"]]
    assert all(e == [] for e in echoes)
    assert h.media("/w==", 0.52) == [AppendAudio("/w==")]
