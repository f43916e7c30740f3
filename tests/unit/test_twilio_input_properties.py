"""Properties of how the bridge treats whatever arrives on Twilio's side of a call.

1. The parser: any text, bytes or JSON (valid Twilio messages with fields removed, retyped or
   buried in garbage included) parses into one of its event types or is rejected with
   `TwilioProtocolError`, never anything else; a well-formed message (PROTOCOLS.md §1.2)
   parses back into exactly the fields it carried.
2. The call core, fed any sequence of frames (valid, lenient, malformed, for another stream,
   a second start, audio before start) with the Realtime socket opening at any moment:
   one Realtime session at most, nothing sent to Realtime before the first valid start, the
   caller's (base64) audio reaches Realtime untouched and in order (the audio that arrived while
   connecting after the `session.update`, bounded, newest kept), nothing after a stop,
   exactly one `EndCall` once the stream stops, and a malformed frame does nothing at all.
3. A hostile payload cannot add fields to the `input_audio_buffer.append` it travels in
   (audio that is not base64 is dropped; what is forwarded is exactly `type` and `audio`).

Bugs these found (a RecursionError from deeply nested start fields, stops without a string
streamSid ending calls) are fixed; their minimal reproductions stay at the end.
"""

from __future__ import annotations

import base64
import copy
import json
import string
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.legacy.call_api import (
    Call,
    CallConfig,
    EndCall,
    OpenRealtime,
    SendToRealtime,
    SendToTwilio,
)
from tests.legacy.twilio_stream import (
    Connected,
    Dtmf,
    Mark,
    Media,
    Start,
    Stop,
    TwilioEvent,
    TwilioProtocolError,
    parse_twilio_message,
)
from tests.unit.test_call_core import CALL, STREAM, start_message

OTHER_STREAM = "MZ00000000000000000000000000000002"
ODD_STREAM = 'MZ"quoted\\sid}é😀'  # legal for the parser; must be escaped wherever it goes
EVENT_NAMES = ("connected", "start", "media", "mark", "dtmf", "stop")
EVENT_TYPES = (Connected, Start, Media, Mark, Dtmf, Stop)
APPEND = "input_audio_buffer.append"
BASE64_ALPHABET = frozenset(string.ascii_letters + string.digits + "+/")


def is_base64_audio(payload: str) -> bool:
    """What the bridge forwards (README): non-empty standard base64, padded to 4s."""
    data = payload.rstrip("=")
    return (
        len(payload) % 4 == 0
        and len(data) > 0
        and len(payload) - len(data) <= 2
        and set(data) <= BASE64_ALPHABET
    )


# --- JSON building blocks -------------------------------------------------------------------

# orjson reads integers up to about 1e308 (as floats past 64 bits); these all stay valid JSON.
json_ints = st.integers(-(2**63), 2**64)
json_floats = st.floats(allow_nan=False, allow_infinity=False)
json_scalars = st.one_of(st.none(), st.booleans(), json_ints, json_floats, st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def huge_strings(low: int = 50_000, high: int = 300_000) -> st.SearchStrategy[str]:
    """Long runs of one piece: plain, multibyte, or characters JSON must escape."""
    pieces = st.sampled_from(["A", "é", '"', "\\", "\x00", "😀", '"}'])
    return st.builds(lambda piece, n: piece * n, pieces, st.integers(low, high))


garbage = st.one_of(json_values, json_values, json_values, huge_strings())  # huge now and then
small_garbage = st.one_of(json_scalars, st.lists(json_scalars, max_size=2))

not_a_string = st.one_of(
    st.none(),
    st.booleans(),
    json_ints,
    json_floats,
    st.lists(json_values, max_size=3),
    st.dictionaries(st.text(max_size=5), json_values, max_size=3),
)
not_a_nonempty_string = st.one_of(not_a_string, st.just(""))
not_an_object = st.one_of(
    st.none(),
    st.booleans(),
    json_ints,
    json_floats,
    st.text(max_size=10),
    st.lists(json_values, max_size=3),
)
# `customParameters` and `mediaFormat` fall back to {} when falsy, so only truthy values break.
truthy_non_object = st.one_of(
    st.just(True),
    json_ints.filter(bool),
    json_floats.filter(bool),
    st.text(min_size=1, max_size=10),
    st.lists(json_values, min_size=1, max_size=3),
)
not_an_integer = st.one_of(
    st.none(),
    st.booleans(),
    json_floats,
    st.text(max_size=6),
    st.lists(json_values, max_size=3),
    st.dictionaries(st.text(max_size=5), json_values, max_size=3),
)

hex32 = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)


def sids(prefix: str) -> st.SearchStrategy[str]:
    return st.one_of(hex32.map(lambda h: prefix + h), st.text(min_size=1, max_size=40))


audio_payloads = st.binary(min_size=1, max_size=240).map(lambda b: base64.b64encode(b).decode())
almost_base64 = st.one_of(
    st.just(""),
    audio_payloads.map(lambda p: p[:-1]),  # not a multiple of 4
    audio_payloads.map(lambda p: p + "="),
    audio_payloads.map(lambda p: p + "\n"),  # MIME line break
    audio_payloads.map(lambda p: p.replace("A", "-")),  # URL-safe alphabet
    audio_payloads.map(lambda p: "=" + p[1:]),
)
hostile_payloads = st.one_of(
    st.text(),
    st.lists(
        st.sampled_from(
            [
                *['"', "\\", "}", "{", "]", ",", ":", '",', '"type":"response.create"'],
                *['"audio":"x"', "\x00", "\x1f", "\n", "\u2028", "\ufeff", "é", "😀", "AAAA"],
                "\\u0022",
            ]
        ),
        max_size=12,
    ).map("".join),
)
payloads = st.one_of(audio_payloads, almost_base64, hostile_payloads)
mark_names = st.one_of(
    st.text(min_size=1),
    st.sampled_from(['"', '\\"', 'item:"1"', "a\nb", "😀:12", '}"{', "truncated:x:0"]),
)
digits = st.sampled_from("0123456789*#")
parameters = st.dictionaries(st.text(max_size=20), st.text(max_size=60), max_size=4)

# How a frame travels: a text frame (ASCII-escaped or raw UTF-8) or a binary one.
ENCODINGS = st.sampled_from(["ascii", "unicode", "bytes"])


def encode(message: Any, how: str) -> str | bytes:
    if how == "ascii":
        return json.dumps(message)
    text = json.dumps(message, ensure_ascii=False)
    return text.encode() if how == "bytes" else text


# --- §1.2 messages ----------------------------------------------------------------------------


def start_dict(
    stream: str,
    call_sid: str = CALL,
    account: str = "AC1",
    params: dict[str, str] | None = None,
    encoding: str = "audio/x-mulaw",
    rate: int = 8000,
) -> dict[str, Any]:
    return {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": stream,
        "start": {
            "accountSid": account,
            "streamSid": stream,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "customParameters": params if params is not None else {"CallSid": call_sid},
            "mediaFormat": {"encoding": encoding, "sampleRate": rate, "channels": 1},
        },
    }


def media_dict(stream: str, payload: str, seq: int = 4) -> dict[str, Any]:
    return {
        "event": "media",
        "sequenceNumber": str(seq),
        "streamSid": stream,
        "media": {"track": "inbound", "chunk": str(seq - 2), "timestamp": "40", "payload": payload},
    }


def mark_dict(stream: str, name: str, seq: int = 6) -> dict[str, Any]:
    return {
        "event": "mark",
        "sequenceNumber": str(seq),
        "streamSid": stream,
        "mark": {"name": name},
    }


def dtmf_dict(stream: str, digit: str, seq: int = 5) -> dict[str, Any]:
    return {
        "event": "dtmf",
        "sequenceNumber": str(seq),
        "streamSid": stream,
        "dtmf": {"track": "inbound_track", "digit": digit},
    }


def stop_dict(stream: str, seq: int = 7) -> dict[str, Any]:
    return {
        "event": "stop",
        "sequenceNumber": str(seq),
        "streamSid": stream,
        "stop": {"accountSid": "AC1", "callSid": CALL},
    }


CONNECTED = {"event": "connected", "protocol": "Call", "version": "1.0.0"}


@st.composite
def well_formed(draw: st.DrawFn) -> tuple[dict[str, Any], TwilioEvent]:
    """A message shaped as in §1.2, with the event the parser must make of it."""
    kind = draw(st.sampled_from(EVENT_NAMES))
    seq = draw(st.integers(1, 10**9))
    stream = draw(sids("MZ"))
    if kind == "connected":
        return dict(CONNECTED), Connected()
    if kind == "start":
        call_sid, account = draw(sids("CA")), draw(sids("AC"))
        params = draw(parameters)
        encoding = draw(st.sampled_from(["audio/x-mulaw", "audio/x-l16", "é\"'"]))
        rate = draw(st.sampled_from([8000, 16000, 24000, 44100]))
        message = start_dict(stream, call_sid, account, params, encoding, rate)
        message["sequenceNumber"] = str(seq)
        return message, Start(stream, call_sid, account, params, encoding, rate)
    if kind == "media":
        payload = draw(payloads)
        return media_dict(stream, payload, seq), Media(stream, payload)
    if kind == "mark":
        name = draw(mark_names)
        return mark_dict(stream, name, seq), Mark(stream, name)
    if kind == "dtmf":
        digit = draw(digits)
        return dtmf_dict(stream, digit, seq), Dtmf(stream, digit)
    return stop_dict(stream, seq), Stop(stream)


def parsed_or_rejected(data: str | bytes) -> TwilioEvent | None:
    """The parser's contract: a well-typed event, or TwilioProtocolError (anything else fails)."""
    try:
        event = parse_twilio_message(data)
    except TwilioProtocolError:
        return None
    assert isinstance(event, EVENT_TYPES), event
    if isinstance(event, Start):
        assert all(isinstance(v, str) for v in (event.stream_sid, event.call_sid))
        assert isinstance(event.account_sid, str) and isinstance(event.encoding, str)
        assert type(event.sample_rate) is int
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in event.parameters.items())
    elif not isinstance(event, Connected):
        assert isinstance(event.stream_sid, str)
    if isinstance(event, Media):
        assert isinstance(event.payload, str)
    if isinstance(event, Mark):
        assert isinstance(event.name, str) and event.name
    if isinstance(event, Dtmf):
        assert isinstance(event.digit, str) and event.digit
    return event


# --- 1. the parser --------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(text=st.text())
def test_any_text_parses_or_is_rejected(text: str) -> None:
    parsed_or_rejected(text)


@settings(max_examples=300, deadline=None)
@given(data=st.binary())
def test_any_bytes_parse_or_are_rejected(data: bytes) -> None:
    parsed_or_rejected(data)


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(json_values, st.floats()), how=ENCODINGS)
def test_any_json_value_parses_or_is_rejected(value: Any, how: str) -> None:
    parsed_or_rejected(encode(value, how))  # NaN/Infinity included: not JSON to orjson


@settings(max_examples=200, deadline=None)
@given(
    event=st.one_of(st.sampled_from(EVENT_NAMES), garbage),
    fields=st.dictionaries(
        st.sampled_from(["streamSid", "sequenceNumber", *EVENT_NAMES, "protocol"]),
        st.one_of(
            garbage,
            st.dictionaries(
                st.sampled_from(
                    [
                        *["payload", "name", "digit", "streamSid", "callSid", "accountSid"],
                        *["customParameters", "mediaFormat", "sampleRate", "encoding", "track"],
                    ]
                ),
                garbage,
                max_size=5,
            ),
        ),
        max_size=4,
    ),
    how=ENCODINGS,
)
def test_event_shaped_garbage_parses_or_is_rejected(
    event: Any, fields: dict[str, Any], how: str
) -> None:
    parsed_or_rejected(encode({"event": event, **fields}, how))


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key and index path inside a JSON value."""
    found: list[tuple] = []
    if isinstance(value, dict | list):
        for key, inner in value.items() if isinstance(value, dict) else enumerate(value):
            found.append((*prefix, key))
            found += paths(inner, (*prefix, key))
    return found


def mutate(message: dict[str, Any], path: tuple, op: str, replacement: Any) -> None:
    *parents, last = path
    container: Any = message
    for key in parents:
        container = container[key]
    value = container[last]
    if op == "delete":
        del container[last]
    elif op == "retype":
        container[last] = replacement
    elif op == "wrap":  # e.g. `media` as a list holding the object
        container[last] = [value]
    elif op == "stringify":  # e.g. `media` as a JSON string of the object
        container[last] = json.dumps(value)
    elif op == "numberify":  # e.g. `sequenceNumber` or `payload` as a number
        container[last] = (
            int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else 0
        )


@settings(max_examples=400, deadline=None)
@given(sample=well_formed(), how=ENCODINGS, data=st.data())
def test_mutated_twilio_messages_parse_or_are_rejected(
    sample: tuple[dict[str, Any], TwilioEvent], how: str, data: st.DataObject
) -> None:
    message = copy.deepcopy(sample[0])
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        where = paths(message)
        if not where:
            break
        path = data.draw(st.sampled_from(where), label="path")
        op = data.draw(st.sampled_from(["delete", "retype", "wrap", "stringify", "numberify"]))
        mutate(message, path, op, data.draw(garbage, label="replacement"))
    parsed_or_rejected(encode(message, how))


@settings(max_examples=500, deadline=None)
@given(sample=well_formed(), how=ENCODINGS)
def test_well_formed_messages_parse_into_exactly_their_fields(
    sample: tuple[dict[str, Any], TwilioEvent], how: str
) -> None:
    message, expected = sample
    assert parse_twilio_message(encode(message, how)) == expected


@settings(max_examples=10, deadline=None)
@given(payload=huge_strings(1_000_000, 2_000_000), how=ENCODINGS)
def test_huge_payloads_pass_through_the_parser_whole(payload: str, how: str) -> None:
    assert parse_twilio_message(encode(media_dict(STREAM, payload), how)) == Media(STREAM, payload)


# --- 2. the call core ----------------------------------------------------------------------

stream_sids = st.sampled_from([STREAM, STREAM, STREAM, OTHER_STREAM, ODD_STREAM])


@st.composite
def lenient(draw: st.DrawFn, message: dict[str, Any]) -> dict[str, Any]:
    """The message with fields the bridge does not rely on removed, retyped or added."""
    message = copy.deepcopy(message)
    section = message["event"]
    tweaks: list[tuple[str, tuple]] = [
        ("delete", ("sequenceNumber",)),
        ("numberify", ("sequenceNumber",)),
        ("extra", ()),
    ]
    tweaks += {
        "start": [
            ("delete", ("start", "tracks")),
            ("retype", ("start", "mediaFormat", "channels")),
            ("delete", ("start", "mediaFormat", "encoding")),
            ("delete", ("start", "accountSid")),
            ("extra", ("start",)),
        ],
        "media": [
            ("delete", ("media", "track")),
            ("numberify", ("media", "chunk")),
            ("retype", ("media", "timestamp")),
            ("extra", ("media",)),
        ],
        "mark": [("extra", ("mark",))],
        "dtmf": [("delete", ("dtmf", "track")), ("retype", ("dtmf", "track"))],
        "stop": [("delete", ("stop",)), ("retype", ("stop",))],
        "connected": [("delete", ("protocol",)), ("retype", ("version",))],
    }[section]
    for op, path in draw(st.lists(st.sampled_from(tweaks), max_size=2)):
        value = draw(small_garbage)
        if op == "extra":
            target: Any = message
            for key in path:
                target = target[key]
            if isinstance(target, dict):
                target[draw(st.text(max_size=10).filter(lambda k, t=target: k not in t))] = value
        elif path in paths(message):
            mutate(message, path, op, value)
    return message


# What breaks each kind of field: Hypothesis' values, and a fixed few that are tried every run.
BAD_VALUES: dict[str, tuple[st.SearchStrategy[Any], list[Any]]] = {
    "text": (not_a_nonempty_string, [None, True, False, 0, 1, 1.5, "", [], ["MZ1"], {"a": "b"}]),
    "payload": (not_a_string, [None, True, 0, 1.5, [], ["AAAA"], {"payload": "AAAA"}]),
    "object": (not_an_object, [None, True, 0, 1.5, "", "x", [], [{"name": "m"}]]),
    "optional object": (truthy_non_object, [True, 1, 1.5, "x", '{"a":"b"}', [["a", "b"]]]),
    "sample rate": (not_an_integer, [None, True, False, 8000.0, "8000", [8000], {}]),
}
# The fields the bridge relies on, how each breaks, and whether leaving it out breaks it too.
# A stop whose streamSid is missing or not a string: see the regression tests at the end.
BREAKABLE: dict[str, list[tuple[tuple, str, bool]]] = {
    "media": [
        (("streamSid",), "text", True),
        (("media",), "object", True),
        (("media", "payload"), "payload", True),
    ],
    "mark": [
        (("streamSid",), "text", True),
        (("mark",), "object", True),
        (("mark", "name"), "text", True),
    ],
    "dtmf": [
        (("streamSid",), "text", True),
        (("dtmf",), "object", True),
        (("dtmf", "digit"), "text", True),
    ],
    "start": [
        (("start",), "object", True),
        (("start", "streamSid"), "text", True),
        (("start", "callSid"), "text", True),
        # Both fall back to {} when falsy or missing, so only truthy non-objects break them.
        (("start", "customParameters"), "optional object", False),
        (("start", "mediaFormat"), "optional object", False),
        (("start", "mediaFormat", "sampleRate"), "sample rate", False),
    ],
}
VALID = {
    "media": media_dict(STREAM, "AAAA"),
    "mark": mark_dict(STREAM, "m"),
    "dtmf": dtmf_dict(STREAM, "1"),
    "start": start_dict(STREAM),
}


@pytest.mark.parametrize(
    ("kind", "path", "breaks_as", "deletable"),
    [(kind, *entry) for kind, entries in BREAKABLE.items() for entry in entries],
    ids=lambda v: ".".join(v) if isinstance(v, tuple) else None,
)
def test_a_message_with_a_broken_required_field_is_rejected(
    kind: str, path: tuple, breaks_as: str, deletable: bool
) -> None:
    variants = [("retype", bad) for bad in BAD_VALUES[breaks_as][1]]
    for op, bad in [*variants, *([("delete", None)] if deletable else [])]:
        message = copy.deepcopy(VALID[kind])
        mutate(message, path, op, bad)
        for how in ("ascii", "bytes"):
            with pytest.raises(TwilioProtocolError):
                parse_twilio_message(encode(message, how))


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(orjson.loads(text), dict)
    except orjson.JSONDecodeError:
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


def model_audio(n: int, size: int) -> str:
    delta = base64.b64encode(b"\xff" * size).decode()
    event = {"type": "response.output_audio.delta", "response_id": "r1", "item_id": f"i{n}"}
    return json.dumps({**event, "output_index": 0, "content_index": 0, "delta": delta})


def append_fields(text: str) -> list[tuple[str, Any]]:
    """The key/value pairs of a message to Realtime, duplicates included, in order."""
    return json.loads(text, object_pairs_hook=list)


@settings(max_examples=200, deadline=None)
@given(steps=call_scripts(), max_frames=st.sampled_from([1, 2, 3, 5, 250]))
def test_any_sequence_of_twilio_frames_keeps_the_call_consistent(
    steps: list[Step], max_frames: int
) -> None:
    call = Call(CallConfig(max_frames_before_connect=max_frames))
    # The model: what the caller's side has done so far, and what Realtime must get.
    phase, stream = "awaiting start", None
    waiting: deque[str] = deque(maxlen=max_frames)
    expected_audio: list[str] = []
    to_realtime: list[str] = []
    marks_sent: list[str] = []
    opened = ended = 0

    for i, step in enumerate(steps):
        now = i * 0.02
        if step.kind == "connect":
            actions = call.realtime_connected(now)
            if phase == "connecting":
                assert isinstance(actions[0], SendToRealtime)
                assert json.loads(actions[0].text)["type"] == "session.update"
                actions += call.receive_realtime(SESSION_UPDATED, now)
        elif step.kind == "speak":
            actions = call.receive_realtime(model_audio(i, step.index), now)
            for action in actions:
                message = json.loads(action.text)
                if message["event"] == "mark":
                    marks_sent.append(message["mark"]["name"])
        else:
            data = step.data
            if step.kind == "echo":
                name = marks_sent[step.index % len(marks_sent)] if marks_sent else "never-sent"
                data = json.dumps(mark_dict(step.sid, name))
            actions = call.receive_twilio(data, now)
            if step.kind != "dtmf":  # a key stops the assistant (clear), like speech
                assert not any(isinstance(a, SendToTwilio) for a in actions), "echoed back"

        if phase == "ended":
            assert actions == [], f"sent after the stop: {actions}"
        if step.kind == "malformed":
            assert actions == [], f"a malformed frame did something: {step.data!r} -> {actions}"
        if stream is None:
            assert not any(isinstance(a, SendToRealtime) for a in actions), "before start"

        opens = [a for a in actions if isinstance(a, OpenRealtime)]
        ends = [a for a in actions if isinstance(a, EndCall)]
        opened, ended = opened + len(opens), ended + len(ends)
        assert opened <= 1, "a second Realtime session"
        assert ended <= 1, "a second EndCall"
        to_realtime += [a.text for a in actions if isinstance(a, SendToRealtime)]

        # What this step must have done, by the model.
        if step.kind == "start" and phase == "awaiting start":
            assert actions == [OpenRealtime(step.call_sid, step.params)]
            phase, stream = "connecting", step.sid
            continue
        assert opens == [], f"{step.kind} opened a Realtime session"
        # A stop for the stream ends the call; so does one before any start (the core's rule).
        if step.kind == "stop" and phase != "ended" and stream in (None, step.sid):
            assert len(actions) == 1 and len(ends) == 1, actions
            phase = "ended"
            continue
        assert ends == [], f"{step.kind} ended the call: {step.data!r}"
        if step.kind == "dtmf" and actions:
            # Keys for this stream, once bridging: the assistant is stopped, and on # they
            # go to the model as a message with a response request. Never audio.
            assert phase == "bridging" and step.sid == stream, actions
            kinds = {json.loads(a.text)["type"] for a in actions if isinstance(a, SendToRealtime)}
            assert kinds <= {
                "conversation.item.truncate",
                "response.cancel",
                "conversation.item.create",
                "response.create",
            }, kinds
            to_realtime = [t for t in to_realtime if json.loads(t)["type"] not in kinds]
            continue
        audio = step.kind == "media" and step.sid == stream and is_base64_audio(step.payload)
        if step.kind == "connect" and phase == "connecting":
            expected_audio += waiting
            waiting.clear()
            phase = "bridging"
        elif audio and phase == "bridging":
            assert len(actions) == 1 and isinstance(actions[0], SendToRealtime), actions
            expected_audio.append(step.payload)
        elif audio and phase == "connecting":
            assert actions == []
            waiting.append(step.payload)  # past the bound, the oldest frame goes
        elif step.kind == "speak":
            assert phase == "bridging" or actions == [], actions
        else:
            assert actions == [], f"{step.kind} did something: {actions}"

    assert ended == (phase == "ended")
    if to_realtime:
        assert json.loads(to_realtime[0])["type"] == "session.update"
    audio = []
    for text in to_realtime[1:]:
        fields = append_fields(text)
        assert [k for k, _ in fields] == ["type", "audio"], fields
        assert fields[0][1] == APPEND
        audio.append(fields[1][1])
    assert audio == expected_audio


# --- 3. hostile payloads ---------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(
    payload=st.one_of(
        hostile_payloads,
        st.text(alphabet=st.characters(max_codepoint=0x7F)),
        st.text(alphabet=[*sorted(BASE64_ALPHABET), "=", '"', "\\", "}"]),
        audio_payloads,
        almost_base64,
    ),
    stream=st.sampled_from([STREAM, ODD_STREAM]),
    how=ENCODINGS,
    before_connect=st.booleans(),
)
def test_a_hostile_payload_cannot_add_fields_to_the_realtime_append(
    payload: str, stream: str, how: str, before_connect: bool
) -> None:
    call = Call()
    call.receive_twilio(encode(start_dict(stream), how), 0.0)
    if not before_connect:
        call.realtime_connected(0.01)
    actions = call.receive_twilio(encode(media_dict(stream, payload), how), 0.02)
    if before_connect:
        assert actions == []
        actions = call.realtime_connected(0.03)[1:]  # after the session.update
    if not is_base64_audio(payload):
        assert actions == [], "audio that is not base64 must not reach the AI"
        return
    [append] = actions
    assert isinstance(append, SendToRealtime)
    # Parsed keeping duplicate keys: an injected "type" or "audio" would show up here.
    assert append_fields(append.text) == [("type", APPEND), ("audio", payload)]


# --- bugs found -------------------------------------------------------------------------------

# 1010 levels: past Python's recursion limit (1000) for str(), under orjson's 1024 for loads.
DEEP = "[" * 1010 + "]" * 1010


def deep_start(where: str) -> str:
    message = start_dict(STREAM)
    if where == "customParameters":
        message["start"]["customParameters"] = {"From": "DEEP"}
    elif where == "accountSid":
        message["start"]["accountSid"] = "DEEP"
    else:
        message["start"]["mediaFormat"]["encoding"] = "DEEP"
    return json.dumps(message).replace('"DEEP"', DEEP)


@pytest.mark.parametrize("where", ["customParameters", "accountSid", "encoding"])
def test_a_deeply_nested_start_field_is_rejected_not_a_crash(where: str) -> None:
    parsed_or_rejected(deep_start(where))


def test_a_deeply_nested_start_does_not_break_the_call() -> None:
    call = Call()
    assert call.receive_twilio(deep_start("customParameters"), 0.0) == []
    assert call.receive_twilio(start_message(), 0.1) == [OpenRealtime(CALL, {"CallSid": CALL})]


@pytest.mark.parametrize(
    "stop",
    [
        '{"event":"stop"}',
        '{"event":"stop","streamSid":null}',
        '{"event":"stop","streamSid":""}',
        '{"event":"stop","streamSid":["MZ1"]}',
    ],
)
def test_a_stop_without_a_stream_sid_does_not_end_the_call(stop: str) -> None:
    call = Call()
    assert call.receive_twilio(stop, 0.0) == []


@pytest.mark.parametrize(("stream", "sid"), [("None", None), ("123", 123), ("True", True)])
def test_a_stop_with_a_non_string_stream_sid_does_not_end_the_call(stream: str, sid: Any) -> None:
    call = Call()
    call.receive_twilio(json.dumps(start_dict(stream)), 0.0)
    assert call.receive_twilio(json.dumps({"event": "stop", "streamSid": sid}), 0.1) == []
