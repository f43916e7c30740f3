"""The last thing the caller hears: at the time limit, or as the server shuts down, the
assistant says goodbye with nothing able to interrupt it, and the call is hung up once the
goodbye was heard (or at its deadline), never with the apology."""

from __future__ import annotations

from bridge.core.actions import (
    CancelResponse,
    ClearAudio,
    CreateResponse,
    DisableTurnDetection,
    EndReason,
    HangUp,
    SendMark,
    TruncateItem,
)
from bridge.core.events import ShutdownRequested
from bridge.core.last_words import GOODBYE_LEAD, GOODBYE_PURPOSE
from bridge.core.phases import Phase
from tests.helpers.core_harness import CallHarness, configured_call, truncations


def test_at_the_time_limit_the_assistant_says_goodbye_then_hangs_up_once_heard() -> None:
    h = configured_call(max_duration_s=60, time_limit_message="Time is up. Bye!")
    assert h.tick(59.9) == []
    actions = h.tick(60.0)
    # Turn detection off first: nothing the caller says can cut the goodbye.
    assert actions == [
        DisableTurnDetection(),
        CreateResponse(GOODBYE_LEAD + "Time is up. Bye!", purpose=GOODBYE_PURPOSE),
    ]
    # the caller's words no longer reach the model
    assert h.media("/w==", 60.1) == []

    h.response_created("bye", 60.2, goodbye=True)
    h.delta("bye", "g", 800, 60.2)
    h.audio_done("bye", "g", 60.2)
    assert h.response_done("bye", 60.3) == []  # generated, not yet heard
    assert h.echo("g:800", 60.3) == [HangUp(EndReason.TIME_LIMIT)]
    assert HangUp(EndReason.TIME_LIMIT).description == "time limit reached"
    assert h.tick(100.0) == []


def test_a_time_limit_mid_answer_stops_it_and_speaks_after_the_cancel_lands() -> None:
    # The session cancels an answer by itself only when the caller talks: here the bridge must.
    h = configured_call(max_duration_s=60)
    h.response_created("r1", 59.0)
    h.delta("r1", "a", 8000, 59.0)  # 1 s of answer, all of it played by the limit
    actions = h.tick(59.5 + 0.5)
    assert actions == [
        ClearAudio(),
        CancelResponse(),
        TruncateItem("a", 0, 1000),
        SendMark("truncated:a:1000"),
        DisableTurnDetection(),
    ]
    assert truncations(actions) == [("a", 1000)]
    assert h.summary().barge_ins == ()  # not the caller's doing
    assert h.delta("r1", "a", 800, 60.1) == []
    assert h.response_done("r1", 60.2, status="cancelled") == [
        CreateResponse(GOODBYE_LEAD + h.call.config.time_limit_message, purpose=GOODBYE_PURPOSE)
    ]


def test_a_goodbye_that_is_not_heard_in_time_still_hangs_up() -> None:
    h = configured_call(max_duration_s=60, goodbye_timeout_s=15)
    h.tick(60.0)
    assert h.tick(74.9) == []
    assert h.tick(75.0) == [HangUp(EndReason.TIME_LIMIT)]


def test_a_goodbye_before_the_session_is_configured_hangs_up_at_once() -> None:
    h = CallHarness()
    assert h.handle(ShutdownRequested("Bye"), 1.0) == [HangUp(EndReason.SHUTDOWN)]
    assert HangUp(EndReason.SHUTDOWN).description == "the server is shutting down"


def test_a_backend_closing_during_the_goodbye_never_plays_the_apology() -> None:
    h = configured_call(max_duration_s=60)
    h.tick(60.0)
    h.response_created("bye", 60.1, goodbye=True)
    h.delta("bye", "g", 800, 60.1)
    h.audio_done("bye", "g", 60.1)
    h.response_done("bye", 60.2)
    assert h.backend_closed("closed", 60.3) == []  # the goodbye is still playing
    assert h.echo("g:800", 60.4) == [HangUp(EndReason.TIME_LIMIT)]

    early = configured_call(max_duration_s=60)
    early.tick(60.0)
    # Not generated: it cannot be said, but the call is hung up all the same.
    assert early.backend_closed("closed", 60.1) == [HangUp(EndReason.TIME_LIMIT)]


def test_a_goodbye_is_only_the_response_that_asked_for_it() -> None:
    h = configured_call(max_duration_s=60)
    h.tick(60.0)
    h.response_created("vad", 60.05)  # a server-VAD answer already on its way
    assert h.response_done("vad", 60.1) == []
    assert h.call.phase is Phase.BRIDGING
