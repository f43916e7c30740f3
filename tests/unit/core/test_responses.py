"""The response sequencer: one response asked for at a time, and an owed one asked for
once, whichever way it goes out."""

from __future__ import annotations

from bridge.core.responses import ResponseSequencer


def test_an_owed_response_asked_for_directly_is_not_asked_for_again() -> None:
    """A response owed while another was active, then asked for when the caller's turn
    ended (INTERRUPTIONS=confirm waits for that), is that owed one: once its answer is
    done, nothing more is owed."""
    responses = ResponseSequencer()
    responses.created("r1")
    assert responses.want() is False  # r1 is in the way: owed
    responses.done("r1")
    assert responses.want() is True  # asked for now
    responses.created("r2")
    responses.done("r2")
    assert responses.take_owed() is False
