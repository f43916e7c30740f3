"""What was said on a call, as text: what carries it into a fresh Realtime session, and
where each line is on the call's clock (so on its recording)."""

from __future__ import annotations

from dataclasses import replace

from bridge.core.events import AssistantTranscribed
from bridge.core.timeline import Moment, speech_edge
from bridge.core.transcript import Transcript
from tests.helpers.core_harness import configured_call


def test_replayed_assistant_turns_are_cut_to_what_the_caller_heard() -> None:
    transcript = Transcript()
    transcript.assistant_transcript("a1", "We are open from nine to five every weekday.")
    transcript.assistant_cut("a1", heard_ms=500, sent_ms=1000)
    transcript.assistant_spoke("a2")  # no transcript: nothing to replay
    assert transcript.replay() == [("assistant", "We are open from nine…")]


def test_each_line_is_placed_where_the_caller_began_to_say_it_or_to_hear_it() -> None:
    h = configured_call(keypad_pause_s=2.0)  # the session's audio starts with the stream
    # The VAD is sure at 1.2 s that speech began 700 ms into its audio (padding included).
    h.speech_started(1.2, audio_start_ms=700)
    h.speech_stopped(2.0, audio_end_ms=1900)
    h.caller_turn("u1", "When do you open?", 2.05)
    h.response_created("r1", 2.06)
    h.delta("r1", "a1", 8000, 2.1)  # 1 s of answer, played from 2.1 (nothing queued)
    h.echo(h.played_marks[0], 3.1)
    h.delta("r1", "a2", 800, 3.15)  # a second item: 100 ms, its mark back at 3.3
    h.echo(h.played_marks[1], 3.3)
    h.handle(AssistantTranscribed("a1", "At nine."), 3.3)
    h.handle(AssistantTranscribed("a2", "Anything else?"), 3.3)
    h.key("4", 5.0)
    h.key("#", 5.4)

    assert [(line.role, line.at) for line in h.summary().transcript] == [
        ("caller", 0.7),
        ("assistant", 2.1),
        ("assistant", 3.2),
        ("caller", 5.0),  # keys: from the first one
    ]


def test_a_line_whose_start_is_unknown_says_so_rather_than_guess() -> None:
    h = configured_call()
    h.caller_turn("u1", "Hello?", 1.0)  # committed with no speech_started before it
    h.handle(AssistantTranscribed("a1", "Hi."), 1.1)  # a transcript, its audio never heard
    assert [(line.text, line.at) for line in h.summary().transcript] == [
        ("Hello?", None),
        ("Hi.", None),
    ]


def test_the_timeline_says_where_speech_began_and_ended_not_only_when_it_was_told() -> None:
    h = configured_call()
    h.speech_started(1.2, audio_start_ms=700)
    h.speech_stopped(2.0, audio_end_ms=1900)  # 500 ms of silence waited for
    started, stopped = [
        e
        for e in h.summary().timeline
        if e.moment in (Moment.SPEECH_STARTED, Moment.SPEECH_STOPPED)
    ]
    assert (started.at, speech_edge(started)) == (1.2, 0.7)
    assert (stopped.at, speech_edge(stopped)) == (2.0, 1.4)
    # An entry without the detail (a record from before it) is placed at its news.
    assert speech_edge(replace(started, detail="")) == 1.2
