"""A Media Streams socket before its call: what it takes to start one, and what closes it."""

from __future__ import annotations

from bridge.core.actions import EndReason, EndStream, OpenBackend
from bridge.core.call_config import CallConfig, StreamLimits
from bridge.core.events import TICK, TwilioMessageInvalid
from tests.helpers.core_harness import Stream, start


def test_a_socket_that_never_sends_start_is_closed() -> None:
    stream = Stream(CallConfig(limits=StreamLimits(start_timeout_s=10)), opened_at=100.0)
    assert stream.handle(TICK, 100.0) == []
    assert stream.handle(TICK, 109.9) == []
    assert stream.handle(TICK, 110.0) == [EndStream(EndReason.NO_START)]


def test_a_start_with_a_broken_media_format_is_dropped_not_fatal() -> None:
    stream = Stream()
    # What the codec makes of a start whose sampleRate is not an integer.
    broken = TwilioMessageInvalid("start.mediaFormat.sampleRate must be an integer")
    assert stream.handle(broken, 0.0) == []
    assert stream.handle(start(), 0.0) == [OpenBackend()]
