"""What reaches Twilio of the Realtime session's audio, whatever a delta holds: decoded by
the Realtime codec, through the call core, written by `StreamWriter`. Twilio must get media
messages of exactly the shape of PROTOCOLS.md §1.3, carrying base64: `StreamWriter.media`
splices its payload in unescaped, so anything else would be written into the JSON as is.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bridge.core.actions import PlayAudio
from bridge.realtime.dialects import Dialect
from bridge.transcode import AudioFormat
from bridge.wire.realtime import codec_for
from bridge.wire.twilio import StreamWriter
from tests.helpers.core_harness import STREAM, configured_call, of
from tests.helpers.twilio_messages import (
    almost_base64,
    audio_payloads,
    hostile_payloads,
    is_base64_audio,
)

DELTA = {Dialect.GA: "response.output_audio.delta", Dialect.BETA: "response.audio.delta"}
deltas = st.one_of(audio_payloads, almost_base64, hostile_payloads)


def pairs(text: str) -> Any:
    return json.loads(text, object_pairs_hook=list)


def what_twilio_gets(
    fmt: AudioFormat, dialect: Dialect, delta: str, **odd_fields: object
) -> list[str]:
    """The media payloads Twilio receives for a delta, each checked for its shape;
    `odd_fields` replace the delta's own."""
    h = configured_call(audio_format=fmt)
    codec = codec_for(dialect)
    created = codec.decode(json.dumps({"type": "response.created", "response": {"id": "r1"}}))
    assert created is not None
    h.handle(created, 0.0)
    event = {"type": DELTA[dialect], "response_id": "r1", "item_id": "item_1", "delta": delta}
    event.update(odd_fields)
    decoded = codec.decode(json.dumps(event))
    assert decoded is not None
    writer, payloads = StreamWriter(STREAM), []
    for play in of(PlayAudio, h.handle(decoded, 0.1)):
        media = pairs(writer.media(play.payload))
        assert media[:2] == [("event", "media"), ("streamSid", STREAM)], media
        assert len(media) == 3 and media[2][0] == "media", media
        [(key, payload)] = media[2][1]
        assert key == "payload" and is_base64_audio(payload), media
        payloads.append(payload)
    return payloads


@pytest.mark.parametrize("fmt", [AudioFormat.PCMA, AudioFormat.PCM16], ids=str)
@settings(max_examples=150, deadline=None)
@given(delta=deltas, dialect=st.sampled_from(list(Dialect)))
def test_transcoded_model_audio_reaches_twilio_as_base64_only(
    fmt: AudioFormat, delta: str, dialect: Dialect
) -> None:
    what_twilio_gets(fmt, dialect, delta)  # decoded, converted, encoded anew


@settings(max_examples=150, deadline=None)
@given(delta=audio_payloads, dialect=st.sampled_from(list(Dialect)))
def test_mulaw_model_audio_reaches_twilio_untouched(delta: str, dialect: Dialect) -> None:
    assert what_twilio_gets(AudioFormat.PCMU, dialect, delta) == [delta]


@settings(max_examples=150, deadline=None)
@given(delta=deltas, dialect=st.sampled_from(list(Dialect)))
@example(delta='AAAA"},"event":"clear","x":{"y":"', dialect=Dialect.GA)
def test_mulaw_model_audio_that_is_not_base64_never_reaches_twilio_as_it_came(
    delta: str, dialect: Dialect
) -> None:
    what_twilio_gets(AudioFormat.PCMU, dialect, delta)


@pytest.mark.parametrize("response_id", [None, "", 5, True, ["r1"], {"id": "r1"}])
@pytest.mark.parametrize("content_index", [0, True, "0", 1.5, None])
def test_a_delta_with_odd_ids_plays_as_the_answer_in_progress(
    response_id: object, content_index: object
) -> None:
    """A backend that writes an id of the wrong type still gets its audio played (as the
    answer being generated), and the call goes on."""
    frame = base64.b64encode(b"\xff" * 160).decode()  # 20 ms of mu-law silence
    for dialect in Dialect:
        played = what_twilio_gets(
            AudioFormat.PCMU,
            dialect,
            frame,
            response_id=response_id,
            content_index=content_index,
        )
        assert played == [frame]
