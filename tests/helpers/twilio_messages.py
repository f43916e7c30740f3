"""Twilio's Media Streams messages for tests, as JSON-ready dicts (PROTOCOLS.md §1.2), and
Hypothesis strategies for them: well-formed, lenient (fields the bridge does not rely on
removed, retyped or added), and broken (a field it relies on missing or retyped), plus
plain garbage. Shared by the Twilio codec's tests and those of what a call does with
hostile input."""

from __future__ import annotations

import base64
import copy
import json
import string
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from tests.helpers.core_harness import CALL, STREAM

OTHER_STREAM = "MZ00000000000000000000000000000002"
ODD_STREAM = 'MZ"quoted\\sid}é😀'  # legal for the decoder; must be escaped wherever it goes
EVENT_NAMES = ("connected", "start", "media", "mark", "dtmf", "stop")
BASE64_ALPHABET = frozenset(string.ascii_letters + string.digits + "+/")

Path = tuple[str | int, ...]


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


CONNECTED: dict[str, Any] = {"event": "connected", "protocol": "Call", "version": "1.0.0"}


# --- changing messages ------------------------------------------------------------------------


def paths(value: Any, prefix: Path = ()) -> list[Path]:
    """Every key and index path inside a JSON value."""
    found: list[Path] = []
    if isinstance(value, dict | list):
        for key, inner in value.items() if isinstance(value, dict) else enumerate(value):
            found.append((*prefix, key))
            found += paths(inner, (*prefix, key))
    return found


def mutate(message: dict[str, Any], path: Path, op: str, replacement: Any) -> None:
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


def _not_in(taken: set[str]) -> Callable[[str], bool]:
    return lambda key: key not in taken


@st.composite
def lenient(draw: st.DrawFn, message: dict[str, Any]) -> dict[str, Any]:
    """The message with fields the bridge does not rely on removed, retyped or added."""
    message = copy.deepcopy(message)
    section = message["event"]
    tweaks: list[tuple[str, Path]] = [
        ("delete", ("sequenceNumber",)),
        ("numberify", ("sequenceNumber",)),
        ("extra", ()),
    ]
    per_event: dict[str, list[tuple[str, Path]]] = {
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
    }
    tweaks += per_event[section]
    for op, path in draw(st.lists(st.sampled_from(tweaks), max_size=2)):
        value = draw(small_garbage)
        if op == "extra":
            target: Any = message
            for key in path:
                target = target[key]
            if isinstance(target, dict):
                target[draw(st.text(max_size=10).filter(_not_in(set(target))))] = value
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
# A stop whose streamSid is missing or not a string: see the regression tests.
BREAKABLE: dict[str, list[tuple[Path, str, bool]]] = {
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

# 1010 levels: past Python's recursion limit (1000) for str(), under orjson's 1024 for loads.
DEEP = "[" * 1010 + "]" * 1010


def deep_start(where: str) -> str:
    """A start whose `where` field is nested 1010 lists deep."""
    message = start_dict(STREAM)
    if where == "customParameters":
        message["start"]["customParameters"] = {"From": "DEEP"}
    elif where == "accountSid":
        message["start"]["accountSid"] = "DEEP"
    else:
        message["start"]["mediaFormat"]["encoding"] = "DEEP"
    return json.dumps(message).replace('"DEEP"', DEEP)


# Stops that name no stream (no streamSid, or not a non-empty string): never a hang-up.
STOPS_WITHOUT_A_STREAM = [
    '{"event":"stop"}',
    '{"event":"stop","streamSid":null}',
    '{"event":"stop","streamSid":""}',
    '{"event":"stop","streamSid":["MZ1"]}',
    '{"event":"stop","streamSid":123}',
    '{"event":"stop","streamSid":true}',
]
