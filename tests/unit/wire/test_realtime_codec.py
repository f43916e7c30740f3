"""The Realtime codec (`bridge.wire.realtime`), both dialects (`RealtimeCodec`: GA,
`BetaCodec`: the deprecated beta), checked against the official `openai` SDK's types.

Out: every client message the codec writes is one the SDK's client event models accept,
strictly (see `sdk_accepts`), as the event we meant, saying what the action asked.

In: server events built from the SDK's server event models and serialised as the SDK
would send them decode into the core events the call needs; every other event type the
SDK knows decodes into None; odd input (not JSON, not an object, fields missing or
ill-typed, formats other than those asked for) decodes into what the call can act on.
"""

from __future__ import annotations

import json
import typing
from types import ModuleType
from typing import Any

import openai.types.beta.realtime as beta_types
import openai.types.realtime as ga_types
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter

from bridge.core.actions import (
    AddMessage,
    AddToolOutput,
    AppendAudio,
    CancelResponse,
    ClearAudio,
    ConfigureSession,
    CreateResponse,
    DeleteItem,
    DisableTurnDetection,
    PlayAudio,
    SendMark,
    ToBackend,
    TruncateItem,
)
from bridge.core.call_config import CallConfig, SessionSettings
from bridge.core.events import (
    AssistantTranscribed,
    AudioDelta,
    AudioDone,
    BackendError,
    BackendEvent,
    BackendEventInvalid,
    BackendOpened,
    CallerTranscribed,
    FunctionCallRequested,
    InputCommitted,
    ItemTruncated,
    ResponseCreated,
    ResponseDone,
    SessionCreated,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
)
from bridge.core.last_words import GOODBYE_PURPOSE
from bridge.realtime.dialects import Dialect
from bridge.tools.builtins import end_call_spec, send_dtmf_spec, transfer_call_spec
from bridge.tools.examples import current_time, lookup_order
from bridge.transcode import AudioFormat
from bridge.wire.realtime import BetaCodec, RealtimeCodec, codec_for
from tests.helpers.core_harness import Stream, start
from tests.helpers.twilio_messages import audio_payloads

GA, BETA = Dialect.GA, Dialect.BETA
SDK: dict[Dialect, ModuleType] = {GA: ga_types, BETA: beta_types}
CLIENT_EVENTS: dict[Dialect, TypeAdapter[Any]] = {
    GA: TypeAdapter(ga_types.RealtimeClientEvent),
    BETA: TypeAdapter(beta_types.RealtimeClientEvent),
}
FORMATS = list(AudioFormat)
# How each dialect names the formats in a session.
GA_FORMAT = {
    AudioFormat.PCMU: {"type": "audio/pcmu"},
    AudioFormat.PCMA: {"type": "audio/pcma"},
    AudioFormat.PCM16: {"type": "audio/pcm", "rate": 24000},
}
BETA_FORMAT = {
    AudioFormat.PCMU: "g711_ulaw",
    AudioFormat.PCMA: "g711_alaw",
    AudioFormat.PCM16: "pcm16",
}
# Server events whose names changed: beta's, GA's.
NAMES = {
    "delta": {GA: "response.output_audio.delta", BETA: "response.audio.delta"},
    "audio done": {GA: "response.output_audio.done", BETA: "response.audio.done"},
    "transcript done": {
        GA: "response.output_audio_transcript.done",
        BETA: "response.audio_transcript.done",
    },
}
# The server events the call core hears of; every other one decodes into None.
USED = {
    "session.created",
    "session.updated",
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "conversation.item.input_audio_transcription.completed",
    "response.created",
    "response.done",
    "response.function_call_arguments.done",
    "response.output_item.done",  # a function call's item: the call, once more
    "conversation.item.truncated",
    "error",
}
USED_BY = {d: USED | {names[d] for names in NAMES.values()} for d in Dialect}

# What an operator's call asks of its session: nothing left at its default, every kind of
# tool the bridge offers (its own three, two of the examples an operator may load).
TOOLS = (
    end_call_spec(),
    transfer_call_spec(["sales", "support"]),
    send_dtmf_spec(),
    current_time.spec(),
    lookup_order.spec(),
)
PLAIN = SessionSettings(
    voice="cedar",
    instructions='Be brief. Say "hello" first; \\ é 😀',
    vad_threshold=0.7,
    vad_prefix_padding_ms=250,
    vad_silence_ms=650,
    interrupt_response=False,
)
SETTINGS = {
    "plain": PLAIN,
    "transcribed": SessionSettings(transcription_model="gpt-4o-transcribe"),
    "tools": SessionSettings(tools=TOOLS),
    "transcribed, tools": SessionSettings(transcription_model="whisper-1", tools=TOOLS[:1]),
    # INTERRUPTIONS=confirm: the bridge decides when to answer and whether to stop.
    "the bridge decides": SessionSettings(
        interrupt_response=False, create_response=False, noise_reduction="near_field"
    ),
    "semantic": SessionSettings(
        turn_detection="semantic_vad", vad_eagerness="low", noise_reduction="far_field"
    ),
}


@pytest.fixture(params=list(Dialect), ids=str)
def dialect(request: pytest.FixtureRequest) -> Dialect:
    value: Dialect = request.param
    return value


def codec(dialect: Dialect) -> RealtimeCodec:
    return BetaCodec() if dialect is BETA else RealtimeCodec()


# --- the oracle ---------------------------------------------------------------------------------


def unknown_fields(value: object, path: str = "") -> list[str]:
    """Fields the SDK's models do not define, wherever they sit. (Its models take unknown
    fields silently, `extra="allow"`, so that a newer server does not break an older SDK:
    they land in each model's `model_extra`.)"""
    if isinstance(value, BaseModel):
        found = [f"{path}.{key}" for key in value.model_extra or {}]
        for name in type(value).model_fields:
            found += unknown_fields(getattr(value, name), f"{path}.{name}")
        return found
    if isinstance(value, list | tuple):
        return [f for i, v in enumerate(value) for f in unknown_fields(v, f"{path}[{i}]")]
    return []


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), f"a key written twice: {keys}"
    return dict(pairs)


def sdk_accepts(dialect: Dialect, text: str, expected: type[BaseModel]) -> Any:
    """`text`, exactly as the codec wrote it, read by the SDK as the client event `expected`
    with nothing unknown, nothing coerced, nothing dropped:
    - validated from the JSON text, strictly (no "1" for 1, no 1.0 for an int), against
      the union of all client events, so its `type` must pick the right one;
    - no field the SDK does not define, anywhere (`unknown_fields`);
    - the SDK's own dump of what it read is exactly what was sent (a field renamed,
      defaulted or coerced would differ), with no key written twice."""
    sent = json.loads(text, object_pairs_hook=no_duplicate_keys)
    event = CLIENT_EVENTS[dialect].validate_json(text, strict=True)
    assert type(event) is expected, f"read as {type(event).__name__}: {text}"
    assert unknown_fields(event) == [], text
    assert event.model_dump(mode="json", by_alias=True, exclude_unset=True) == sent
    return event


def server_event(
    dialect: Dialect, model: str, fields: dict[str, Any], observed: dict[str, Any] | None = None
) -> str:
    """A server event built by the SDK's model `model` (validated strictly, with no field
    it does not define), as the JSON the SDK writes for it; plus `observed`, fields that
    servers send but the SDK's model leaves out (each use says where that is known from)."""
    event = getattr(SDK[dialect], model).model_validate(
        {"event_id": "event_1", **fields}, strict=True
    )
    assert unknown_fields(event) == [], fields
    text: str = event.to_json(indent=None)
    if observed:
        assert not set(observed) & set(type(event).model_fields), "the SDK defines it"
        text = json.dumps({**json.loads(text), **observed})
    return text


def server_event_types(dialect: Dialect) -> set[str]:
    """Every server event type the SDK knows in `dialect`."""
    found: set[str] = set()

    def walk(kind: Any) -> None:
        origin = typing.get_origin(kind)
        if origin is typing.Annotated or origin is typing.Union:
            for inner in typing.get_args(kind)[: 1 if origin is typing.Annotated else None]:
                walk(inner)
            return
        found.update(typing.get_args(kind.model_fields["type"].annotation))

    walk(SDK[dialect].RealtimeServerEvent)
    return found


def test_the_oracle_flags_an_unknown_field_a_coerced_value_and_a_wrong_event() -> None:
    """(What makes `sdk_accepts` strict: each way a message could be wrong fails it.)"""
    good = codec(GA).encode(TruncateItem("item_1", 0, 1500))
    sdk_accepts(GA, good, ga_types.ConversationItemTruncateEvent)
    unknown = good.replace('"item_id"', '"audio_start_ms":0,"item_id"')
    with pytest.raises(AssertionError):
        sdk_accepts(GA, unknown, ga_types.ConversationItemTruncateEvent)
    nested = codec(GA).encode(ConfigureSession(PLAIN, AudioFormat.PCMU))
    nested = nested.replace('"silence_duration_ms"', '"silence_ms":1,"silence_duration_ms"')
    with pytest.raises(AssertionError):
        sdk_accepts(GA, nested, ga_types.SessionUpdateEvent)
    with pytest.raises(ValueError):  # pydantic's ValidationError: "1500" is not an int
        sdk_accepts(GA, good.replace("1500", '"1500"'), ga_types.ConversationItemTruncateEvent)
    with pytest.raises(ValueError):  # a number where a string is required
        sdk_accepts(GA, good.replace('"item_1"', "1"), ga_types.ConversationItemTruncateEvent)
    with pytest.raises(AssertionError):
        sdk_accepts(GA, good, ga_types.ResponseCancelEvent)
    with pytest.raises(AssertionError):
        sdk_accepts(GA, good.replace("{", '{"type":"x",', 1), ga_types.ResponseCancelEvent)


# --- out: session.update -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("which", list(SETTINGS))
def test_the_session_update_is_one_the_sdk_accepts_asking_for_what_was_configured(
    dialect: Dialect, which: str, fmt: AudioFormat
) -> None:
    settings = SETTINGS[which]
    text = codec(dialect).encode(ConfigureSession(settings, fmt))
    # (As the SDK read it: Any, since its type depends on the dialect.)
    session: Any = sdk_accepts(dialect, text, SDK[dialect].SessionUpdateEvent).session
    sent = json.loads(text)["session"]
    vad: Any
    transcription: Any
    if dialect is GA:
        model = type(session)
        assert model is ga_types.RealtimeSessionCreateRequest  # not a transcription session
        assert session.type == "realtime"
        assert session.output_modalities == ["audio"]  # spoken answers, with transcripts
        audio_in, audio_out = session.audio.input, session.audio.output
        assert sent["audio"]["input"]["format"] == GA_FORMAT[fmt]
        assert sent["audio"]["output"]["format"] == GA_FORMAT[fmt]
        assert audio_out.voice == settings.voice
        vad = audio_in.turn_detection
        transcription = audio_in.transcription
    else:
        assert session.modalities == ["text", "audio"]
        assert session.input_audio_format == session.output_audio_format == BETA_FORMAT[fmt]
        assert session.voice == settings.voice
        vad = session.turn_detection
        transcription = session.input_audio_transcription
    # No model: the URL chose it, and another one here would be refused.
    assert "model" not in sent
    assert session.instructions == settings.instructions
    assert vad.type == settings.turn_detection
    if settings.turn_detection == "semantic_vad":
        assert vad.eagerness == settings.vad_eagerness
        assert "threshold" not in json.dumps(sent) and "silence_duration_ms" not in json.dumps(sent)
    else:
        assert vad.threshold == settings.vad_threshold
        assert vad.prefix_padding_ms == settings.vad_prefix_padding_ms
        assert vad.silence_duration_ms == settings.vad_silence_ms
    assert vad.create_response is settings.create_response
    assert vad.interrupt_response is settings.interrupt_response
    noise_reduction = (
        session.audio.input.noise_reduction
        if dialect is GA
        else session.input_audio_noise_reduction
    )
    if settings.noise_reduction == "off":
        assert noise_reduction is None and "noise_reduction" not in json.dumps(sent)
    else:
        assert noise_reduction.type == settings.noise_reduction
    if settings.transcription_model:
        assert transcription.model == settings.transcription_model
    else:
        assert transcription is None and "transcription" not in json.dumps(sent)
    if settings.tools:
        assert sent["tools"] == list(settings.tools)
        assert [tool.name for tool in session.tools] == [t["name"] for t in settings.tools]
        assert session.tool_choice == "auto"
    else:
        assert "tools" not in sent and "tool_choice" not in sent


def test_disabling_turn_detection_clears_it_and_nothing_else(dialect: Dialect) -> None:
    text = codec(dialect).encode(DisableTurnDetection())
    session = sdk_accepts(dialect, text, SDK[dialect].SessionUpdateEvent).session
    if dialect is GA:
        assert json.loads(text) == {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        }
        assert session.audio.input.turn_detection is None
        assert session.audio.input.model_fields_set == {"turn_detection"}  # null: cleared
    else:
        assert json.loads(text) == {"type": "session.update", "session": {"turn_detection": None}}
        assert session.model_fields_set == {"turn_detection"}


# --- out: responses, items, audio --------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "response"),
    [
        (CreateResponse(), None),
        (CreateResponse(instructions="Greet the caller."), {"instructions": "Greet the caller."}),
        (CreateResponse(purpose=GOODBYE_PURPOSE), {"metadata": {"phone_bridge": GOODBYE_PURPOSE}}),
        (
            CreateResponse("Say goodbye.", GOODBYE_PURPOSE),
            {"instructions": "Say goodbye.", "metadata": {"phone_bridge": GOODBYE_PURPOSE}},
        ),
    ],
    ids=["plain", "instructions", "purpose", "both"],
)
def test_response_create(
    dialect: Dialect, action: CreateResponse, response: dict[str, Any] | None
) -> None:
    text = codec(dialect).encode(action)
    event = sdk_accepts(dialect, text, SDK[dialect].ResponseCreateEvent)
    expected: dict[str, Any] = {"type": "response.create"}
    if response is not None:
        expected["response"] = response
        assert event.response.instructions == action.instructions
    assert json.loads(text) == expected


def test_response_cancel(dialect: Dialect) -> None:
    text = codec(dialect).encode(CancelResponse())
    sdk_accepts(dialect, text, SDK[dialect].ResponseCancelEvent)
    assert json.loads(text) == {"type": "response.cancel"}  # the response in progress


def test_truncate(dialect: Dialect) -> None:
    text = codec(dialect).encode(TruncateItem("item_C2a", 1, 1500))
    sdk_accepts(dialect, text, SDK[dialect].ConversationItemTruncateEvent)
    assert json.loads(text) == {
        "type": "conversation.item.truncate",
        "item_id": "item_C2a",
        "content_index": 1,
        "audio_end_ms": 1500,
    }


def test_delete_item(dialect: Dialect) -> None:
    """A cough or an "mm-hm" leaves the conversation (INTERRUPTIONS=confirm)."""
    text = codec(dialect).encode(DeleteItem("item_C3b"))
    sdk_accepts(dialect, text, SDK[dialect].ConversationItemDeleteEvent)
    assert json.loads(text) == {"type": "conversation.item.delete", "item_id": "item_C3b"}


# How each dialect writes a text message: the item model the SDK reads it as (GA has one
# per role), and the content part's type.
MESSAGE_PARTS = {
    (GA, "user"): (ga_types.RealtimeConversationItemUserMessage, "input_text"),
    (GA, "assistant"): (ga_types.RealtimeConversationItemAssistantMessage, "output_text"),
    (GA, "system"): (ga_types.RealtimeConversationItemSystemMessage, "input_text"),
    (BETA, "user"): (beta_types.ConversationItem, "input_text"),
    (BETA, "assistant"): (beta_types.ConversationItem, "text"),
    (BETA, "system"): (beta_types.ConversationItem, "input_text"),
}


@pytest.mark.parametrize("role", ["user", "assistant", "system"])
def test_a_text_message(dialect: Dialect, role: str) -> None:
    text = codec(dialect).encode(AddMessage(role, 'Keys pressed: "12#" \\ é'))
    item = sdk_accepts(dialect, text, SDK[dialect].ConversationItemCreateEvent).item
    model, part = MESSAGE_PARTS[dialect, role]
    assert type(item) is model
    assert json.loads(text) == {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": role,
            "content": [{"type": part, "text": 'Keys pressed: "12#" \\ é'}],
        },
    }


def test_a_tool_output(dialect: Dialect) -> None:
    text = codec(dialect).encode(AddToolOutput("call_7", '{"ok": true, "note": "\\"x\\""}'))
    item = sdk_accepts(dialect, text, SDK[dialect].ConversationItemCreateEvent).item
    if dialect is GA:
        assert type(item) is ga_types.RealtimeConversationItemFunctionCallOutput
    assert json.loads(text) == {
        "type": "conversation.item.create",
        "item": {
            "type": "function_call_output",
            "call_id": "call_7",
            "output": '{"ok": true, "note": "\\"x\\""}',
        },
    }


@settings(max_examples=100, deadline=None)
@given(payload=audio_payloads, dialect=st.sampled_from(list(Dialect)))
def test_caller_audio_is_appended_as_sent(payload: str, dialect: Dialect) -> None:
    """The splice (base64 needs no escaping) writes what the standard library would."""
    append = codec(dialect).append_audio(payload)
    assert codec(dialect).encode(AppendAudio(payload)) == append
    sdk_accepts(dialect, append, SDK[dialect].InputAudioBufferAppendEvent)
    expected = {"type": "input_audio_buffer.append", "audio": payload}
    assert append == json.dumps(expected, separators=(",", ":"))


@settings(max_examples=100, deadline=None)
@given(
    text=st.text(),
    other=st.text(),
    number=st.integers(0, 2**31),
    role=st.sampled_from(["user", "assistant", "system"]),
    dialect=st.sampled_from(list(Dialect)),
)
def test_any_text_the_call_sends_arrives_intact_in_a_valid_message(
    text: str, other: str, number: int, role: str, dialect: Dialect
) -> None:
    """Instructions, messages, tool results, ids, the purpose: whatever they hold."""
    c = codec(dialect)
    sdk = SDK[dialect]
    message = sdk_accepts(
        dialect, c.encode(AddMessage(role, text)), sdk.ConversationItemCreateEvent
    )
    assert message.item.content[0].text == text
    output = sdk_accepts(
        dialect, c.encode(AddToolOutput(other, text)), sdk.ConversationItemCreateEvent
    )
    assert (output.item.call_id, output.item.output) == (other, text)
    response = sdk_accepts(dialect, c.encode(CreateResponse(text, other)), sdk.ResponseCreateEvent)
    assert (response.response.instructions, response.response.metadata) == (
        text,
        {"phone_bridge": other},
    )
    truncate = sdk_accepts(
        dialect, c.encode(TruncateItem(text, number, number)), sdk.ConversationItemTruncateEvent
    )
    assert (truncate.item_id, truncate.content_index, truncate.audio_end_ms) == (
        text,
        number,
        number,
    )
    session = SessionSettings(voice=other, instructions=text)
    update = sdk_accepts(
        dialect, c.encode(ConfigureSession(session, AudioFormat.PCMU)), sdk.SessionUpdateEvent
    )
    assert update.session.instructions == text


@pytest.mark.parametrize("action", [PlayAudio("AAAA", "m"), ClearAudio(), SendMark("m")])
def test_what_is_not_for_the_session_is_refused(dialect: Dialect, action: Any) -> None:
    with pytest.raises(TypeError):
        codec(dialect).encode(action)


def test_codec_for_picks_the_dialects_codec() -> None:
    assert type(codec_for(GA)) is RealtimeCodec and codec_for(GA).dialect is GA
    assert type(codec_for(BETA)) is BetaCodec and codec_for(BETA).dialect is BETA


def test_every_action_for_the_session_is_covered_here() -> None:
    """A new kind of message for the session needs its test above (and its SDK check)."""
    covered = {
        AppendAudio,
        ConfigureSession,
        DisableTurnDetection,
        CreateResponse,
        CancelResponse,
        TruncateItem,
        DeleteItem,
        AddMessage,
        AddToolOutput,
    }
    assert set(typing.get_args(ToBackend)) == covered


# --- in: server events built by the SDK ---------------------------------------------------------


def ga_session(fmt: AudioFormat, turn_detection: dict[str, Any] | None) -> dict[str, Any]:
    """A session as a GA session.updated states it."""
    return {
        "type": "realtime",
        "model": "gpt-realtime",
        "output_modalities": ["audio"],
        "instructions": "Be brief.",
        "audio": {
            "input": {"format": GA_FORMAT[fmt], "turn_detection": turn_detection},
            "output": {"format": GA_FORMAT[fmt], "voice": "marin"},
        },
    }


def beta_session(fmt: AudioFormat, turn_detection: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "model": "gpt-realtime",
        "modalities": ["text", "audio"],
        "instructions": "Be brief.",
        "voice": "marin",
        "input_audio_format": BETA_FORMAT[fmt],
        "output_audio_format": BETA_FORMAT[fmt],
        "turn_detection": turn_detection,
    }


def session_event(dialect: Dialect, fmt: AudioFormat, turn_detection: dict[str, Any] | None) -> str:
    session = (ga_session if dialect is GA else beta_session)(fmt, turn_detection)
    return server_event(
        dialect, "SessionUpdatedEvent", {"type": "session.updated", "session": session}
    )


SERVER_VAD = {"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 500}


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize(
    ("turn_detection", "interrupts"),
    [
        ({**SERVER_VAD, "interrupt_response": True}, True),
        ({**SERVER_VAD, "interrupt_response": False}, False),
        (SERVER_VAD, True),  # the server's default
        ({"type": "semantic_vad", "eagerness": "auto"}, True),
        ({"type": "semantic_vad", "interrupt_response": False}, False),
        (None, False),  # no voice detection: nothing interrupts but the bridge
    ],
    ids=["interrupts", "does not", "default", "semantic", "semantic, does not", "null"],
)
def test_session_updated_states_formats_and_whether_the_session_interrupts_itself(
    dialect: Dialect, fmt: AudioFormat, turn_detection: dict[str, Any] | None, interrupts: bool
) -> None:
    text = session_event(dialect, fmt, turn_detection)
    assert codec(dialect).decode(text) == SessionUpdated("gpt-realtime", fmt, fmt, interrupts)


def test_session_created_names_the_model(dialect: Dialect) -> None:
    session = {"type": "realtime"} if dialect is GA else {}
    created = {"type": "session.created", "session": {**session, "model": "gpt-realtime"}}
    text = server_event(dialect, "SessionCreatedEvent", created)
    assert codec(dialect).decode(text) == SessionCreated("gpt-realtime")
    created["session"] = session
    text = server_event(dialect, "SessionCreatedEvent", created)
    assert codec(dialect).decode(text) == SessionCreated(None)


USAGE = {
    "total_tokens": 120,
    "input_tokens": 100,
    "output_tokens": 20,
    "input_token_details": {"text_tokens": 10, "audio_tokens": 90, "cached_tokens": 64},
    "output_token_details": {"text_tokens": 5, "audio_tokens": 15},
}
STATUS_DETAILS = {"type": "cancelled", "reason": "turn_detected"}


# The beta SDK's response.function_call_arguments.done has no `name` (its API reference
# had none); beta servers send it all the same (observed, as GA's model now states).
BETA_OBSERVED = {"ResponseFunctionCallArgumentsDoneEvent": {"name": "end_call"}}


def events_the_call_uses(dialect: Dialect) -> list[tuple[str, dict[str, Any], BackendEvent]]:
    """(SDK model, its fields, what the call must hear) for each server event it uses."""
    item = {"item_id": "item_1"}
    output = {"response_id": "resp_1", **item, "output_index": 0}
    part = {**output, "content_index": 1}
    name = {"name": "end_call"} if dialect is GA else {}
    transcription_usage = {"type": "tokens", "input_tokens": 9, "output_tokens": 3}
    transcription_usage["total_tokens"] = 12
    error = {"type": "invalid_request_error", "message": "Your session hit the maximum."}
    return [
        (
            "InputAudioBufferSpeechStartedEvent",
            {"type": "input_audio_buffer.speech_started", "audio_start_ms": 1200, **item},
            SpeechStarted(1200.0),
        ),
        (
            "InputAudioBufferSpeechStoppedEvent",
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 1830, **item},
            SpeechStopped(1830.0),
        ),
        (
            "InputAudioBufferCommittedEvent",
            {"type": "input_audio_buffer.committed", "previous_item_id": "item_0", **item},
            InputCommitted("item_1"),
        ),
        (
            "ConversationItemInputAudioTranscriptionCompletedEvent",
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "content_index": 0,
                "transcript": "I'd like to check my order.",
                "usage": transcription_usage,
                **item,
            },
            CallerTranscribed("item_1", "I'd like to check my order.", transcription_usage),
        ),
        (
            "ResponseAudioTranscriptDoneEvent",
            {"type": NAMES["transcript done"][dialect], "transcript": "It shipped.", **part},
            AssistantTranscribed("item_1", "It shipped."),
        ),
        (
            "ResponseCreatedEvent",
            {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}},
            ResponseCreated("resp_1", None),
        ),
        (
            "ResponseCreatedEvent",
            {
                "type": "response.created",
                "response": {"id": "resp_2", "metadata": {"phone_bridge": GOODBYE_PURPOSE}},
            },
            ResponseCreated("resp_2", GOODBYE_PURPOSE),
        ),
        (
            "ResponseCreatedEvent",
            {"type": "response.created", "response": {"id": "r", "metadata": {"other": "x"}}},
            ResponseCreated("r", None),
        ),
        (
            "ResponseDoneEvent",
            {
                "type": "response.done",
                "response": {
                    "id": "resp_1",
                    "status": "cancelled",
                    "status_details": STATUS_DETAILS,
                    "usage": USAGE,
                },
            },
            ResponseDone("resp_1", "cancelled", STATUS_DETAILS, USAGE),
        ),
        (
            "ResponseDoneEvent",
            {"type": "response.done", "response": {"id": "resp_1", "status": "completed"}},
            ResponseDone("resp_1", "completed"),
        ),
        (
            "ResponseAudioDeltaEvent",
            {"type": NAMES["delta"][dialect], "delta": "/w8A/w==", **part},
            AudioDelta("resp_1", "item_1", 1, "/w8A/w=="),
        ),
        (
            "ResponseAudioDoneEvent",
            {"type": NAMES["audio done"][dialect], **part},
            AudioDone("item_1"),
        ),
        (
            "ResponseFunctionCallArgumentsDoneEvent",
            {
                "type": "response.function_call_arguments.done",
                "call_id": "call_1",
                **name,
                "arguments": '{"reason": "done"}',
                **output,
            },
            FunctionCallRequested("call_1", "end_call", '{"reason": "done"}', "resp_1"),
        ),
        (
            "ResponseOutputItemDoneEvent",
            {
                "type": "response.output_item.done",
                "item": {
                    "id": "item_1",
                    "type": "function_call",
                    "status": "completed",
                    "call_id": "call_1",
                    "name": "end_call",
                    "arguments": '{"reason": "done"}',
                },
                "output_index": 0,
                "response_id": "resp_1",
                "event_id": "event_1",
            },
            FunctionCallRequested("call_1", "end_call", '{"reason": "done"}', "resp_1"),
        ),
        (
            "RealtimeErrorEvent" if dialect is GA else "ErrorEvent",
            {"type": "error", "error": {**error, "code": "session_expired"}},
            BackendError("session_expired", "Your session hit the maximum."),
        ),
        (
            "RealtimeErrorEvent" if dialect is GA else "ErrorEvent",
            {"type": "error", "error": error},  # no code: its type says what it is
            BackendError("invalid_request_error", "Your session hit the maximum."),
        ),
        (
            "ConversationItemTruncatedEvent",
            {
                "type": "conversation.item.truncated",
                "content_index": 0,
                "audio_end_ms": 1500,
                **item,
            },
            ItemTruncated("item_1", 1500),
        ),
    ]


def test_every_server_event_the_call_uses_decodes_into_its_event(dialect: Dialect) -> None:
    cases = events_the_call_uses(dialect)
    assert {fields["type"] for _, fields, _ in cases} | {
        "session.created",
        "session.updated",
    } == USED_BY[dialect]
    for model, fields, expected in cases:
        observed = BETA_OBSERVED.get(model) if dialect is BETA else None
        text = server_event(dialect, model, fields, observed)
        assert codec(dialect).decode(text) == expected, text
        assert codec(dialect).decode(text.encode()) == expected  # a binary frame


def test_the_events_the_call_uses_are_exactly_those_the_codec_decodes(dialect: Dialect) -> None:
    """Against every server event type the SDK knows: each name the codec reacts to is a
    real one in its dialect (a misspelt name would never match), and every other one
    decodes into None."""
    known = server_event_types(dialect)
    assert USED_BY[dialect] <= known
    function_call = {"type": "function_call", "call_id": "call_1", "name": "end_call"}
    fields = {"item_id": "item_1", "transcript": "x", "name": "end_call", "item": function_call}
    decoded = {t for t in known if codec(dialect).decode(json.dumps({"type": t, **fields}))}
    assert decoded == USED_BY[dialect]


def function_call_events(dialect: Dialect) -> list[str]:
    """The server events of one function call, each exactly as the SDK's models describe
    it (nothing observed added): the item added, its arguments streamed and done, the item
    done."""
    ids = {"response_id": "resp_1", "output_index": 0}
    call = {"call_id": "call_1", "item_id": "item_1", **ids}
    item = {"id": "item_1", "type": "function_call", "call_id": "call_1", "name": "end_call"}
    arguments = '{"reason": "done"}'
    name = {"name": "end_call"} if dialect is GA else {}  # beta's model has none
    return [
        server_event(
            dialect,
            "ResponseOutputItemAddedEvent",
            {"type": "response.output_item.added", "item": {**item, "arguments": ""}, **ids},
        ),
        server_event(
            dialect,
            "ResponseFunctionCallArgumentsDeltaEvent",
            {"type": "response.function_call_arguments.delta", "delta": arguments, **call},
        ),
        server_event(
            dialect,
            "ResponseFunctionCallArgumentsDoneEvent",
            {
                "type": "response.function_call_arguments.done",
                "arguments": arguments,
                **name,
                **call,
            },
        ),
        server_event(
            dialect,
            "ResponseOutputItemDoneEvent",
            {
                "type": "response.output_item.done",
                "item": {**item, "arguments": arguments, "status": "completed"},
                **ids,
            },
        ),
    ]


@pytest.mark.parametrize(
    "dialect",
    [
        GA,
        BETA,
    ],
    ids=str,
)
def test_a_function_call_as_the_sdk_describes_it_is_carried_out_once_with_its_name(
    dialect: Dialect,
) -> None:
    heard = [codec(dialect).decode(text) for text in function_call_events(dialect)]
    calls = [event for event in heard if isinstance(event, FunctionCallRequested)]
    # Named by its arguments' done (where the server sends the name) and by its item's
    # done: the same call each time, which the call core carries out once (by call_id).
    assert calls
    assert set(calls) == {
        FunctionCallRequested("call_1", "end_call", '{"reason": "done"}', "resp_1")
    }
    stream = Stream(CallConfig(builtin_tools=frozenset({"end_call"})))
    stream.handle(start(), 0.0)
    stream.handle(BackendOpened(), 0.0)
    stream.handle(SessionUpdated(), 0.0)
    endings = [a for event in calls for a in stream.handle(event, 0.1)]
    assert [type(a).__name__ for a in endings].count("AddToolOutput") == 1


def test_ga_names_its_events_as_ga_does_and_beta_keeps_its_older_names() -> None:
    delta = {"response_id": "r", "item_id": "i", "content_index": 0, "delta": "AAAA"}
    beta_delta = json.dumps({"type": "response.audio.delta", **delta})
    assert BetaCodec().decode(beta_delta) == AudioDelta("r", "i", 0, "AAAA")
    assert RealtimeCodec().decode(beta_delta) is None  # not a GA event
    done = json.dumps({"type": "response.audio_transcript.done", "item_id": "i", "transcript": "t"})
    assert BetaCodec().decode(done) == AssistantTranscribed("i", "t")
    assert RealtimeCodec().decode(done) is None


@settings(max_examples=100, deadline=None)
@given(purpose=st.text(min_size=1), dialect=st.sampled_from(list(Dialect)))
def test_the_purpose_of_a_response_comes_back_in_its_response_created(
    purpose: str, dialect: Dialect
) -> None:
    """What the call asks a response for (a goodbye) is how it tells that response apart:
    the metadata it sends with response.create, echoed in response.created."""
    sent = json.loads(codec(dialect).encode(CreateResponse("Say goodbye.", purpose)))
    response = {"id": "resp_9", "metadata": sent["response"]["metadata"]}
    text = server_event(
        dialect, "ResponseCreatedEvent", {"type": "response.created", "response": response}
    )
    assert codec(dialect).decode(text) == ResponseCreated("resp_9", purpose)


# --- in: odd input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["", "not json", "{", '{"type": "error"', b"\xff\xfe", b'{"type":"\xff"}', "NaN"]
)
def test_what_is_not_json_is_invalid(dialect: Dialect, text: str | bytes) -> None:
    assert codec(dialect).decode(text) == BackendEventInvalid("is not JSON")


@pytest.mark.parametrize("text", ["[]", '[{"type": "error"}]', "1", '"error"', "null", "true"])
def test_what_is_not_an_object_is_invalid(dialect: Dialect, text: str) -> None:
    assert codec(dialect).decode(text) == BackendEventInvalid("is not an object")


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"type": None},
        {"type": 1},
        {"type": ["error"]},
        {"type": {"name": "error"}},
        {"type": "no.such.event"},
        {"type": "ERROR"},
        {"type": " error"},
        {"event": "error"},
    ],
)
def test_an_event_without_a_known_type_is_none(dialect: Dialect, event: dict[str, Any]) -> None:
    assert codec(dialect).decode(json.dumps(event)) is None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        # A gateway may leave response_id out: the core takes the response in progress.
        ({"item_id": "i", "content_index": 0, "delta": "AAAA"}, AudioDelta(None, "i", 0, "AAAA")),
        ({"response_id": "", "item_id": "i", "delta": "AAAA"}, AudioDelta(None, "i", 0, "AAAA")),
        ({"response_id": None, "item_id": "i", "delta": "AAAA"}, AudioDelta(None, "i", 0, "AAAA")),
        ({"response_id": "r", "delta": "AAAA"}, AudioDelta("r", "", 0, "AAAA")),
        ({"response_id": "r", "item_id": None, "delta": "AAAA"}, AudioDelta("r", "", 0, "AAAA")),
        (
            {"response_id": "r", "item_id": "i", "content_index": "1", "delta": "AAAA"},
            AudioDelta("r", "i", 0, "AAAA"),
        ),
        (
            {"response_id": "r", "item_id": "i", "content_index": 2, "delta": "AAAA"},
            AudioDelta("r", "i", 2, "AAAA"),
        ),
        ({"response_id": "r", "item_id": "i"}, AudioDelta("r", "i", 0, "")),
        ({"response_id": "r", "item_id": "i", "delta": 12}, AudioDelta("r", "i", 0, "")),
        ({"response_id": "r", "item_id": "i", "delta": ["AAAA"]}, AudioDelta("r", "i", 0, "")),
    ],
)
def test_a_delta_with_fields_missing_or_ill_typed(
    dialect: Dialect, fields: dict[str, Any], expected: AudioDelta
) -> None:
    text = json.dumps({"type": NAMES["delta"][dialect], **fields})
    assert codec(dialect).decode(text) == expected


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"type": "input_audio_buffer.speech_stopped"}, SpeechStopped(None)),
        ({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": "12"}, SpeechStopped(None)),
        ({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": True}, SpeechStopped(None)),
        ({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 12.5}, SpeechStopped(12.5)),
        ({"type": "input_audio_buffer.committed"}, InputCommitted("")),
        ({"type": "input_audio_buffer.committed", "item_id": 7}, InputCommitted("")),
        (
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": "i",
                "transcript": None,
                "usage": {"type": "duration", "seconds": 2.5},
            },
            # Paid for even without a transcript: the usage still counts.
            CallerTranscribed("i", None, {"type": "duration", "seconds": 2.5}),
        ),
        ({"type": "response.created"}, ResponseCreated(None, None)),
        ({"type": "response.created", "response": "resp_1"}, ResponseCreated(None, None)),
        (
            {"type": "response.created", "response": {"id": "r", "metadata": "goodbye"}},
            ResponseCreated("r", None),
        ),
        (
            {"type": "response.created", "response": {"id": "r", "metadata": {"phone_bridge": 1}}},
            ResponseCreated("r", None),
        ),
        ({"type": "response.created", "response": {"id": 5}}, ResponseCreated(None, None)),
        ({"type": "response.done"}, ResponseDone(None)),
        ({"type": "response.done", "response": []}, ResponseDone(None)),
        (
            {"type": "response.done", "response": {"id": "r", "status": 3}},
            ResponseDone("r", None),
        ),
        (
            {"type": "response.function_call_arguments.done", "name": "end_call"},
            FunctionCallRequested(None, "end_call", "{}"),
        ),
        (
            {
                "type": "response.function_call_arguments.done",
                "call_id": "c",
                "name": "end_call",
                "arguments": {"reason": "x"},
                "response_id": "",
            },
            FunctionCallRequested("c", "end_call", "{}", None),
        ),
        ({"type": "error"}, BackendError(None, None)),
        ({"type": "error", "error": "boom"}, BackendError(None, None)),
        ({"type": "error", "error": {"code": 42, "message": 7}}, BackendError("42", "7")),
        ({"type": "conversation.item.truncated"}, ItemTruncated(None, None)),
        ({"type": "session.created", "session": "s"}, SessionCreated(None)),
        ({"type": "session.created", "session": {"model": ""}}, SessionCreated(None)),
    ],
)
def test_fields_missing_or_ill_typed(
    dialect: Dialect, event: dict[str, Any], expected: BackendEvent
) -> None:
    assert codec(dialect).decode(json.dumps(event)) == expected


@pytest.mark.parametrize(
    "event",
    [
        {"item_id": "i"},
        {"transcript": "It shipped."},
        {"item_id": "", "transcript": "It shipped."},
        {"item_id": "i", "transcript": None},
        {"item_id": "i", "transcript": ["It shipped."]},
    ],
)
def test_an_assistant_transcript_without_its_item_or_text_is_none(
    dialect: Dialect, event: dict[str, Any]
) -> None:
    text = json.dumps({"type": NAMES["transcript done"][dialect], **event})
    assert codec(dialect).decode(text) is None


def session_updated(session: object) -> str:
    return json.dumps({"type": "session.updated", "session": session})


@pytest.mark.parametrize(
    ("audio", "stated"),
    [
        ({"format": {"type": "audio/pcm", "rate": 16000}}, "audio/pcm at 16000 Hz"),
        ({"format": {"type": "audio/pcm", "rate": 24000}}, AudioFormat.PCM16),
        ({"format": {"type": "audio/pcm"}}, AudioFormat.PCM16),  # 24 kHz is its only rate
        ({"format": {"type": "audio/pcma"}}, AudioFormat.PCMA),
        ({"format": {"type": "audio/opus"}}, "audio/opus"),
        # Not stated (a terse gateway): the benefit of the doubt.
        ({"format": {}}, None),
        ({"format": {"type": None}}, None),
        ({"format": "audio/pcmu"}, None),
        ({}, None),
    ],
)
def test_ga_session_updated_says_which_format_it_took_each_way(
    audio: dict[str, Any], stated: AudioFormat | str | None
) -> None:
    for way, other in (("input", "output"), ("output", "input")):
        session = {"audio": {way: audio, other: {"format": {"type": "audio/pcmu"}}}}
        event = RealtimeCodec().decode(session_updated(session))
        assert isinstance(event, SessionUpdated)
        formats = {way: stated, other: AudioFormat.PCMU}
        assert (event.input_format, event.output_format) == (formats["input"], formats["output"])


@pytest.mark.parametrize(
    ("name", "stated"),
    [
        ("g711_ulaw", AudioFormat.PCMU),
        ("g711_alaw", AudioFormat.PCMA),
        ("pcm16", AudioFormat.PCM16),
        ("opus", "opus"),
        (None, None),
    ],
)
def test_beta_session_updated_says_which_format_it_took_each_way(
    name: str | None, stated: AudioFormat | str | None
) -> None:
    session = {"input_audio_format": name, "output_audio_format": "g711_ulaw"}
    event = BetaCodec().decode(session_updated(session))
    assert event == SessionUpdated(None, stated, AudioFormat.PCMU, False)
    session = {"input_audio_format": "g711_ulaw", "output_audio_format": name}
    event = BetaCodec().decode(session_updated(session))
    assert event == SessionUpdated(None, AudioFormat.PCMU, stated, False)


@pytest.mark.parametrize("session", [{}, None, "s", [], {"audio": None}, {"audio": {"input": 1}}])
def test_a_session_updated_that_states_nothing(dialect: Dialect, session: object) -> None:
    """Formats not stated: taken as asked. Turn detection not stated: read as none, so the
    bridge cancels answers itself (at worst a harmless response_cancel_not_active)."""
    assert codec(dialect).decode(session_updated(session)) == SessionUpdated(
        None, None, None, interrupts_by_itself=False
    )


def test_each_dialect_reads_turn_detection_where_it_puts_it() -> None:
    ga = {"audio": {"input": {"turn_detection": {"type": "server_vad"}}}}
    beta = {"turn_detection": {"type": "server_vad"}}
    assert RealtimeCodec().decode(session_updated(ga)) == SessionUpdated()
    assert BetaCodec().decode(session_updated(beta)) == SessionUpdated()
    assert RealtimeCodec().decode(session_updated(beta)) == SessionUpdated(
        interrupts_by_itself=False
    )
    assert BetaCodec().decode(session_updated(ga)) == SessionUpdated(interrupts_by_itself=False)
