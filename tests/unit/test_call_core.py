"""The sans-I/O call core: events in, actions out, time passed in explicitly."""

from __future__ import annotations

import base64
import json

import pytest

from bridge.core.call_config import SessionSettings
from bridge.core.transcript import Transcript as Conversation
from bridge.realtime.dialects import Dialect
from tests.legacy.call_api import (
    Call,
    CallConfig,
    EndCall,
    HangUp,
    OpenRealtime,
    ReconnectRealtime,
    SendToRealtime,
    SendToTwilio,
    decoded_length,
)

STREAM = "MZ00000000000000000000000000000001"
CALL = "CA00000000000000000000000000000001"

DELTA_NAME = {Dialect.GA: "response.output_audio.delta", Dialect.BETA: "response.audio.delta"}
AUDIO_DONE_NAME = {Dialect.GA: "response.output_audio.done", Dialect.BETA: "response.audio.done"}


def twilio(event: str, **fields: object) -> str:
    return json.dumps({"event": event, "streamSid": STREAM, **fields})


def start_message(params: dict[str, str] | None = None) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": STREAM,
            "start": {
                "accountSid": "AC1",
                "streamSid": STREAM,
                "callSid": CALL,
                "tracks": ["inbound"],
                "customParameters": params or {"CallSid": CALL},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )


def to_twilio(actions: list) -> list[dict]:
    return [json.loads(a.text) for a in actions if isinstance(a, SendToTwilio)]


def to_realtime(actions: list) -> list[dict]:
    return [json.loads(a.text) for a in actions if isinstance(a, SendToRealtime)]


def truncations(actions: list) -> list[tuple[str, int]]:
    return [
        (e["item_id"], e["audio_end_ms"])
        for e in to_realtime(actions)
        if e["type"] == "conversation.item.truncate"
    ]


class Harness:
    """A started, bridged call plus shorthands for the server events the tests need."""

    def __init__(self, dialect: Dialect = Dialect.GA, **config: object) -> None:
        self.dialect = dialect
        self.call = Call(CallConfig(dialect=dialect, **config))
        self.sent_marks: list[str] = []
        assert isinstance(self.call.receive_twilio(start_message(), 0.0)[0], OpenRealtime)
        self.call.realtime_connected(0.0)

    def server(self, event: dict, now: float) -> list:
        return self.call.receive_realtime(json.dumps(event), now)

    def session_updated(self, interrupt_response: bool = True, now: float = 0.0) -> list:
        turn_detection = {"type": "server_vad", "interrupt_response": interrupt_response}
        if self.dialect is Dialect.BETA:
            session = {"turn_detection": turn_detection}
        else:
            session = {"type": "realtime", "audio": {"input": {"turn_detection": turn_detection}}}
        return self.server({"type": "session.updated", "session": session}, now)

    def response_created(self, response_id: str, now: float) -> list:
        return self.server({"type": "response.created", "response": {"id": response_id}}, now)

    def delta(self, response_id: str, item_id: str, size: int, now: float) -> list:
        actions = self.server(
            {
                "type": DELTA_NAME[self.dialect],
                "response_id": response_id,
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "delta": base64.b64encode(b"\xff" * size).decode(),
            },
            now,
        )
        self.sent_marks += [m["mark"]["name"] for m in to_twilio(actions) if m["event"] == "mark"]
        return actions

    def audio_done(self, response_id: str, item_id: str, now: float) -> list:
        event = {"type": AUDIO_DONE_NAME[self.dialect], "response_id": response_id}
        return self.server({**event, "item_id": item_id}, now)

    def response_done(self, response_id: str, now: float, status: str = "completed") -> list:
        event = {"type": "response.done", "response": {"id": response_id, "status": status}}
        return self.server(event, now)

    def speech_started(self, now: float) -> list:
        return self.server({"type": "input_audio_buffer.speech_started", "item_id": "u"}, now)

    def echo(self, mark: str, now: float) -> list:
        return self.call.receive_twilio(twilio("mark", mark={"name": mark}), now)


@pytest.fixture(params=[Dialect.GA, Dialect.BETA], ids=["ga", "beta"])
def h(request: pytest.FixtureRequest) -> Harness:
    harness = Harness(request.param)
    harness.session_updated()
    return harness


# --- the call path ---------------------------------------------------------------------------


def test_start_opens_one_realtime_session_with_the_call_parameters() -> None:
    call = Call()
    actions = call.receive_twilio(start_message({"CallSid": CALL, "From": "+1555"}), 0.0)
    assert actions == [OpenRealtime(CALL, {"CallSid": CALL, "From": "+1555"})]
    assert call.receive_twilio(start_message(), 0.1) == []  # a second start opens nothing


@pytest.mark.parametrize("dialect", list(Dialect))
def test_session_update_asks_for_mulaw_both_ways_voice_instructions_and_server_vad(
    dialect: Dialect,
) -> None:
    call = Call(CallConfig(dialect=dialect, session=SessionSettings(instructions="Be brief.")))
    call.receive_twilio(start_message(), 0.0)
    [update] = to_realtime(call.realtime_connected(0.0))
    session = update["session"]
    assert update["type"] == "session.update"
    if dialect is Dialect.GA:
        assert session["type"] == "realtime"
        assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
        assert session["audio"]["output"]["format"] == {"type": "audio/pcmu"}
        assert session["audio"]["output"]["voice"] == "marin"
        assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    else:
        assert session["input_audio_format"] == session["output_audio_format"] == "g711_ulaw"
        assert session["voice"] == "marin"
        assert session["turn_detection"]["type"] == "server_vad"
    assert session["instructions"] == "Be brief."


def test_caller_audio_passes_through_untouched_in_order() -> None:
    call = Call()
    call.receive_twilio(start_message(), 0.0)
    payloads = [base64.b64encode(bytes([i]) * 160).decode() for i in range(5)]
    # Audio that arrives while the Realtime socket opens is kept and sent after the config.
    for p in payloads[:3]:
        assert call.receive_twilio(twilio("media", media={"payload": p}), 0.0) == []
    sent = to_realtime(call.realtime_connected(0.0))
    for p in payloads[3:]:
        sent += to_realtime(call.receive_twilio(twilio("media", media={"payload": p}), 0.1))
    assert sent[0]["type"] == "session.update"
    assert [e["audio"] for e in sent[1:]] == payloads
    assert {e["type"] for e in sent[1:]} == {"input_audio_buffer.append"}


def test_audio_before_start_or_for_another_stream_is_dropped() -> None:
    call = Call()
    media = twilio("media", media={"payload": "/w=="})
    assert call.receive_twilio(media, 0.0) == []
    call.receive_twilio(start_message(), 0.0)
    call.realtime_connected(0.0)
    other = json.dumps({"event": "media", "streamSid": "MZother", "media": {"payload": "/w=="}})
    assert call.receive_twilio(other, 0.0) == []
    assert len(call.receive_twilio(media, 0.0)) == 1


def test_malformed_twilio_messages_are_dropped_without_ending_the_call() -> None:
    h = Harness()
    for bad in ["{", "[]", '{"event":"media"}', '{"event":"bogus"}', '{"event":"mark"}']:
        assert h.call.receive_twilio(bad, 0.0) == []
    media = twilio("media", media={"payload": "/w=="})
    assert len(h.call.receive_twilio(media, 0.0)) == 1


def test_model_audio_goes_to_twilio_with_a_uniquely_named_mark_after_each_chunk(
    h: Harness,
) -> None:
    h.response_created("r1", 0.0)
    out = to_twilio(h.delta("r1", "a", 800, 0.0) + h.delta("r1", "a", 480, 0.0))
    assert [m["event"] for m in out] == ["media", "mark", "media", "mark"]
    assert base64.b64decode(out[0]["media"]["payload"]) == b"\xff" * 800
    assert all(m["streamSid"] == STREAM for m in out)
    assert h.sent_marks == ["a:800", "a:1280"]
    h.response_created("r2", 1.0)
    h.delta("r2", "b", 800, 1.0)
    assert len(set(h.sent_marks)) == len(h.sent_marks) == 3


def test_greeting_is_requested_only_after_session_updated() -> None:
    h = Harness(greeting="Hello, you reached the demo line.")
    assert h.call.realtime_connected(0.0) == []
    [request] = to_realtime(h.session_updated())
    assert request["type"] == "response.create"
    assert "Hello, you reached the demo line." in request["response"]["instructions"]
    assert h.session_updated() == []  # later session.updated events do not greet again


def test_stop_and_closed_sockets_end_the_call_once() -> None:
    h = Harness()
    assert h.call.receive_twilio(twilio("stop", stop={"callSid": CALL}), 1.0) == [
        EndCall("the caller hung up")
    ]
    assert h.call.twilio_closed() == []
    assert h.call.realtime_closed("gone", 1.0) == []
    h2 = Harness()
    [end] = h2.call.realtime_closed("connection lost", 1.0)
    assert isinstance(end, EndCall) and "connection lost" in end.reason


# --- barge-in --------------------------------------------------------------------------------


def test_barge_in_mid_item_clears_and_truncates_at_what_was_heard(h: Harness) -> None:
    h.response_created("r1", 0.0)
    h.delta("r1", "a", 800, 0.0)  # 100 ms
    h.delta("r1", "a", 800, 0.0)  # 100 ms more, queued behind it
    h.echo("a:800", 0.100)  # the first 100 ms have played
    actions = h.speech_started(0.160)  # 60 ms into the second chunk
    assert to_twilio(actions)[0] == {"event": "clear", "streamSid": STREAM}
    assert truncations(actions) == [("a", 160)]
    # no response.cancel: the session interrupts by itself
    assert "response.cancel" not in [e["type"] for e in to_realtime(actions)]
    assert [m["mark"]["name"] for m in to_twilio(actions)[1:]] == ["truncated:a:160"]


def test_truncation_after_a_model_stall_counts_only_audio_that_played(h: Harness) -> None:
    h.response_created("r1", 0.0)
    h.delta("r1", "a", 800, 0.0)
    h.echo("a:800", 0.100)  # played; Twilio's queue is now empty
    h.delta("r1", "a", 800, 0.700)  # the model stalled for 600 ms
    actions = h.speech_started(0.750)
    # 100 ms + 50 ms of the late chunk. Start-of-item wall clock would claim 750 ms, more
    # than the 200 ms that exist, and the server would reject the truncate.
    assert truncations(actions) == [("a", 150)]


def test_barge_in_while_the_model_stalls_truncates_at_everything_sent(h: Harness) -> None:
    h.response_created("r1", 0.0)
    h.delta("r1", "a", 800, 0.0)
    h.echo("a:800", 0.100)
    actions = h.speech_started(0.400)  # silence on the line, the answer not finished
    assert to_twilio(actions) == []  # nothing queued, nothing to clear
    assert truncations(actions) == [("a", 100)]
    assert h.delta("r1", "a", 800, 0.410) == []


def test_no_clear_or_truncate_once_playback_has_finished(h: Harness) -> None:
    h.response_created("r1", 0.0)
    h.delta("r1", "a", 800, 0.0)
    h.audio_done("r1", "a", 0.01)
    h.response_done("r1", 0.02)
    h.echo("a:800", 0.100)
    assert h.speech_started(0.5) == []
    assert h.call.barge_ins == []


def test_playback_finished_even_when_the_last_echo_comes_after_audio_done(h: Harness) -> None:
    h.response_created("r1", 0.0)
    h.delta("r1", "a", 800, 0.0)
    h.echo("a:800", 0.100)
    h.audio_done("r1", "a", 0.2)
    h.response_done("r1", 0.2)
    assert h.speech_started(0.5) == []


def test_a_response_of_two_items_truncates_the_playing_one_and_zeroes_the_next(
    h: Harness,
) -> None:
    h.response_created("r1", 0.0)
    h.delta("r1", "a", 800, 0.0)
    h.audio_done("r1", "a", 0.0)
    h.delta("r1", "b", 800, 0.0)
    h.delta("r1", "b", 800, 0.0)
    h.audio_done("r1", "b", 0.0)
    h.response_done("r1", 0.0)
    h.echo("a:800", 0.100)  # item a heard in full: nothing to truncate there
    actions = h.speech_started(0.130)
    assert truncations(actions) == [("b", 30)]

    h2 = Harness(h.dialect)
    h2.session_updated()
    h2.response_created("r1", 0.0)
    h2.delta("r1", "a", 800, 0.0)
    h2.delta("r1", "b", 800, 0.0)
    actions = h2.speech_started(0.050)  # still in item a; b queued, never heard
    assert truncations(actions) == [("a", 50), ("b", 0)]


def test_mark_echoes_caused_by_a_clear_do_not_count_as_playback(h: Harness) -> None:
    h.response_created("r1", 0.0)
    for _ in range(3):
        h.delta("r1", "a", 800, 0.0)
    h.echo("a:800", 0.1)
    h.speech_started(0.12)
    # Twilio now echoes the flushed marks at once; none of them was heard.
    for mark in ["a:1600", "a:2400", "truncated:a:120"]:
        assert h.echo(mark, 0.125) == []
    h.response_done("r1", 0.13, status="cancelled")
    h.response_created("r2", 1.0)
    h.delta("r2", "b", 800, 1.0)
    h.delta("r2", "b", 800, 1.0)
    actions = h.speech_started(1.040)
    assert truncations(actions) == [("b", 40)]


def test_deltas_of_the_interrupted_response_are_dropped_and_the_next_response_plays(
    h: Harness,
) -> None:
    h.response_created("r1", 0.0)
    h.delta("r1", "a", 800, 0.0)
    h.speech_started(0.05)
    assert h.delta("r1", "a", 800, 0.06) == []
    assert h.delta("r1", "a2", 800, 0.07) == []  # even a new item of the same response
    h.response_done("r1", 0.08, status="cancelled")
    h.response_created("r2", 1.0)
    assert [m["event"] for m in to_twilio(h.delta("r2", "b", 800, 1.0))] == ["media", "mark"]


def test_response_cancel_is_sent_only_without_auto_interrupt_and_only_once() -> None:
    h = Harness()
    h.session_updated(interrupt_response=False)
    h.response_created("r1", 0.0)
    h.delta("r1", "a", 800, 0.0)
    first = [e["type"] for e in to_realtime(h.speech_started(0.05))]
    assert first == ["response.cancel", "conversation.item.truncate"]
    assert "response.cancel" not in [e["type"] for e in to_realtime(h.speech_started(0.06))]

    idle = Harness()
    idle.session_updated(interrupt_response=False)
    assert idle.speech_started(0.0) == []  # no response in progress: nothing to cancel


def test_speech_while_a_response_is_starting_but_silent_sends_nothing_but_drops_it(
    h: Harness,
) -> None:
    h.response_created("r1", 0.0)
    assert h.speech_started(0.01) == []  # auto-interrupting session cancels it itself
    assert h.delta("r1", "a", 800, 0.02) == []


def test_truncation_stays_exact_across_many_turns_with_stalls_and_varied_chunks(
    h: Harness,
) -> None:
    """Twenty turns against an exact model of Twilio's playback (zero network delay)."""
    now = 0.0
    for turn in range(20):
        rid, iid = f"r{turn}", f"i{turn}"
        h.response_created(rid, now)
        sizes = [160 * (1 + (turn + k) % 7) for k in range(6)]
        playhead = now  # when Twilio's queue runs dry
        queue: list[tuple[float, str]] = []  # (time the mark echoes, mark)
        sent = 0
        for k, size in enumerate(sizes):
            send_at = now + (0.4 if k == 3 and turn % 3 == 0 else 0.0)  # a stall now and then
            now = send_at
            h.delta(rid, iid, size, send_at)
            sent += size
            playhead = max(playhead, send_at) + size / 8000
            queue.append((playhead, h.sent_marks[-1]))
        barge_at = now + 0.0317 * (1 + turn % 5)
        heard = 0
        for echo_at, mark in queue:
            if echo_at <= barge_at:
                h.echo(mark, echo_at)
                heard = int(mark.split(":")[1])
        # the chunk playing at barge_at started when the previous one ended (or was sent)
        playing = next(((t, m) for t, m in queue if t > barge_at), None)
        if playing is not None:
            end_at, mark = playing
            size = int(mark.split(":")[1]) - heard
            heard += round((barge_at - (end_at - size / 8000)) * 8000)
        actions = h.speech_started(barge_at)
        if playing is None:
            # All sent audio played but the answer is not finished: cut at what was sent.
            assert truncations(actions) == [(iid, sent // 8)]
        else:
            [(item, ms)] = truncations(actions)
            assert item == iid
            assert abs(ms - heard / 8) <= 1, (turn, ms, heard / 8)
            assert ms <= sent / 8
        h.response_done(rid, barge_at, status="cancelled")
        now = barge_at + 1.0


@pytest.mark.parametrize(
    ("size", "b64"),
    [(n, base64.b64encode(b"x" * n).decode()) for n in [0, 1, 2, 3, 4, 159, 160, 161]],
)
def test_decoded_length_matches_base64_without_decoding(size: int, b64: str) -> None:
    assert decoded_length(b64) == size
    assert decoded_length(b64.rstrip("=")) == size


# --- what the review found ------------------------------------------------------------------


def test_a_refused_session_update_ends_the_call_so_the_caller_hears_the_apology() -> None:
    h = Harness()
    refused = {"type": "error", "error": {"type": "invalid_request_error", "code": "invalid_value"}}
    [end] = h.server(refused, 0.1)
    assert isinstance(end, EndCall) and "refused" in end.reason

    configured = Harness()
    configured.session_updated()
    assert configured.server(refused, 0.1) == []  # later errors are logged, not fatal


@pytest.mark.parametrize("dialect", list(Dialect))
def test_a_session_that_did_not_take_mulaw_ends_the_call(dialect: Dialect) -> None:
    h = Harness(dialect)
    if dialect is Dialect.BETA:
        session = {"input_audio_format": "pcm16", "output_audio_format": "pcm16"}
    else:
        session = {"audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}}}}
    [end] = h.server({"type": "session.updated", "session": session}, 0.1)
    assert isinstance(end, EndCall)


def test_no_model_audio_plays_before_the_session_is_configured() -> None:
    h = Harness()
    h.response_created("r1", 0.0)
    assert h.delta("r1", "a", 800, 0.0) == []


def test_deltas_without_a_response_id_still_play_after_an_earlier_barge_in(h: Harness) -> None:
    def delta_without_response_id(item: str, now: float) -> list:
        payload = base64.b64encode(b"\xff" * 800).decode()
        return h.server({"type": DELTA_NAME[h.dialect], "item_id": item, "delta": payload}, now)

    h.response_created("r1", 0.0)
    delta_without_response_id("a", 0.0)
    assert truncations(h.speech_started(0.05)) == [("a", 50)]
    assert delta_without_response_id("a", 0.06) == []  # r1 was interrupted
    h.response_done("r1", 0.07, status="cancelled")
    h.response_created("r2", 1.0)
    assert len(delta_without_response_id("b", 1.0)) == 2


def test_item_ids_that_need_json_escaping_still_match_their_echoes(h: Harness) -> None:
    item = 'odd"item\\id'
    h.response_created("r1", 0.0)
    out = to_twilio(h.delta("r1", item, 800, 0.0) + h.delta("r1", item, 800, 0.0))
    names = [m["mark"]["name"] for m in out if m["event"] == "mark"]
    assert names == [f"{item}:800", f"{item}:1600"]
    h.echo(names[0], 0.1)
    assert truncations(h.speech_started(0.125)) == [(item, 125)]


def test_truncate_names_the_content_part_the_audio_came_from(h: Harness) -> None:
    h.response_created("r1", 0.0)
    payload = base64.b64encode(b"\xff" * 800).decode()
    event = {"type": DELTA_NAME[h.dialect], "response_id": "r1", "item_id": "a", "delta": payload}
    h.server({**event, "content_index": 1}, 0.0)
    [truncate] = [e for e in to_realtime(h.speech_started(0.05)) if "item_id" in e]
    assert truncate["content_index"] == 1


def test_keypad_digits_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    for digit in "4111":
        h.call.receive_twilio(twilio("dtmf", dtmf={"track": "inbound_track", "digit": digit}), 0)
    assert "4" not in " ".join(r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("rate", ['"8000"', "null", "8000.5", "true", '{"a":1}'])
def test_a_start_with_a_broken_media_format_is_dropped_not_fatal(rate: str) -> None:
    call = Call()
    message = start_message().replace('"sampleRate": 8000', f'"sampleRate": {rate}')
    assert call.receive_twilio(message, 0.0) == []
    assert isinstance(call.receive_twilio(start_message(), 0.0)[0], OpenRealtime)


# --- clock: start timeout, time limit, goodbyes ----------------------------------------------


GOODBYE = {"phone_bridge": "goodbye"}


def realtime_types(actions: list) -> list[str]:
    return [e["type"] for e in to_realtime(actions)]


def test_a_socket_that_never_sends_start_is_closed() -> None:
    call = Call(CallConfig(start_timeout_s=10))
    assert call.tick(100.0) == []
    assert call.tick(109.9) == []
    [end] = call.tick(110.0)
    assert isinstance(end, EndCall)


def test_at_the_time_limit_the_assistant_says_goodbye_then_hangs_up_once_heard(
    h: Harness,
) -> None:
    h = Harness(h.dialect, max_duration_s=60, time_limit_message="Time is up. Bye!")
    h.session_updated()
    assert h.call.tick(59.9) == []
    actions = h.call.tick(60.0)
    assert realtime_types(actions) == ["session.update", "response.create"]
    update, request = to_realtime(actions)
    turn_detection = (
        update["session"]["turn_detection"]
        if h.dialect is Dialect.BETA
        else update["session"]["audio"]["input"]["turn_detection"]
    )
    assert turn_detection is None  # nothing the caller says can cut the goodbye
    assert request["response"]["instructions"].endswith("Time is up. Bye!")
    # the caller's words no longer reach the model
    assert h.call.receive_twilio(twilio("media", media={"payload": "/w=="}), 60.1) == []

    h.server({"type": "response.created", "response": {"id": "bye", "metadata": GOODBYE}}, 60.2)
    h.delta("bye", "g", 800, 60.2)
    h.audio_done("bye", "g", 60.2)
    assert h.response_done("bye", 60.3) == []  # generated, not yet heard
    assert h.echo("g:800", 60.3) == [HangUp("time limit reached")]
    assert h.call.tick(100.0) == []


def test_a_time_limit_mid_answer_stops_it_and_speaks_after_the_cancel_lands() -> None:
    h = Harness(max_duration_s=60)
    h.session_updated()  # auto-interrupt on: still the bridge must cancel, nobody spoke
    h.response_created("r1", 59.0)
    h.delta("r1", "a", 8000, 59.0)  # 1 s of answer, 0.5 s heard by the limit
    actions = h.call.tick(59.5 + 0.5)
    assert to_twilio(actions)[0]["event"] == "clear"
    assert realtime_types(actions) == [
        "response.cancel",
        "conversation.item.truncate",
        "session.update",
    ]
    assert truncations(actions) == [("a", 1000)]
    assert h.call.barge_ins == []  # not the caller's doing
    assert h.delta("r1", "a", 800, 60.1) == []
    assert realtime_types(h.response_done("r1", 60.2, status="cancelled")) == ["response.create"]


def test_a_goodbye_that_is_not_heard_in_time_still_hangs_up() -> None:
    h = Harness(max_duration_s=60, goodbye_timeout_s=15)
    h.session_updated()
    h.call.tick(60.0)
    assert h.call.tick(74.9) == []
    assert h.call.tick(75.0) == [HangUp("time limit reached")]


def test_a_goodbye_before_the_session_is_configured_hangs_up_at_once() -> None:
    h = Harness()
    assert h.call.say_goodbye("Bye", "server shutting down", 1.0) == [
        HangUp("the server is shutting down")
    ]


# --- bad input from Twilio's side -------------------------------------------------------------


def media(payload: str) -> str:
    return twilio("media", media={"payload": payload})


@pytest.mark.parametrize(
    "payload", ["", "abc", "ab=c", "a===", "////=///", "é" * 4, 'AAA"', "AA AA", "/w==/w=="]
)
def test_caller_audio_that_is_not_base64_is_dropped(payload: str) -> None:
    h = Harness()
    assert h.call.receive_twilio(media(payload), 0.0) == []
    assert len(h.call.receive_twilio(media("/w=="), 0.0)) == 1  # the call goes on


def test_caller_audio_at_real_time_pace_is_never_dropped() -> None:
    h = Harness()
    frame = base64.b64encode(b"\xff" * 160).decode()
    sent = [h.call.receive_twilio(media(frame), k * 0.020) for k in range(3000)]  # 60 s
    assert all(len(actions) == 1 for actions in sent)


def test_caller_audio_far_faster_than_real_time_is_capped() -> None:
    h = Harness()
    frame = base64.b64encode(b"\xff" * 160).decode()
    # 10 s of audio within one second: the 3 s burst plus 1.5 s of sustained rate pass.
    forwarded = sum(len(h.call.receive_twilio(media(frame), k * 0.002)) for k in range(500))
    assert 3.0 * 50 <= forwarded <= 4.6 * 50


def test_a_message_flood_ends_the_call_once() -> None:
    h = Harness()
    mark = twilio("mark", mark={"name": "x"})
    results = [h.call.receive_twilio(mark, 1.0) for _ in range(1000)]
    ends = [a for actions in results for a in actions if isinstance(a, EndCall)]
    assert len(ends) == 1 and "flood" in ends[0].reason


# --- a lost or retired Realtime session -----------------------------------------------------


def transcript_done(h: Harness, item: str, text: str, now: float) -> list:
    kind = (
        "response.output_audio_transcript.done"
        if h.dialect is Dialect.GA
        else "response.audio_transcript.done"
    )
    return h.server({"type": kind, "item_id": item, "transcript": text}, now)


def caller_turn(h: Harness, item: str, text: str, now: float) -> None:
    h.server({"type": "input_audio_buffer.committed", "item_id": item}, now)
    h.server(
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": item,
            "transcript": text,
        },
        now,
    )


def test_a_session_lost_mid_answer_is_reopened_with_the_conversation_and_asked_to_go_on(
    h: Harness,
) -> None:
    caller_turn(h, "u1", "What are your opening hours?", 1.0)
    h.response_created("r1", 1.5)
    h.delta("r1", "a1", 8000, 1.5)  # 1 s of answer queued at Twilio
    lost = h.call.realtime_closed("connection lost", 2.0)
    # What Twilio has plays on through the reconnect: no clear, no gap.
    assert [type(a) for a in lost] == [ReconnectRealtime] and lost[0].delay_s == 0.0
    # The caller keeps talking during the gap: kept for the new session.
    assert h.call.receive_twilio(twilio("media", media={"payload": "/w=="}), 2.05) == []

    restored = to_realtime(h.call.realtime_connected(2.1))
    assert [e["type"] for e in restored] == [
        "session.update",
        "conversation.item.create",
        "response.create",  # the answer was still being generated: carry on
        "input_audio_buffer.append",
    ]
    assert restored[1]["item"]["role"] == "user"
    assert restored[1]["item"]["content"] == [
        {"type": "input_text", "text": "What are your opening hours?"}
    ]
    # No audio plays until the new session confirms its format.
    h.response_created("r2", 2.15)
    assert h.delta("r2", "a2", 800, 2.15) == []
    h.session_updated(now=2.2)
    # A barge-in still stops the old answer and records what was heard of it, but cannot
    # truncate it on a server that never knew it.
    actions = h.speech_started(2.3)
    assert to_twilio(actions)[0]["event"] == "clear"
    assert truncations(actions) == []
    old = next(t for t in h.call.conversation.turns if t.item_id == "a1")
    assert old.heard_ms == 800


def test_a_completed_answer_plays_out_through_a_reconnect_and_is_not_resumed(
    h: Harness,
) -> None:
    h.response_created("r1", 1.0)
    h.delta("r1", "a1", 8000, 1.0)
    h.audio_done("r1", "a1", 1.0)
    transcript_done(h, "a1", "We are open from nine to five.", 1.0)
    h.response_done("r1", 1.0)
    h.call.realtime_closed("connection lost", 1.5)
    restored = to_realtime(h.call.realtime_connected(1.6))
    assert [e["type"] for e in restored] == ["session.update", "conversation.item.create"]
    assert restored[1]["item"]["content"][0]["text"] == "We are open from nine to five."
    h.session_updated(now=1.7)
    assert h.echo("a1:8000", 2.0) == []  # its marks still count
    assert h.speech_started(2.5) == []  # heard in full: nothing to stop


def test_replayed_assistant_turns_are_cut_to_what_the_caller_heard() -> None:
    conversation = Conversation()
    conversation.assistant_transcript("a1", "We are open from nine to five every weekday.")
    conversation.assistant_cut("a1", heard_ms=500, sent_ms=1000)
    conversation.assistant_spoke("a2")  # no transcript: nothing to replay
    assert conversation.replay() == [("assistant", "We are open from nine…")]


def test_reconnects_back_off_and_give_up_with_the_apology_after_the_budget() -> None:
    h = Harness(reconnect_budget_s=10)
    h.session_updated()
    attempts = h.call.realtime_closed("connection lost", 0.0)
    now = 0.0
    while True:
        now += 1.0
        actions = h.call.realtime_closed("refused", now)
        if not actions:
            break
        attempts += actions
    assert [a.delay_s for a in attempts[:5]] == [0.0, 0.25, 0.5, 1.0, 2.0]
    assert all(isinstance(a, ReconnectRealtime) for a in attempts)
    # Each attempt may take what is left of the budget, and none starts that could not:
    # at 8 s the next (2 s of backoff) would begin only as the budget ends.
    assert [a.give_up_after_s for a in attempts[-2:]] == [4.0, 3.0]
    assert now == 8.0
    assert h.call.tick(9.99) == []
    [end] = h.call.tick(10.0)  # the budget is a bound: the call ends on it
    assert isinstance(end, EndCall) and "could not be restored" in end.reason


def test_a_backend_that_never_worked_ends_the_call_at_once() -> None:
    call = Call()
    call.receive_twilio(start_message(), 0.0)
    [end] = call.realtime_closed("refused", 0.1)
    assert isinstance(end, EndCall)


def test_the_greeting_is_not_repeated_in_a_restored_session() -> None:
    h = Harness(greeting="Hello!")
    assert realtime_types(h.session_updated()) == ["response.create"]
    h.call.realtime_closed("connection lost", 1.0)
    h.call.realtime_connected(1.2)
    assert h.session_updated(now=1.3) == []


def test_sessions_roll_over_at_a_quiet_moment_before_the_service_limit() -> None:
    h = Harness(rollover_after_s=100, rollover_grace_s=60)
    h.session_updated()
    assert h.call.tick(99.0) == []
    h.response_created("r1", 99.5)
    h.delta("r1", "a", 8000, 99.5)
    assert h.call.tick(100.0) == []  # mid-answer: wait for a pause
    h.audio_done("r1", "a", 99.6)
    h.response_done("r1", 99.6)
    h.echo("a:8000", 100.5)
    [rollover] = h.call.tick(100.75)
    assert isinstance(rollover, ReconnectRealtime) and rollover.delay_s == 0.0
    assert realtime_types(h.call.realtime_connected(101.0))[0] == "session.update"


def test_a_session_that_is_never_quiet_still_rolls_over_after_the_grace() -> None:
    h = Harness(rollover_after_s=100, rollover_grace_s=60)
    h.session_updated()
    h.response_created("r1", 150.0)
    h.delta("r1", "a", 80000, 150.0)  # 10 s of answer playing
    assert h.call.tick(159.9) == []
    [rollover] = h.call.tick(160.0)
    assert isinstance(rollover, ReconnectRealtime)  # the answer plays on meanwhile
    assert realtime_types(h.call.realtime_connected(160.2))[-1] == "response.create"


def test_no_rollover_while_the_caller_is_mid_sentence() -> None:
    h = Harness(rollover_after_s=100)
    h.session_updated()
    h.server({"type": "input_audio_buffer.speech_started", "item_id": "u"}, 99.0)
    assert h.call.tick(100.0) == []
    h.server({"type": "input_audio_buffer.speech_stopped", "item_id": "u"}, 101.0)
    assert isinstance(h.call.tick(101.25)[-1], ReconnectRealtime)


# --- what the second review found -------------------------------------------------------------


def test_a_backend_that_keeps_dropping_uses_up_one_budget_with_backoff() -> None:
    h = Harness(reconnect_budget_s=10)
    h.session_updated()
    delays, now, actions = [], 0.0, h.call.realtime_closed("lost", 0.0)
    for _ in range(100):  # bounded: a budget that never runs out fails, not hangs
        if not actions or not isinstance(actions[-1], ReconnectRealtime):
            break
        delays.append(actions[-1].delay_s)
        now += 1.0
        h.call.realtime_connected(now)
        h.session_updated(now=now + 0.1)  # configured, then lost again at once
        h.call.tick(now + 0.2)
        actions = h.call.realtime_closed("lost again", now + 0.3)
    assert delays[:5] == [0.0, 0.25, 0.5, 1.0, 2.0]
    assert actions == []  # no attempt fits what is left: the budget's end ends the call
    assert now < 10 and h.call.tick(9.99) == []
    assert isinstance(h.call.tick(10.0)[-1], EndCall)


def test_a_restored_session_that_drops_before_it_is_configured_is_retried() -> None:
    h = Harness()
    h.session_updated()
    h.call.realtime_closed("lost", 1.0)
    h.call.realtime_connected(1.1)
    [again] = h.call.realtime_closed("lost before session.updated", 1.2)
    assert isinstance(again, ReconnectRealtime)


def test_a_healthy_restored_session_gets_a_fresh_budget() -> None:
    h = Harness(reconnect_budget_s=10)
    h.session_updated()
    h.call.realtime_closed("lost", 1.0)
    h.call.realtime_connected(1.1)
    h.session_updated(now=1.2)
    h.call.tick(20.0)  # healthy for long enough
    [action] = h.call.realtime_closed("lost much later", 30.0)
    assert isinstance(action, ReconnectRealtime) and action.delay_s == 0.0


def test_a_backend_closing_during_the_goodbye_never_plays_the_apology() -> None:
    h = Harness(max_duration_s=60)
    h.session_updated()
    h.call.tick(60.0)
    h.server({"type": "response.created", "response": {"id": "bye", "metadata": GOODBYE}}, 60.1)
    h.delta("bye", "g", 800, 60.1)
    h.audio_done("bye", "g", 60.1)
    h.response_done("bye", 60.2)
    assert h.call.realtime_closed("closed", 60.3) == []  # the goodbye is still playing
    assert h.echo("g:800", 60.4) == [HangUp("time limit reached")]

    early = Harness(max_duration_s=60)
    early.session_updated()
    early.call.tick(60.0)
    [hang_up] = early.call.realtime_closed("closed", 60.1)  # not generated: cannot be said
    assert isinstance(hang_up, HangUp)


def test_the_burst_of_echoes_after_a_clear_is_not_a_flood(h: Harness) -> None:
    h.response_created("r1", 0.0)
    for _ in range(450):
        h.delta("r1", "a", 800, 0.0)  # a 45 s answer queued at Twilio
    actions = h.speech_started(0.5)
    assert to_twilio(actions)[0]["event"] == "clear"
    echoes = [h.echo(mark, 0.51) for mark in [*h.sent_marks, "truncated:a:500"]]
    assert all(e == [] for e in echoes)
    assert len(h.call.receive_twilio(twilio("media", media={"payload": "/w=="}), 0.52)) == 1


def test_a_goodbye_is_only_the_response_that_asked_for_it() -> None:
    h = Harness(max_duration_s=60)
    h.session_updated()
    h.call.tick(60.0)
    h.response_created("vad", 60.05)  # a server-VAD answer already on its way
    h.response_done("vad", 60.1)
    assert h.call.phase.value != "ended"


def test_a_question_asked_just_before_a_drop_is_answered_by_the_new_session(
    h: Harness,
) -> None:
    caller_turn(h, "u1", "Are you open on Sunday?", 1.0)
    h.call.realtime_closed("lost", 1.1)  # before response.created
    assert realtime_types(h.call.realtime_connected(1.2))[-1] == "response.create"


def test_no_rollover_between_a_question_and_its_answer() -> None:
    h = Harness(rollover_after_s=100)
    h.session_updated()
    caller_turn(h, "u1", "Are you open on Sunday?", 100.0)
    assert h.call.tick(100.5) == []


def test_a_cut_answer_is_still_resumed_when_the_first_restore_drops_too() -> None:
    h = Harness()
    h.session_updated()
    h.response_created("r1", 1.0)
    h.delta("r1", "a", 800, 1.0)
    h.call.realtime_closed("lost", 1.05)
    assert realtime_types(h.call.realtime_connected(1.1))[-1] == "response.create"
    h.call.realtime_closed("lost before session.updated", 1.15)
    assert realtime_types(h.call.realtime_connected(1.4))[-1] == "response.create"
    h.session_updated(now=1.5)
    h.call.tick(10.0)  # the restored session held: a later loss starts afresh
    [reconnect] = h.call.realtime_closed("lost once the resume had landed", 20.0)
    assert isinstance(reconnect, ReconnectRealtime)
    assert realtime_types(h.call.realtime_connected(20.1)) == ["session.update"]


# --- sessions that never answer, and the reconnect budget as a bound ---------------------------


def silent_session_call(**config: object) -> Call:
    """A started call whose first Realtime socket has just opened (at 0 s)."""
    call = Call(CallConfig(**config))
    call.receive_twilio(start_message(), 0.0)
    call.realtime_connected(0.0)
    return call


@pytest.mark.parametrize(
    ("events", "missing"),
    [([], "session.created"), ([{"type": "session.created", "session": {}}], "session.updated")],
)
def test_a_session_that_stays_silent_is_replaced_at_the_setup_deadline(
    events: list[dict], missing: str, caplog: pytest.LogCaptureFixture
) -> None:
    call = silent_session_call(session_setup_timeout_s=5.0)
    for event in events:
        call.receive_realtime(json.dumps(event), 0.1)
    assert call.tick(4.9) == []
    with caplog.at_level("WARNING", "bridge.call"):
        [replace] = call.tick(5.0)
    assert isinstance(replace, ReconnectRealtime)
    assert missing in replace.reason
    assert [r.getMessage() for r in caplog.records] == [
        f"Realtime session gave no {missing} within 5 s of connecting: replacing it"
    ]


def test_a_reconnected_session_that_stays_silent_ends_the_call_within_the_budget() -> None:
    h = Harness(reconnect_budget_s=4.0, session_setup_timeout_s=3.0)
    h.session_updated()
    [reconnect] = h.call.realtime_closed("connection lost", 10.0)
    assert reconnect.give_up_after_s == 4.0
    h.call.realtime_connected(10.1)  # opens, then never says a word
    [replace] = h.call.tick(13.1)
    assert isinstance(replace, ReconnectRealtime) and replace.give_up_after_s == pytest.approx(0.9)
    h.call.realtime_connected(13.2)  # silent again
    assert h.call.tick(13.9) == []
    [end] = h.call.tick(14.0)  # the budget, to the tick: not one backoff step later
    assert isinstance(end, EndCall) and "could not be restored" in end.reason


def test_the_budget_ends_the_call_while_a_reconnect_is_still_opening() -> None:
    h = Harness(reconnect_budget_s=4.0)
    h.session_updated()
    h.call.realtime_closed("connection lost", 10.0)  # the adapter is opening a socket
    assert h.call.tick(13.99) == []
    [end] = h.call.tick(14.0)
    assert isinstance(end, EndCall)
    assert h.call.realtime_closed("timed out", 14.0) == []  # ended once


def test_a_session_configured_in_time_is_never_replaced() -> None:
    call = silent_session_call(session_setup_timeout_s=5.0)
    call.receive_realtime(json.dumps({"type": "session.created", "session": {}}), 0.1)
    event = {"type": "session.updated", "session": {"type": "realtime"}}
    call.receive_realtime(json.dumps(event), 4.0)
    assert call.tick(60.0) == []
