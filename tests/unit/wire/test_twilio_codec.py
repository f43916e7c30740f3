"""The Twilio codec (`bridge.wire.twilio`), both ways.

In: any text, bytes or JSON (valid Twilio messages with fields removed, retyped or buried
in garbage included) decodes into one of the Twilio events with well-typed fields, or into
`TwilioMessageInvalid` saying why, never an exception; a well-formed message (PROTOCOLS.md
§1.2) decodes into exactly the fields it carried.

Out: `StreamWriter`'s media, mark and clear are exactly the shapes of §1.3, whatever the
stream SID and mark name (escaped where JSON needs it), byte for byte what `json.dumps`
writes; and a mark the bridge sends comes back from Twilio's echo as the same name.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.events import (
    CallerAudio,
    KeyPressed,
    MarkPlayed,
    StreamConnected,
    StreamStarted,
    StreamStopped,
    TwilioEvent,
    TwilioMessageInvalid,
)
from bridge.wire import twilio as twilio_wire
from bridge.wire.twilio import (
    TRUNCATION_MARK_PREFIX,
    ItemMark,
    StreamWriter,
    TruncationMark,
    decode,
    mark_name,
    parse_mark_name,
    truncation_mark_name,
)
from tests.helpers.core_harness import STREAM
from tests.helpers.twilio_messages import (
    BAD_VALUES,
    BREAKABLE,
    CONNECTED,
    ENCODINGS,
    EVENT_NAMES,
    ODD_STREAM,
    STOPS_WITHOUT_A_STREAM,
    Path,
    audio_payloads,
    deep_start,
    digits,
    dtmf_dict,
    encode,
    garbage,
    huge_strings,
    json_values,
    mark_dict,
    mark_names,
    media_dict,
    mutate,
    parameters,
    paths,
    payloads,
    sids,
    start_dict,
    stop_dict,
)

EVENT_TYPES = (StreamConnected, StreamStarted, CallerAudio, MarkPlayed, KeyPressed, StreamStopped)


@st.composite
def well_formed(draw: st.DrawFn) -> tuple[dict[str, Any], TwilioEvent]:
    """A message shaped as in §1.2, with the event the decoder must make of it."""
    kind = draw(st.sampled_from(EVENT_NAMES))
    seq = draw(st.integers(1, 10**9))
    stream = draw(sids("MZ"))
    if kind == "connected":
        return dict(CONNECTED), StreamConnected()
    if kind == "start":
        call_sid, account = draw(sids("CA")), draw(sids("AC"))
        params = draw(parameters)
        encoding = draw(st.sampled_from(["audio/x-mulaw", "audio/x-l16", "é\"'"]))
        rate = draw(st.sampled_from([8000, 16000, 24000, 44100]))
        message = start_dict(stream, call_sid, account, params, encoding, rate)
        message["sequenceNumber"] = str(seq)
        return message, StreamStarted(stream, call_sid, account, params, encoding, rate)
    if kind == "media":
        payload = draw(payloads)
        return media_dict(stream, payload, seq), CallerAudio(stream, payload)
    if kind == "mark":
        name = draw(mark_names)
        return mark_dict(stream, name, seq), MarkPlayed(stream, name)
    if kind == "dtmf":
        digit = draw(digits)
        return dtmf_dict(stream, digit, seq), KeyPressed(stream, digit)
    return stop_dict(stream, seq), StreamStopped(stream)


def decoded(data: str | bytes) -> TwilioEvent | None:
    """The decoder's contract: a well-typed event, or TwilioMessageInvalid saying why (then
    None); never an exception, never anything else."""
    event = decode(data)
    if isinstance(event, TwilioMessageInvalid):
        assert isinstance(event.problem, str) and event.problem
        return None
    assert isinstance(event, EVENT_TYPES), event
    if isinstance(event, StreamStarted):
        assert all(isinstance(v, str) for v in (event.stream_sid, event.call_sid))
        assert event.stream_sid and event.call_sid
        assert isinstance(event.account_sid, str) and isinstance(event.encoding, str)
        assert type(event.sample_rate) is int
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in event.parameters.items())
    elif not isinstance(event, StreamConnected):
        assert isinstance(event.stream_sid, str) and event.stream_sid
    if isinstance(event, CallerAudio):
        assert isinstance(event.payload, str)
    if isinstance(event, MarkPlayed):
        assert isinstance(event.name, str) and event.name
    if isinstance(event, KeyPressed):
        assert isinstance(event.digit, str) and event.digit
    return event


# --- in: anything decodes, or is invalid -------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(text=st.text())
def test_any_text_decodes_or_is_invalid(text: str) -> None:
    decoded(text)


@settings(max_examples=300, deadline=None)
@given(data=st.binary())
def test_any_bytes_decode_or_are_invalid(data: bytes) -> None:
    decoded(data)


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(json_values, st.floats()), how=ENCODINGS)
def test_any_json_value_decodes_or_is_invalid(value: Any, how: str) -> None:
    decoded(encode(value, how))  # NaN/Infinity included: not JSON to orjson


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
def test_event_shaped_garbage_decodes_or_is_invalid(
    event: Any, fields: dict[str, Any], how: str
) -> None:
    decoded(encode({"event": event, **fields}, how))


@settings(max_examples=400, deadline=None)
@given(sample=well_formed(), how=ENCODINGS, data=st.data())
def test_mutated_twilio_messages_decode_or_are_invalid(
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
    decoded(encode(message, how))


@settings(max_examples=400, deadline=None)
@given(
    sample=well_formed().filter(lambda s: s[0]["event"] in ("media", "mark")),
    how=ENCODINGS,
    data=st.data(),
)
def test_media_and_marks_take_the_short_way_only_where_the_full_decoder_agrees(
    sample: tuple[dict[str, Any], TwilioEvent], how: str, data: st.DataObject
) -> None:
    """50 media and 50 marks a second take a short way through the decoder: it must accept
    exactly what the full one accepts, as the same event."""
    message = copy.deepcopy(sample[0])
    for _ in range(data.draw(st.integers(0, 2), label="mutations")):
        path = data.draw(st.sampled_from(paths(message)), label="path")
        op = data.draw(st.sampled_from(["delete", "retype", "wrap", "stringify", "numberify"]))
        mutate(message, path, op, data.draw(garbage, label="replacement"))
    assert_the_short_way_agrees(encode(message, how))


ODD_VALUES = [v for _, fixed in BAD_VALUES.values() for v in fixed] + ["AAA=", "é", " "]
DELETED = object()  # (the field left out)


@pytest.mark.parametrize(
    ("message", "path"),
    [
        (media_dict(STREAM, "AAAA", 1), ("streamSid",)),
        (media_dict(STREAM, "AAAA", 1), ("media",)),
        (media_dict(STREAM, "AAAA", 1), ("media", "payload")),
        (mark_dict(STREAM, "m1", 1), ("streamSid",)),
        (mark_dict(STREAM, "m1", 1), ("mark",)),
        (mark_dict(STREAM, "m1", 1), ("mark", "name")),
    ],
)
def test_media_and_marks_with_an_odd_field_decode_as_the_full_decoder_says(
    message: dict[str, Any], path: tuple[str, ...]
) -> None:
    for value in [*ODD_VALUES, DELETED]:
        broken = copy.deepcopy(message)
        *parents, last = path
        inner = broken
        for key in parents:
            inner = inner[key]
        if value is DELETED:
            del inner[last]
        else:
            inner[last] = value
        assert_the_short_way_agrees(json.dumps(broken))


def assert_the_short_way_agrees(text: str | bytes) -> None:
    event = decode(text)
    try:
        full = twilio_wire._decode(orjson.loads(text))
    except twilio_wire._Invalid:
        assert isinstance(event, TwilioMessageInvalid), (text, event)
    else:
        assert event == full, text


@settings(max_examples=500, deadline=None)
@given(sample=well_formed(), how=ENCODINGS)
def test_well_formed_messages_decode_into_exactly_their_fields(
    sample: tuple[dict[str, Any], TwilioEvent], how: str
) -> None:
    message, expected = sample
    assert decode(encode(message, how)) == expected


@settings(max_examples=10, deadline=None)
@given(payload=huge_strings(1_000_000, 2_000_000), how=ENCODINGS)
def test_huge_payloads_pass_through_the_decoder_whole(payload: str, how: str) -> None:
    assert decode(encode(media_dict(STREAM, payload), how)) == CallerAudio(STREAM, payload)


VALID = {
    "media": media_dict(STREAM, "AAAA"),
    "mark": mark_dict(STREAM, "m"),
    "dtmf": dtmf_dict(STREAM, "1"),
    "start": start_dict(STREAM),
}


def test_the_valid_messages_the_breakage_starts_from_decode() -> None:
    """(So that each rejection below is the broken field's doing.)"""
    assert [type(decode(json.dumps(m))) for m in VALID.values()] == [
        CallerAudio,
        MarkPlayed,
        KeyPressed,
        StreamStarted,
    ]


@pytest.mark.parametrize(
    ("kind", "path", "breaks_as", "deletable"),
    [(kind, *entry) for kind, entries in BREAKABLE.items() for entry in entries],
    ids=lambda v: ".".join(map(str, v)) if isinstance(v, tuple) else None,
)
def test_a_message_with_a_broken_required_field_is_invalid(
    kind: str, path: Path, breaks_as: str, deletable: bool
) -> None:
    variants: list[tuple[str, Any]] = [("retype", bad) for bad in BAD_VALUES[breaks_as][1]]
    for op, bad in [*variants, *([("delete", None)] if deletable else [])]:
        message = copy.deepcopy(VALID[kind])
        mutate(message, path, op, bad)
        for how in ("ascii", "bytes"):
            event = decode(encode(message, how))
            assert isinstance(event, TwilioMessageInvalid), (op, bad, event)


@pytest.mark.parametrize("stop", STOPS_WITHOUT_A_STREAM)
def test_a_stop_without_a_string_stream_sid_is_invalid(stop: str) -> None:
    assert isinstance(decode(stop), TwilioMessageInvalid)


@pytest.mark.parametrize("where", ["customParameters", "accountSid", "encoding"])
def test_a_deeply_nested_start_field_is_invalid_not_a_crash(where: str) -> None:
    assert isinstance(decode(deep_start(where)), TwilioMessageInvalid)


# --- out: what the bridge writes to Twilio -----------------------------------------------------

any_sid = st.one_of(sids("MZ"), st.sampled_from([STREAM, ODD_STREAM]))


def pairs(text: str) -> Any:
    """A message's key/value pairs, nested, duplicates included, in order: an injected or
    repeated key shows up here."""
    return json.loads(text, object_pairs_hook=list)


def json_dumps(message: dict[str, Any]) -> str:
    """What the standard library writes: compact, non-ASCII as is."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


@settings(max_examples=200, deadline=None)
@given(sid=any_sid, payload=audio_payloads, name=mark_names)
def test_media_mark_and_clear_have_the_documented_shapes(sid: str, payload: str, name: str) -> None:
    """PROTOCOLS.md §1.3: these keys, in this order, each once, nothing else."""
    writer = StreamWriter(sid)
    assert pairs(writer.media(payload)) == [
        ("event", "media"),
        ("streamSid", sid),
        ("media", [("payload", payload)]),
    ]
    assert pairs(writer.mark(name)) == [
        ("event", "mark"),
        ("streamSid", sid),
        ("mark", [("name", name)]),
    ]
    assert pairs(writer.clear()) == [("event", "clear"), ("streamSid", sid)]


NAMES_TO_ESCAPE = [
    '"',
    "\\",
    '\\"',
    '"}}',
    'item:"1":8',
    '}"{',
    "a\nb",
    "tab\there",
    "\r\x08\x0c",
    "\x00",
    "\x1f",
    "\x7f",
    "\u2028\u2029",
    "\ufeff",
    "é:160",
    "😀:12",
    "日本語",
    "\\u0022",
]


@pytest.mark.parametrize("name", NAMES_TO_ESCAPE)
@pytest.mark.parametrize("sid", [STREAM, ODD_STREAM])
def test_mark_names_that_need_escaping_arrive_intact(sid: str, name: str) -> None:
    text = StreamWriter(sid).mark(name)
    assert json.loads(text) == {"event": "mark", "streamSid": sid, "mark": {"name": name}}
    assert text == json_dumps({"event": "mark", "streamSid": sid, "mark": {"name": name}})


@settings(max_examples=500, deadline=None)
@given(sid=any_sid, name=st.one_of(st.text(), mark_names, st.sampled_from(NAMES_TO_ESCAPE)))
def test_every_mark_is_written_exactly_as_json_dumps_writes_it(sid: str, name: str) -> None:
    """The fast path (a name with nothing to escape is spliced in as is) and the slow one
    agree with the standard library, byte for byte."""
    expected = json_dumps({"event": "mark", "streamSid": sid, "mark": {"name": name}})
    assert StreamWriter(sid).mark(name) == expected


@settings(max_examples=200, deadline=None)
@given(sid=any_sid, payload=audio_payloads)
def test_media_and_clear_are_written_exactly_as_json_dumps_writes_them(
    sid: str, payload: str
) -> None:
    writer = StreamWriter(sid)
    media = {"event": "media", "streamSid": sid, "media": {"payload": payload}}
    assert writer.media(payload) == json_dumps(media)
    assert writer.clear() == json_dumps({"event": "clear", "streamSid": sid})


@settings(max_examples=200, deadline=None)
@given(sid=any_sid, name=mark_names, how=ENCODINGS)
def test_a_mark_comes_back_from_twilios_echo_as_the_same_name(
    sid: str, name: str, how: str
) -> None:
    """Twilio echoes the mark's name as it read it; the ledger matches it to what it sent."""
    sent = json.loads(StreamWriter(sid).mark(name))
    echo = {"event": "mark", "sequenceNumber": "9", "streamSid": sid, "mark": sent["mark"]}
    assert decode(encode(echo, how)) == MarkPlayed(sid, name)


# An item id that itself begins "truncated:" would read as a truncation mark: the format
# cannot tell them apart (the model's item ids begin "item_").
item_ids = st.text(min_size=1).filter(lambda i: not i.startswith(TRUNCATION_MARK_PREFIX))


@settings(max_examples=200, deadline=None)
@given(item_id=item_ids, end=st.integers(0, 10**9))
def test_the_bridges_mark_names_survive_the_round_trip_and_parse_back(
    item_id: str, end: int
) -> None:
    """What the simulator and Twilio's debugger read in the bridge's marks (any item id
    the model chose): the item and the byte (or the cut), after Twilio's echo (which has
    the shape of the mark sent)."""
    writer = StreamWriter(STREAM)
    for name, meaning in [
        (mark_name(item_id, end), ItemMark(item_id, end)),
        (truncation_mark_name(item_id, end), TruncationMark(item_id, end)),
    ]:
        echo = decode(writer.mark(name))
        assert echo == MarkPlayed(STREAM, name)
        assert parse_mark_name(echo.name) == meaning
