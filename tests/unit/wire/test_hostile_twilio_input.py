"""What a call does with whatever arrives on Twilio's side: frames decoded by the Twilio
codec, driven through the call core as the call runner drives it (`Stream`), the core's
messages for the Realtime session rendered by the Realtime codec.

1. Any sequence of frames (valid, lenient, malformed, for another stream, a second start,
   audio before start) with the Realtime socket opening at any moment: one Realtime session
   at most, nothing for Realtime before the first valid start, the caller's (base64) audio
   reaches Realtime untouched and in order (the audio that arrived while connecting after
   the `session.update`, bounded, newest kept), nothing after a stop, exactly one ending once
   the stream stops, and a malformed frame does nothing at all.
2. A hostile payload cannot add fields to the `input_audio_buffer.append` it travels in
   (audio that is not base64 is dropped; what is forwarded is exactly `type` and `audio`).
3. Frames faster than the message limit, whatever they are, end the call once, as flooded;
   at the limit they never do.

Bugs these found (a RecursionError from deeply nested start fields, stops without a string
streamSid ending calls) are fixed; their minimal reproductions stay at the end.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.actions import (
    Action,
    AddMessage,
    AppendAudio,
    CancelResponse,
    ClearAudio,
    ConfigureSession,
    CreateResponse,
    Ending,
    EndReason,
    EndStream,
    OpenBackend,
    PlayAudio,
    SendMark,
    ToBackend,
    TruncateItem,
)
from bridge.core.call_config import CallConfig, StreamLimits
from bridge.core.events import BackendOpened
from bridge.realtime.dialects import Dialect
from bridge.wire.realtime import RealtimeCodec, codec_for
from bridge.wire.twilio import decode
from tests.helpers.core_harness import CALL, STREAM, Stream, audio
from tests.helpers.twilio_messages import (
    BAD_VALUES,
    BASE64_ALPHABET,
    BREAKABLE,
    CONNECTED,
    ENCODINGS,
    EVENT_NAMES,
    ODD_STREAM,
    OTHER_STREAM,
    STOPS_WITHOUT_A_STREAM,
    almost_base64,
    audio_payloads,
    deep_start,
    digits,
    dtmf_dict,
    encode,
    hostile_payloads,
    json_values,
    lenient,
    mark_dict,
    mark_names,
    media_dict,
    mutate,
    parameters,
    payloads,
    sids,
    start_dict,
    stop_dict,
)
from tests.helpers.twilio_messages import is_base64_audio as is_base64

APPEND = "input_audio_buffer.append"
TO_TWILIO = PlayAudio | ClearAudio | SendMark
stream_sids = st.sampled_from([STREAM, STREAM, STREAM, OTHER_STREAM, ODD_STREAM])
dialects = st.sampled_from(list(Dialect))


def rendered(codec: RealtimeCodec, action: ToBackend) -> str:
    """The action as the call runner writes it to the Realtime socket."""
    if isinstance(action, AppendAudio):
        return codec.append_audio(action.payload)
    return codec.encode(action)


def fields_of(text: str) -> list[tuple[str, Any]]:
    """The key/value pairs of a message to Realtime, duplicates included, in order."""
    pairs: list[tuple[str, Any]] = json.loads(text, object_pairs_hook=list)
    return pairs


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


@st.composite
def malformed_frames(draw: st.DrawFn) -> str | bytes:
    """A frame the bridge cannot act on, from plain noise to one broken required field."""
    base = draw(
        st.one_of(
            st.builds(start_dict, stream_sids),
            st.builds(media_dict, stream_sids, payloads),
            st.builds(mark_dict, stream_sids, mark_names),
            st.builds(dtmf_dict, stream_sids, digits),
        )
    )
    how = draw(ENCODINGS)
    kind = draw(st.sampled_from(["field", "noise", "truncated", "utf8", "not-object", "event"]))
    if kind == "noise":
        return draw(st.text().filter(lambda t: not _is_json_object(t)))
    if kind == "truncated":
        return json.dumps(base)[: -draw(st.integers(1, 10))]
    if kind == "utf8":
        raw = json.dumps(base, ensure_ascii=False).encode()
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + raw[at:]
    if kind == "not-object":
        return encode(draw(json_values.filter(lambda v: not isinstance(v, dict))), how)
    if kind == "event":
        if draw(st.booleans()):
            del base["event"]
        else:
            base["event"] = draw(json_values.filter(lambda v: v not in EVENT_NAMES))
        return encode(base, how)
    path, breaks_as, deletable = draw(st.sampled_from(BREAKABLE[base["event"]]))
    if deletable and draw(st.booleans()):
        mutate(base, path, "delete", None)
    else:
        mutate(base, path, "retype", draw(BAD_VALUES[breaks_as][0]))
    return encode(base, how)


@dataclass
class Step:
    kind: str  # a Twilio event name, "malformed", "echo", "speak" or "connect"
    data: str | bytes = ""
    sid: str = ""
    payload: str = ""
    call_sid: str = ""
    params: dict[str, str] = field(default_factory=dict)
    index: int = 0  # echo: which of the marks the bridge sent; speak: delta size


STEP_KINDS = [
    *["media"] * 12,
    *["start", "mark", "mark", "echo", "echo", "dtmf", "stop", "connected", "speak", "speak"],
    *["malformed"] * 4,
]


@st.composite
def twilio_steps(draw: st.DrawFn, kind: str | None = None) -> Step:
    kind = kind or draw(st.sampled_from(STEP_KINDS))
    how = draw(ENCODINGS)
    sid = draw(stream_sids)
    if kind == "malformed":
        return Step(kind, draw(malformed_frames()))
    if kind == "echo":
        return Step(kind, sid=sid, index=draw(st.integers(0, 50)))
    if kind == "speak":
        return Step(kind, index=draw(st.integers(1, 400)))
    if kind == "start":
        call_sid, params = draw(sids("CA")), draw(parameters)
        message = draw(lenient(start_dict(sid, call_sid, params=params)))
        return Step(kind, encode(message, how), sid=sid, call_sid=call_sid, params=params)
    if kind == "media":
        payload = draw(payloads)
        message = draw(lenient(media_dict(sid, payload)))
        return Step(kind, encode(message, how), sid=sid, payload=payload)
    message = {
        "mark": lambda: mark_dict(sid, draw(mark_names)),
        "dtmf": lambda: dtmf_dict(sid, draw(digits)),
        "stop": lambda: stop_dict(sid),
        "connected": lambda: dict(CONNECTED),
    }[kind]()
    return Step(kind, encode(draw(lenient(message)), how), sid=sid)


@st.composite
def call_scripts(draw: st.DrawFn) -> list[Step]:
    """Frames around a start (usually), with the Realtime socket opening at some point."""
    # Written so that Hypothesis' simplest choices (0, False) make a started, connected call.
    steps = draw(st.lists(twilio_steps(), max_size=4))  # anything may come before the start
    if draw(st.integers(0, 9)) != 9:
        steps.append(draw(twilio_steps("start")))
    after = len(steps)
    steps += draw(st.lists(twilio_steps(), min_size=8, max_size=30))
    if draw(st.integers(0, 9)) != 9:
        # Usually after the start, possibly with audio waiting; sometimes before it.
        at = after + draw(st.integers(-after, len(steps) - after))
        steps.insert(at, Step("connect"))
    return steps


SESSION_UPDATED = json.dumps({"type": "session.updated", "session": {}})
DELTA = {Dialect.GA: "response.output_audio.delta", Dialect.BETA: "response.audio.delta"}


def model_audio(dialect: Dialect, n: int, size: int) -> str:
    event = {"type": DELTA[dialect], "response_id": "r1", "item_id": f"i{n}"}
    return json.dumps({**event, "output_index": 0, "content_index": 0, "delta": audio(size)})


def from_backend(stream: Stream, codec: RealtimeCodec, text: str, now: float) -> list[Action]:
    event = codec.decode(text)
    assert event is not None, text
    return stream.handle(event, now)


# --- 1. any sequence of frames ------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(steps=call_scripts(), max_frames=st.sampled_from([1, 2, 3, 5, 250]), dialect=dialects)
def test_any_sequence_of_twilio_frames_keeps_the_call_consistent(
    steps: list[Step], max_frames: int, dialect: Dialect
) -> None:
    stream = Stream(CallConfig(max_frames_before_connect=max_frames))
    codec = codec_for(dialect)
    # The model: what the caller's side has done so far, and what Realtime must get.
    phase, started = "awaiting start", None
    waiting: deque[str] = deque(maxlen=max_frames)
    expected_audio: list[str] = []
    to_realtime: list[str] = []  # as written to the Realtime socket
    appended: list[str] = []  # the AppendAudio actions' payloads
    marks_sent: list[str] = []
    opened = ended = 0

    for i, step in enumerate(steps):
        now = i * 0.02
        if step.kind == "connect":
            actions = stream.handle(BackendOpened(), now)
            if phase == "connecting":
                assert isinstance(actions[0], ConfigureSession), actions
                assert json.loads(codec.encode(actions[0]))["type"] == "session.update"
                actions += from_backend(stream, codec, SESSION_UPDATED, now)
        elif step.kind == "speak":
            actions = from_backend(stream, codec, model_audio(dialect, i, step.index), now)
            marks_sent += [a.mark for a in actions if isinstance(a, PlayAudio)]
        else:
            data = step.data
            if step.kind == "echo":
                name = marks_sent[step.index % len(marks_sent)] if marks_sent else "never-sent"
                data = json.dumps(mark_dict(step.sid, name))
            actions = stream.handle(decode(data), now)
            if step.kind != "dtmf":  # a key stops the assistant (clear), like speech
                assert not any(isinstance(a, TO_TWILIO) for a in actions), "echoed back"

        if phase == "ended":
            assert actions == [], f"acted after the stop: {actions}"
        if step.kind == "malformed":
            assert actions == [], f"a malformed frame did something: {step.data!r} -> {actions}"
        if started is None:
            assert not any(isinstance(a, ToBackend) for a in actions), "before start"

        opens = [a for a in actions if isinstance(a, OpenBackend)]
        ends = [a for a in actions if isinstance(a, Ending)]
        opened, ended = opened + len(opens), ended + len(ends)
        assert opened <= 1, "a second Realtime session"
        assert ended <= 1, "a second ending"
        backend = [a for a in actions if isinstance(a, ToBackend)]
        to_realtime += [rendered(codec, a) for a in backend]
        appended += [a.payload for a in backend if isinstance(a, AppendAudio)]

        # What this step must have done, by the model.
        if step.kind == "start" and phase == "awaiting start":
            assert actions == [OpenBackend()]
            summary = stream.call.summary()
            assert (summary.stream_sid, summary.call_sid) == (step.sid, step.call_sid)
            assert summary.parameters == step.params
            phase, started = "connecting", step.sid
            continue
        assert opens == [], f"{step.kind} opened a Realtime session"
        # A stop for the stream ends the call; so does one before any start (the core's rule).
        if step.kind == "stop" and phase != "ended" and started in (None, step.sid):
            assert actions == [EndStream(EndReason.CALLER_HUNG_UP)], actions
            phase = "ended"
            continue
        assert ends == [], f"{step.kind} ended the call: {step.data!r}"
        if step.kind == "dtmf" and actions:
            # Keys for this stream, once bridging: the assistant is stopped, and on # they
            # go to the model as a message with a response request. Never audio.
            assert phase == "bridging" and step.sid == started, actions
            kinds = {type(a) for a in backend}
            assert kinds <= {TruncateItem, CancelResponse, AddMessage, CreateResponse}, kinds
            names = {json.loads(rendered(codec, a))["type"] for a in backend}
            assert names <= {
                "conversation.item.truncate",
                "response.cancel",
                "conversation.item.create",
                "response.create",
            }, names
            to_realtime = [t for t in to_realtime if json.loads(t)["type"] not in names]
            continue
        caller_audio = step.kind == "media" and step.sid == started and is_base64(step.payload)
        if step.kind == "connect" and phase == "connecting":
            expected_audio += waiting
            waiting.clear()
            phase = "bridging"
        elif caller_audio and phase == "bridging":
            assert actions == [AppendAudio(step.payload)], actions
            expected_audio.append(step.payload)
        elif caller_audio and phase == "connecting":
            assert actions == []
            waiting.append(step.payload)  # past the bound, the oldest frame goes
        elif step.kind == "speak":
            assert phase == "bridging" or actions == [], actions
        else:
            assert actions == [], f"{step.kind} did something: {actions}"

    assert ended == (phase == "ended")
    assert appended == expected_audio
    if to_realtime:
        assert json.loads(to_realtime[0])["type"] == "session.update"
    forwarded = []
    for text in to_realtime[1:]:
        fields = fields_of(text)
        assert [k for k, _ in fields] == ["type", "audio"], fields
        assert fields[0][1] == APPEND
        forwarded.append(fields[1][1])
    assert forwarded == expected_audio


# --- 2. hostile payloads -------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(
    payload=st.one_of(
        hostile_payloads,
        st.text(alphabet=st.characters(max_codepoint=0x7F)),
        st.text(alphabet=[*sorted(BASE64_ALPHABET), "=", '"', "\\", "}"]),
        audio_payloads,
        almost_base64,
    ),
    sid=st.sampled_from([STREAM, ODD_STREAM]),
    how=ENCODINGS,
    before_connect=st.booleans(),
    dialect=dialects,
)
def test_a_hostile_payload_cannot_add_fields_to_the_realtime_append(
    payload: str, sid: str, how: str, before_connect: bool, dialect: Dialect
) -> None:
    stream, codec = Stream(), codec_for(dialect)
    stream.handle(decode(encode(start_dict(sid), how)), 0.0)
    if not before_connect:
        stream.handle(BackendOpened(), 0.01)
    actions = stream.handle(decode(encode(media_dict(sid, payload), how)), 0.02)
    if before_connect:
        assert actions == []
        configure, *actions = stream.handle(BackendOpened(), 0.03)
        assert isinstance(configure, ConfigureSession)
    if not is_base64(payload):
        assert actions == [], "audio that is not base64 must not reach the AI"
        return
    assert actions == [AppendAudio(payload)]
    [append] = actions
    assert isinstance(append, AppendAudio)
    # Parsed keeping duplicate keys: an injected "type" or "audio" would show up here.
    assert fields_of(rendered(codec, append)) == [("type", APPEND), ("audio", payload)]
    assert fields_of(codec.encode(append)) == [("type", APPEND), ("audio", payload)]


# --- 3. floods -----------------------------------------------------------------------------------

# Anything but a stop (which ends the call by itself): the frames a flood is made of.
flood_frames = st.one_of(
    st.builds(lambda sid, p: json.dumps(media_dict(sid, p)), stream_sids, payloads),
    st.builds(lambda sid, n: json.dumps(mark_dict(sid, n)), stream_sids, mark_names),
    st.builds(lambda sid, d: json.dumps(dtmf_dict(sid, d)), stream_sids, digits),
    st.builds(lambda sid: json.dumps(start_dict(sid)), stream_sids),
    st.just(json.dumps(CONNECTED)),
    malformed_frames(),
)


@settings(max_examples=100, deadline=None)
@given(
    rate=st.sampled_from([1, 2, 5, 10]),
    frames=st.lists(flood_frames, min_size=21, max_size=40),
    connect_at=st.one_of(st.none(), st.integers(0, 40)),
)
def test_frames_faster_than_the_limit_end_the_call_once_as_flooded(
    rate: int, frames: list[str | bytes], connect_at: int | None
) -> None:
    """All at one instant: the limit's burst (two seconds' worth) passes, the next frame
    ends the call (before or after its start, malformed or not), and nothing comes after."""
    stream = Stream(CallConfig(limits=StreamLimits(max_messages_per_s=rate)))
    results = []
    for i, frame in enumerate(frames):
        if i == connect_at:
            stream.handle(BackendOpened(), 0.0)
        results.append(stream.handle(decode(frame), 0.0))
    burst = 2 * rate
    ends = [(i, a) for i, actions in enumerate(results) for a in actions if isinstance(a, Ending)]
    assert ends == [(burst, EndStream(EndReason.FLOODED))]
    assert results[burst] == [EndStream(EndReason.FLOODED)]
    assert all(actions == [] for actions in results[burst + 1 :])


@settings(max_examples=100, deadline=None)
@given(rate=st.sampled_from([1, 2, 5, 10]), frames=st.lists(flood_frames, max_size=60))
def test_frames_at_the_limit_never_end_the_call(rate: int, frames: list[str | bytes]) -> None:
    stream = Stream(CallConfig(limits=StreamLimits(max_messages_per_s=rate)))
    stream.handle(BackendOpened(), 0.0)  # (ignored until a start: then, one opens)
    for i, frame in enumerate(frames):
        actions = stream.handle(decode(frame), i / rate)
        assert not any(isinstance(a, Ending) for a in actions), (i, frame, actions)


# --- bugs found ----------------------------------------------------------------------------------


def test_a_deeply_nested_start_does_not_break_the_call() -> None:
    stream = Stream()
    assert stream.handle(decode(deep_start("customParameters")), 0.0) == []
    assert stream.handle(decode(json.dumps(start_dict(STREAM))), 0.1) == [OpenBackend()]
    summary = stream.call.summary()
    assert (summary.call_sid, summary.parameters) == (CALL, {"CallSid": CALL})


@pytest.mark.parametrize("stop", STOPS_WITHOUT_A_STREAM)
def test_a_stop_without_a_stream_sid_does_not_end_the_call(stop: str) -> None:
    assert Stream().handle(decode(stop), 0.0) == []


@pytest.mark.parametrize(("sid", "bad"), [("None", None), ("123", 123), ("True", True)])
def test_a_stop_with_a_non_string_stream_sid_does_not_end_the_call(sid: str, bad: Any) -> None:
    stream = Stream()
    assert stream.handle(decode(json.dumps(start_dict(sid))), 0.0) == [OpenBackend()]
    assert stream.handle(decode(json.dumps({"event": "stop", "streamSid": bad})), 0.1) == []
    # ... while the stream's own stop still does.
    stop = json.dumps(stop_dict(sid))
    assert stream.handle(decode(stop), 0.2) == [EndStream(EndReason.CALLER_HUNG_UP)]
