"""A caller who goes quiet is checked on, then hung up on, timed from when the answer was
heard (not generated); a slow tool gets a soft filler that stops the instant the model
speaks or the tool returns, and is never the model's audio."""

from __future__ import annotations

import base64

from bridge.core import events as ev
from bridge.core.actions import (
    ClearAudio,
    CreateResponse,
    DisableTurnDetection,
    EndReason,
    HangUp,
    PlayAudio,
    RunTool,
    TruncateItem,
)
from bridge.core.call_config import CallConfig
from bridge.core.filler import AHEAD_S, PIECE_S
from bridge.core.last_words import GOODBYE_LEAD, GOODBYE_PURPOSE
from bridge.core.playback import FILLER_ITEM_PREFIX
from bridge.core.timeline import Moment
from tests.helpers.core_harness import CallHarness, configured_call, kinds, of

CHECK_IN = "Check on the caller."
BYE = "Goodbye, quiet caller."
WEATHER = {"type": "function", "name": "weather", "description": "d", "parameters": {}}
FILLER = bytes(range(256)) * 16  # 4096 bytes, 0.512 s: its bytes say where they are


def idle_call() -> CallHarness:
    return configured_call(
        idle_prompt_s=8.0,
        idle_hangup_s=12.0,
        idle_prompt_instructions=CHECK_IN,
        idle_goodbye_message=BYE,
    )


def ticks(h: CallHarness, start: float, end: float) -> list:
    """The clock, ticking every 0.25 s from `start` to `end` (as the runner's does)."""
    out: list = []
    k = 0
    while start + k * 0.25 <= end + 1e-9:
        out += h.tick(start + k * 0.25)
        k += 1
    return out


def check_ins(actions: list) -> list:
    return [a for a in of(CreateResponse, actions) if a.instructions == CHECK_IN]


def heard_answer(h: CallHarness, response: str, item: str, at: float) -> None:
    """A 100 ms answer, sent at `at`, heard in full 100 ms later."""
    h.response_created(response, at)
    h.delta(response, item, 800, at)
    h.audio_done(response, item, at)
    h.response_done(response, at)
    h.echo(f"{item}:800", at + 0.1)


def test_a_quiet_caller_is_checked_on_then_said_goodbye_to_timed_from_what_was_heard() -> None:
    h = idle_call()
    assert h.tick(30.0) == []  # nothing said yet by anyone: not idle
    h.response_created("r1", 1.0)
    h.delta("r1", "a", 8000, 1.0)  # a 1 s answer, generated at once
    h.audio_done("r1", "a", 1.0)
    h.response_done("r1", 1.0)
    assert ticks(h, 1.0, 9.25) == []  # generated long ago, but being heard until 9.5 s
    h.echo("a:8000", 9.5)  # heard in full at 9.5 s: the clock starts
    assert ticks(h, 9.5, 17.25) == []
    check = h.tick(17.5)
    assert check == [CreateResponse(instructions=CHECK_IN)]
    assert Moment.IDLE_PROMPT in [e.moment for e in h.summary().timeline]
    heard_answer(h, "r2", "b", 18.0)  # "Are you still there?", heard by 18.1 s
    assert ticks(h, 18.25, 30.0) == []
    bye = h.tick(30.25)
    assert bye == [
        DisableTurnDetection(),
        CreateResponse(GOODBYE_LEAD + BYE, purpose=GOODBYE_PURPOSE),
    ]
    h.response_created("g", 30.3, goodbye=True)
    h.delta("g", "c", 800, 30.3)
    h.audio_done("g", "c", 30.3)
    h.response_done("g", 30.3)
    assert h.echo("c:800", 30.4) == [HangUp(EndReason.CALLER_IDLE)]
    assert HangUp(EndReason.CALLER_IDLE).reason.outcome.value == "caller_idle"


def test_a_caller_who_speaks_or_presses_a_key_is_not_idle() -> None:
    h = idle_call()
    heard_answer(h, "r1", "a", 0.0)
    assert ticks(h, 0.25, 5.0) == []
    h.speech_started(5.0)
    assert ticks(h, 5.25, 5.75) == []
    h.speech_stopped(6.0)  # (the session answers by itself: nothing asked)
    assert not check_ins(ticks(h, 6.0, 13.75))  # quiet since 6 s, not since 0.1 s
    assert check_ins(h.tick(14.0))
    h2 = idle_call()
    heard_answer(h2, "r1", "a", 0.0)
    h2.key("1", 5.0)
    assert not check_ins(ticks(h2, 0.25, 14.0))  # keys waiting, then given: not idle


def test_zero_turns_the_check_in_off_and_the_hang_up_comes_on_its_own() -> None:
    h = configured_call(idle_prompt_s=0, idle_hangup_s=5.0, idle_goodbye_message=BYE)
    heard_answer(h, "r1", "a", 0.0)
    assert ticks(h, 0.25, 5.0) == []
    assert DisableTurnDetection() in h.tick(5.25)
    h2 = configured_call(idle_prompt_s=0, idle_hangup_s=0)
    heard_answer(h2, "r1", "a", 0.0)
    assert ticks(h2, 0.25, 600.0) == []


def tool_call(filler_ms: int = 800) -> CallHarness:
    h = configured_call(CallConfig(tools=(WEATHER,), tool_filler_ms=filler_ms, tool_filler=FILLER))
    h.response_created("r1", 0.0)
    actions = h.function_call("call_1", "weather", "{}", "r1", 0.0)
    assert of(RunTool, actions)
    h.response_done("r1", 0.0)
    return h


def filler_bytes(actions: list) -> bytes:
    return b"".join(base64.b64decode(p.payload) for p in of(PlayAudio, actions))


def test_a_slow_tool_gets_a_filler_that_stops_when_it_returns() -> None:
    h = tool_call()
    assert h.tick(0.75) == []  # not yet slow
    started = h.tick(0.85)
    pieces = of(PlayAudio, started)
    assert len(pieces) == round(AHEAD_S / PIECE_S)  # only a little queued ahead
    assert all(p.mark.startswith(FILLER_ITEM_PREFIX) for p in pieces)
    assert filler_bytes(started) == FILLER[: len(filler_bytes(started))]
    # As each piece plays, the next is queued: the sound loops on, where it left off.
    more = h.echo(pieces[0].mark, 1.05)
    assert filler_bytes(more) == FILLER[3200:4096] + FILLER[: 1600 - 896]
    stopped = h.handle(ev.ToolFinished("call_1", "{}"), 1.1)
    assert stopped[0] == ClearAudio()
    assert [e.moment for e in h.summary().timeline].count(Moment.FILLER_STOPPED) == 1


def test_the_filler_stops_the_instant_the_model_speaks_and_is_never_the_models() -> None:
    h = tool_call()
    h.tick(0.9)
    h.response_created("r2", 1.0)  # the model talks while the tool runs
    actions = h.delta("r2", "b", 800, 1.0)
    assert kinds(actions) == ["ClearAudio", "PlayAudio"]
    assert not of(PlayAudio, h.tick(1.2))  # no filler over the model
    # A barge-in cuts the model's item only; the filler is nobody's to truncate.
    cut = h.speech_started(1.05)
    assert of(TruncateItem, cut) == [TruncateItem("b", 0, 50)]
    assert all(line.role != "assistant" or line.text for line in h.summary().transcript)


def test_no_filler_when_it_is_off() -> None:
    h = tool_call(filler_ms=0)
    assert h.tick(5.0) == []


def test_the_clock_is_woken_for_the_filler_only_when_it_would_start() -> None:
    """The runner ticks at `wake_at`: it must not be a moment already past that never
    comes true (a tool running while the model still talks), or the clock would spin."""
    h = tool_call()
    assert h.call.wake_at == 0.8  # the tool began at 0: the filler is due then
    h.response_created("r2", 0.5)
    h.delta("r2", "b", 8000, 0.5)  # the model talks for a second meanwhile
    assert h.call.wake_at is None
    assert not of(PlayAudio, h.tick(0.9))
    h.echo("b:8000", 1.5)
    assert h.call.wake_at == 0.8  # due, and wanted again: the next tick starts it
    assert of(PlayAudio, h.tick(1.5))
    assert h.call.wake_at is None  # playing: nothing to wake for
