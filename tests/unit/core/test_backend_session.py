"""The Realtime session in use and the ones after it: a lost session is replaced within the
reconnect budget, with the conversation restored and a cut answer resumed; a session near
the service's length limit is rolled over at a quiet moment; a session that never answers
counts as lost at the setup deadline. The budget is a bound: at its end the call ends."""

from __future__ import annotations

import pytest

from bridge.core.actions import (
    AddMessage,
    AppendAudio,
    ClearAudio,
    ConfigureSession,
    CreateResponse,
    EndReason,
    EndStream,
    ReconnectBackend,
)
from bridge.core.call import RESUME_INSTRUCTIONS
from bridge.core.events import (
    AssistantTranscribed,
    BackendClosed,
    Event,
    SessionCreated,
    SessionUpdated,
)
from bridge.core.summary import Truncation
from bridge.transcode import AudioFormat
from tests.helpers.core_harness import (
    CallHarness,
    Recorder,
    Stream,
    configured_call,
    kinds,
    start,
    truncations,
)

RESUME = CreateResponse(instructions=RESUME_INSTRUCTIONS)


def test_a_session_lost_mid_answer_is_reopened_with_the_conversation_and_asked_to_go_on() -> None:
    h = configured_call()
    h.caller_turn("u1", "What are your opening hours?", 1.0)
    h.response_created("r1", 1.5)
    h.delta("r1", "a1", 8000, 1.5)  # 1 s of answer queued at Twilio
    # What Twilio has plays on through the reconnect: no clear, no gap.
    assert h.backend_closed("connection lost", 2.0) == [
        ReconnectBackend(0.0, "connection lost", 10.0)
    ]
    # The caller keeps talking during the gap: kept for the new session.
    assert h.media("/w==", 2.05) == []

    restored = h.backend_opened(2.1)
    assert restored == [
        ConfigureSession(h.call.config.session, AudioFormat.PCMU),
        AddMessage("user", "What are your opening hours?"),
        RESUME,  # the answer was still being generated: carry on
        AppendAudio("/w=="),
    ]
    # No audio plays until the new session confirms its format.
    h.response_created("r2", 2.15)
    assert h.delta("r2", "a2", 800, 2.15) == []
    h.session_updated(now=2.2)
    # A barge-in still stops the old answer and records what was heard of it, but cannot
    # truncate it on a server that never knew it.
    actions = h.speech_started(2.3)
    assert isinstance(actions[0], ClearAudio)
    assert truncations(actions) == []
    [barge_in] = h.summary().barge_ins
    assert barge_in.truncations == (Truncation("a1", 800, 1000.0),)


def test_a_completed_answer_plays_out_through_a_reconnect_and_is_not_resumed() -> None:
    h = configured_call()
    h.response_created("r1", 1.0)
    h.delta("r1", "a1", 8000, 1.0)
    h.audio_done("r1", "a1", 1.0)
    h.handle(AssistantTranscribed("a1", "We are open from nine to five."), 1.0)
    h.response_done("r1", 1.0)
    h.backend_closed("connection lost", 1.5)
    assert h.backend_opened(1.6) == [
        ConfigureSession(h.call.config.session, AudioFormat.PCMU),
        AddMessage("assistant", "We are open from nine to five."),
    ]
    h.session_updated(now=1.7)
    assert h.echo("a1:8000", 2.0) == []  # its marks still count
    assert h.speech_started(2.5) == []  # heard in full: nothing to stop


def test_reconnects_back_off_and_give_up_with_the_apology_after_the_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = configured_call(reconnect_budget_s=10)
    attempts = h.backend_closed("connection lost", 0.0)
    now = 0.0
    while True:
        now += 1.0
        actions = h.backend_closed("refused", now)
        if not actions:
            break
        attempts += actions
    assert all(isinstance(a, ReconnectBackend) for a in attempts)
    reconnects = [a for a in attempts if isinstance(a, ReconnectBackend)]
    assert [a.delay_s for a in reconnects[:5]] == [0.0, 0.25, 0.5, 1.0, 2.0]
    # Each attempt may take what is left of the budget, and none starts that could not:
    # at 8 s the next (2 s of backoff) would begin only as the budget ends.
    assert [a.give_up_after_s for a in reconnects[-2:]] == [4.0, 3.0]
    assert now == 8.0
    assert h.tick(9.99) == []
    caplog.clear()
    with caplog.at_level("ERROR", "bridge.call"):
        [end] = h.tick(10.0)  # the budget is a bound: the call ends on it
    # The record and the one log line say why the last attempt failed.
    assert end == EndStream(EndReason.BACKEND_LOST, "refused")
    assert "could not be restored" in end.description
    assert [r.getMessage() for r in caplog.records] == [
        "Realtime session could not be restored within 10 s: refused"
    ]
    assert h.summary().reconnects == len(reconnects)


def test_a_backend_that_never_worked_ends_the_call_at_once() -> None:
    stream = Stream()
    stream.handle(start(), 0.0)
    assert stream.handle(BackendClosed("refused"), 0.1) == [
        EndStream(EndReason.BACKEND_ENDED, "refused")
    ]


def test_the_greeting_is_not_repeated_in_a_restored_session() -> None:
    h = CallHarness(greeting="Hello!")
    assert kinds(h.session_updated()) == ["CreateResponse"]
    h.backend_closed("connection lost", 1.0)
    h.backend_opened(1.2)
    assert h.session_updated(now=1.3) == []


def test_sessions_roll_over_at_a_quiet_moment_before_the_service_limit() -> None:
    h = configured_call(rollover_after_s=100, rollover_grace_s=60)
    assert h.tick(99.0) == []
    h.response_created("r1", 99.5)
    h.delta("r1", "a", 8000, 99.5)
    assert h.tick(100.0) == []  # mid-answer: wait for a pause
    h.audio_done("r1", "a", 99.6)
    h.response_done("r1", 99.6)
    h.echo("a:8000", 100.5)
    assert h.tick(100.75) == [ReconnectBackend(0.0, "session rollover", 10.0)]
    assert isinstance(h.backend_opened(101.0)[0], ConfigureSession)


def test_a_rollover_is_not_a_reconnect_unless_its_replacement_fails() -> None:
    recorder = Recorder()
    h = configured_call(rollover_after_s=100, reconnect_budget_s=10, observer=recorder)
    assert kinds(h.tick(100.0)) == ["ReconnectBackend"]
    h.backend_opened(100.2)
    h.session_updated(now=100.3)
    assert h.summary().reconnects == 0  # routine: nothing went wrong
    assert recorder.events == [("rolled_over", 0)]
    # The next one's replacement cannot connect: from then on it is a loss like any other,
    # bound by the budget counted from when the healthy session was left.
    assert kinds(h.tick(200.3)) == ["ReconnectBackend"]
    [retry] = h.backend_closed("refused", 200.5)
    assert retry == ReconnectBackend(0.25, "refused", pytest.approx(9.8))
    assert h.summary().reconnects == 1
    assert recorder.events == [("rolled_over", 0), ("rolled_over", 0), ("reconnected", 0)]
    assert h.tick(210.3) == [EndStream(EndReason.BACKEND_LOST, "refused")]


def test_a_rollover_whose_new_session_never_opens_ends_the_call_saying_so() -> None:
    h = configured_call(rollover_after_s=100, reconnect_budget_s=10)
    h.backend_closed("connection lost", 50.0)  # an earlier loss, long since restored
    h.backend_opened(50.1)
    h.session_updated(now=50.2)
    h.tick(56.0)
    assert kinds(h.tick(151.0)) == ["ReconnectBackend"]  # the adapter is opening a socket
    assert h.tick(160.9) == []
    [end] = h.tick(161.0)
    assert end == EndStream(EndReason.BACKEND_LOST, "no new session opened in time")


def test_a_session_that_is_never_quiet_still_rolls_over_after_the_grace() -> None:
    h = configured_call(rollover_after_s=100, rollover_grace_s=60)
    h.response_created("r1", 150.0)
    h.delta("r1", "a", 80000, 150.0)  # 10 s of answer playing
    assert h.tick(159.9) == []
    [rollover] = h.tick(160.0)
    assert isinstance(rollover, ReconnectBackend)  # the answer plays on meanwhile
    assert h.backend_opened(160.2)[-1] == RESUME


def test_no_rollover_while_the_caller_is_mid_sentence() -> None:
    h = configured_call(rollover_after_s=100)
    h.speech_started(99.0)
    assert h.tick(100.0) == []
    h.speech_stopped(101.0)
    assert isinstance(h.tick(101.25)[-1], ReconnectBackend)


def test_a_backend_that_keeps_dropping_uses_up_one_budget_with_backoff() -> None:
    h = configured_call(reconnect_budget_s=10)
    delays: list[float] = []
    now, actions = 0.0, h.backend_closed("lost", 0.0)
    for _ in range(100):  # bounded: a budget that never runs out fails, not hangs
        if not actions or not isinstance(actions[-1], ReconnectBackend):
            break
        delays.append(actions[-1].delay_s)
        now += 1.0
        h.backend_opened(now)
        h.session_updated(now=now + 0.1)  # configured, then lost again at once
        h.tick(now + 0.2)
        actions = h.backend_closed("lost again", now + 0.3)
    assert delays[:5] == [0.0, 0.25, 0.5, 1.0, 2.0]
    assert actions == []  # no attempt fits what is left: the budget's end ends the call
    assert now < 10 and h.tick(9.99) == []
    assert h.tick(10.0)[-1] == EndStream(EndReason.BACKEND_LOST, "lost again")


def test_a_restored_session_that_drops_before_it_is_configured_is_retried() -> None:
    h = configured_call()
    h.backend_closed("lost", 1.0)
    h.backend_opened(1.1)
    [again] = h.backend_closed("lost before session.updated", 1.2)
    assert isinstance(again, ReconnectBackend)


def test_a_healthy_restored_session_gets_a_fresh_budget() -> None:
    h = configured_call(reconnect_budget_s=10)
    h.backend_closed("lost", 1.0)
    h.backend_opened(1.1)
    h.session_updated(now=1.2)
    h.tick(20.0)  # healthy for long enough
    assert h.backend_closed("lost much later", 30.0) == [
        ReconnectBackend(0.0, "lost much later", 10.0)
    ]


def test_a_question_asked_just_before_a_drop_is_answered_by_the_new_session() -> None:
    h = configured_call()
    h.caller_turn("u1", "Are you open on Sunday?", 1.0)
    h.backend_closed("lost", 1.1)  # before response.created
    assert h.backend_opened(1.2)[-1] == RESUME


def test_no_rollover_between_a_question_and_its_answer() -> None:
    h = configured_call(rollover_after_s=100)
    h.caller_turn("u1", "Are you open on Sunday?", 100.0)
    assert h.tick(100.5) == []


def test_a_cut_answer_is_still_resumed_when_the_first_restore_drops_too() -> None:
    h = configured_call()
    h.response_created("r1", 1.0)
    h.delta("r1", "a", 800, 1.0)
    h.backend_closed("lost", 1.05)
    assert h.backend_opened(1.1)[-1] == RESUME
    h.backend_closed("lost before session.updated", 1.15)
    assert h.backend_opened(1.4)[-1] == RESUME
    h.session_updated(now=1.5)
    h.tick(10.0)  # the restored session held: a later loss starts afresh
    [reconnect] = h.backend_closed("lost once the resume had landed", 20.0)
    assert isinstance(reconnect, ReconnectBackend)
    assert kinds(h.backend_opened(20.1)) == ["ConfigureSession"]


# --- sessions that never answer, and the reconnect budget as a bound ---------------------------


@pytest.mark.parametrize(
    ("events", "missing"),
    [([], "session.created"), ([SessionCreated()], "session.updated")],
)
def test_a_session_that_stays_silent_is_replaced_at_the_setup_deadline(
    events: list[Event], missing: str, caplog: pytest.LogCaptureFixture
) -> None:
    h = CallHarness(session_setup_timeout_s=5.0)  # its socket opened at 0 s
    for event in events:
        h.handle(event, 0.1)
    assert h.tick(4.9) == []
    with caplog.at_level("WARNING", "bridge.call"):
        [replace] = h.tick(5.0)
    assert isinstance(replace, ReconnectBackend)
    assert missing in replace.reason
    assert [r.getMessage() for r in caplog.records] == [
        f"Realtime session gave no {missing} within 5 s of connecting: replacing it"
    ]


def test_a_reconnected_session_that_stays_silent_ends_the_call_within_the_budget() -> None:
    h = configured_call(reconnect_budget_s=4.0, session_setup_timeout_s=3.0)
    [reconnect] = h.backend_closed("connection lost", 10.0)
    assert isinstance(reconnect, ReconnectBackend) and reconnect.give_up_after_s == 4.0
    h.backend_opened(10.1)  # opens, then never says a word
    [replace] = h.tick(13.1)
    assert isinstance(replace, ReconnectBackend)
    assert replace.give_up_after_s == pytest.approx(0.9)
    h.backend_opened(13.2)  # silent again
    assert h.tick(13.9) == []
    [end] = h.tick(14.0)  # the budget, to the tick: not one backoff step later
    assert end == EndStream(EndReason.BACKEND_LOST, "no session.created within 3 s of connecting")


def test_the_budget_ends_the_call_while_a_reconnect_is_still_opening() -> None:
    h = configured_call(reconnect_budget_s=4.0)
    h.backend_closed("connection lost", 10.0)  # the adapter is opening a socket
    assert h.tick(13.99) == []
    assert h.tick(14.0) == [EndStream(EndReason.BACKEND_LOST, "connection lost")]
    assert h.backend_closed("timed out", 14.0) == []  # ended once


def test_a_session_configured_in_time_is_never_replaced() -> None:
    h = CallHarness(session_setup_timeout_s=5.0)
    h.handle(SessionCreated(), 0.1)
    h.handle(SessionUpdated(interrupts_by_itself=False), 4.0)
    assert h.tick(60.0) == []
