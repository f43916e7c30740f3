"""Property: the core's truncation point is what a caller heard, whatever the pacing.

The core is driven against the simulator's exact model of Twilio's playback (`Playback`):
each mark echo reaches the core `latency` ms after playback reaches it, and the clear
reaches Twilio `latency` ms after the core sends it. With no delay, the core must truncate
each item at exactly the milliseconds heard (to the ms). With delay, it must never claim
more than was heard (the server would keep words the caller never got) and lag by at most
the round trip. Never more than was sent, for any delta sizes, model stalls, item splits
and barge-in moments.
"""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.actions import Action, ClearAudio, PlayAudio, SendMark, TruncateItem
from bridge.core.events import (
    AudioDelta,
    AudioDone,
    Event,
    ResponseCreated,
    ResponseDone,
    SpeechStarted,
)
from bridge.simulator.playout import Playback
from tests.helpers.core_harness import CallHarness, configured_call, of

delta_plan = st.lists(
    st.tuples(
        st.integers(1, 2400),  # bytes in the delta (up to 300 ms)
        st.one_of(st.just(0.0), st.floats(0, 150), st.floats(300, 900)),  # gap before it, ms
        st.booleans(),  # start a new item with this delta
    ),
    min_size=1,
    max_size=25,
)


class Line:
    """The core wired to a Playback, with time in ms as the Playback counts it."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.echoes_in_flight: list[tuple[float, str]] = []
        # A session that does not cancel answers by itself: the core sends the cancel.
        self.call: CallHarness = configured_call(interrupts_by_itself=False)
        self.twilio = Playback()
        self.sent: dict[str, int] = {}

    def run_until(self, t: float) -> None:
        """Let Twilio play up to `t`; deliver the mark echoes that have arrived by then."""
        while (due := self.twilio.next_event_time()) is not None and due <= t:
            self.echoes_in_flight += [(due + self.latency, n) for n in self.twilio.advance(due)]
            if self.twilio.next_event_time() == due:
                break  # the queue drained with no mark left to reach
        self.twilio.advance(t)
        while self.echoes_in_flight and self.echoes_in_flight[0][0] <= t:
            arrival, name = self.echoes_in_flight.pop(0)
            self.call.echo(name, arrival / 1000)

    def to_twilio(self, actions: list[Action], t: float) -> None:
        """What the core sends Twilio's way reaches the Playback at once."""
        for action in actions:
            if isinstance(action, PlayAudio):
                self.twilio.push_audio(base64.b64decode(action.payload), t)
                echoed = self.twilio.push_mark(action.mark, t)
                self.echoes_in_flight += [(t + self.latency, name) for name in echoed]
            elif isinstance(action, SendMark):
                echoed = self.twilio.push_mark(action.name, t)
                self.echoes_in_flight += [(t + self.latency, name) for name in echoed]
            elif isinstance(action, ClearAudio):
                # The caller hears on until the clear arrives; the echoes it causes are
                # dropped here, as the core ignores them anyway.
                self.twilio.clear(t + self.latency)

    def server(self, event: Event, t: float) -> list[Action]:
        actions = self.call.handle(event, t / 1000)
        self.to_twilio(actions, t)
        return actions


@settings(max_examples=300, deadline=None)
@given(
    plan=delta_plan,
    barge_after=st.one_of(st.floats(0, 400), st.floats(0, 4000)),
    finish=st.booleans(),
    latency=st.one_of(st.just(0.0), st.floats(0.1, 60)),
)
def test_truncation_is_what_the_caller_heard(
    plan: list[tuple[int, float, bool]], barge_after: float, finish: bool, latency: float
) -> None:
    line = Line(latency)
    line.server(ResponseCreated("r1"), 0.0)
    t, item = 0.0, 0
    for size, gap, new_item in plan:
        t += gap
        item += new_item
        line.run_until(t)
        line.server(AudioDelta("r1", f"i{item}", 0, base64.b64encode(bytes(size)).decode()), t)
        line.sent[f"i{item}"] = line.sent.get(f"i{item}", 0) + size
    if finish:
        for i in sorted(line.sent):
            line.server(AudioDone(i), t)
        line.server(ResponseDone("r1", "completed"), t)

    barge_at = t + barge_after
    line.run_until(barge_at)
    actions = line.server(SpeechStarted(), barge_at)
    heard = line.twilio.heard_by_item()

    truncated = {cut.item_id: cut.audio_end_ms for cut in of(TruncateItem, actions)}
    for item_id, sent in line.sent.items():
        heard_ms = heard.get(item_id, 0) / 8
        if item_id in truncated:
            assert truncated[item_id] <= sent // 8, "truncate past the audio sent: rejected"
            assert truncated[item_id] <= heard_ms, ("claims unheard audio", truncated, heard_ms)
            assert truncated[item_id] >= heard_ms - 2 * latency - 1, (truncated, heard_ms)
        else:
            # Left alone only when the caller heard the whole item and it was complete.
            assert finish and heard.get(item_id, 0) == sent, (item_id, heard_ms, sent)
    if not finish:  # the response was still streaming: nothing more of it may play
        assert line.server(AudioDelta("r1", "i0", 0, "AAAA"), barge_at + 1) == []
