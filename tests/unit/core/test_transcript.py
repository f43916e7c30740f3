"""What was said on a call, as text: what carries it into a fresh Realtime session."""

from __future__ import annotations

from bridge.core.transcript import Transcript


def test_replayed_assistant_turns_are_cut_to_what_the_caller_heard() -> None:
    transcript = Transcript()
    transcript.assistant_transcript("a1", "We are open from nine to five every weekday.")
    transcript.assistant_cut("a1", heard_ms=500, sent_ms=1000)
    transcript.assistant_spoke("a2")  # no transcript: nothing to replay
    assert transcript.replay() == [("assistant", "We are open from nine…")]
