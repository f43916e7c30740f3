"""INTERRUPTIONS=confirm in the core: the caller talking over the assistant silences it at
once; a cough or an "mm-hm" resumes it from the very byte the caller stopped hearing (the
non-turn taken out of the conversation), and anything else is cut there and answered, as
INTERRUPTIONS=immediate would have. Nothing is ever resumed after a hang-up decision."""

from __future__ import annotations

import base64

from bridge.core import events as ev
from bridge.core.actions import (
    AddToolOutput,
    CancelResponse,
    ClearAudio,
    CreateResponse,
    DeleteItem,
    DisableTurnDetection,
    PlayAudio,
    RunTool,
    SendMark,
    TruncateItem,
)
from bridge.core.call_config import CallConfig, Interruptions, SessionSettings
from bridge.core.interruptions import MAX_HELD_BYTES, TRANSCRIPT_WAIT_S, only_backchannels
from bridge.core.timeline import Moment
from tests.helpers.core_harness import (
    STREAM,
    CallHarness,
    Recorder,
    configured_call,
    kinds,
    of,
)

BACKCHANNELS = frozenset({"mm hm", "mm hmm", "yeah", "uh huh", "i see", "okay"})
SILENCE_S = 0.5  # the session's VAD silence, as configured below


def confirming(
    transcribed: bool = True, recorder: Recorder | None = None, **fields: object
) -> CallHarness:
    """A configured call that confirms interruptions; the session neither interrupts nor
    answers by itself (as the bridge configures it). `fields`: more of the CallConfig's."""
    session = SessionSettings(
        interrupt_response=False,
        create_response=False,
        vad_silence_ms=int(SILENCE_S * 1000),
        transcription_model="gpt-4o-mini-transcribe" if transcribed else None,
    )
    config = CallConfig(
        session=session,
        interruptions=Interruptions.CONFIRM,
        false_interruption_ms=600,
        backchannels=BACKCHANNELS,
        **fields,  # type: ignore[arg-type]
    )
    return configured_call(config, observer=recorder, interrupts_by_itself=False)


def numbered(size: int, start: int) -> str:
    """`size` bytes whose values say where they are in the item (mod 256)."""
    return base64.b64encode(bytes((start + i) % 256 for i in range(size))).decode()


def answer(h: CallHarness, chunks: int, now: float = 0.0, item: str = "a") -> None:
    """An answer of `chunks` chunks of 100 ms (800 bytes), numbered by offset."""
    h.response_created("r1", now)
    for k in range(chunks):
        h.handle(ev.AudioDelta("r1", item, 0, numbered(800, k * 800)), now)


def played(actions: list) -> bytes:
    return b"".join(base64.b64decode(p.payload) for p in of(PlayAudio, actions))


def test_backchannels_are_recognised_however_they_are_written() -> None:
    assert only_backchannels("Mm-hmm.", BACKCHANNELS)
    assert only_backchannels("Mm hm, yeah!", BACKCHANNELS)
    assert only_backchannels("I see. Okay.", BACKCHANNELS)  # phrases of two words
    assert only_backchannels("", BACKCHANNELS)  # a cough: nothing said
    assert not only_backchannels("Yeah, but wait", BACKCHANNELS)
    assert not only_backchannels("see", BACKCHANNELS)


def test_an_mm_hm_pauses_the_answer_and_it_resumes_from_the_byte_the_caller_stopped_at() -> None:
    recorder = Recorder()
    h = confirming(recorder=recorder)
    answer(h, chunks=3)  # 300 ms queued at Twilio
    h.echo("a:800", 0.100)  # the first chunk has played
    # 60 ms into the second chunk. (The session's input audio began at 0: its ms are the
    # call's; its speech_started comes once it is sure, some way into the speech.)
    paused = h.speech_started(0.160, audio_start_ms=100)
    assert paused == [ClearAudio()]  # silenced at once; nothing cancelled or truncated
    # More of the answer arrives meanwhile: held, not played.
    assert h.handle(ev.AudioDelta("r1", "a", 0, numbered(800, 2400)), 0.2) == []
    # 300 ms of speech (to 400 ms), reported after the 500 ms of silence that confirmed it:
    # short; its transcript is awaited.
    assert h.speech_stopped(0.9, audio_end_ms=900) == []
    assert h.handle(ev.InputCommitted("u1"), 0.9) == []
    resumed = h.handle(ev.CallerTranscribed("u1", "Mm-hmm."), 1.0)
    assert resumed[0] == DeleteItem("u1")  # the model does not answer a cough
    assert not of(CancelResponse, resumed) and not of(TruncateItem, resumed)
    # Exactly from byte 1280 (100 ms + 60 ms) to the end, nothing repeated or skipped.
    assert played(resumed) == bytes(i % 256 for i in range(1280, 3200))
    assert [p.mark for p in of(PlayAudio, resumed)] == ["a:1600", "a:2400", "a:3200"]
    assert ("resumed", 0.84) in recorder.events
    moments = [e.moment for e in h.summary().timeline]
    assert moments.index(Moment.PAUSED) < moments.index(Moment.RESUMED)
    assert h.summary().barge_ins == ()  # not a barge-in
    # The non-turn is not in the transcript, and no turn began for it.
    assert all(line.role != "caller" for line in h.summary().transcript)
    assert h.summary().turns == ()


def test_speech_longer_than_the_limit_is_an_interruption_cut_where_it_was_heard() -> None:
    recorder = Recorder()
    h = confirming(recorder=recorder)
    answer(h, chunks=3)
    h.echo("a:800", 0.100)
    assert h.speech_started(0.160) == [ClearAudio()]
    # Not yet: speech that stopped at the limit would be reported silence_ms later.
    assert h.tick(0.160 + 0.6 + SILENCE_S - 0.01) == []
    cut = h.tick(0.160 + 0.6 + SILENCE_S + 0.01)
    assert kinds(cut) == ["CancelResponse", "TruncateItem", "SendMark"]
    assert of(TruncateItem, cut) == [TruncateItem("a", 0, 160)]  # where they stopped hearing
    assert of(SendMark, cut) == [SendMark("truncated:a:160")]
    assert len(h.summary().barge_ins) == 1 and h.summary().barge_ins[0].at == 0.160
    assert ("barged_in", 160) in recorder.events
    # Their turn ends: the bridge asks for the answer (the session does not by itself).
    h.handle(ev.ResponseDone("r1", "cancelled"), 1.4)
    assert h.speech_stopped(2.0) == [CreateResponse()]


def test_short_speech_with_words_in_it_is_an_interruption() -> None:
    h = confirming()
    answer(h, chunks=3)
    h.echo("a:800", 0.100)
    h.speech_started(0.160, audio_start_ms=100)
    h.speech_stopped(0.9, audio_end_ms=900)
    h.handle(ev.InputCommitted("u1"), 0.9)
    cut = h.handle(ev.CallerTranscribed("u1", "Stop."), 1.0)
    assert kinds(cut) == ["CancelResponse", "TruncateItem", "SendMark"]
    # Answered once the cancelled answer is out of the way.
    assert h.response_done("r1", 1.1, status="cancelled") == [CreateResponse()]


def test_without_a_transcript_in_time_short_speech_resumes() -> None:
    h = confirming()
    answer(h, chunks=2)
    h.speech_started(0.050)
    h.speech_stopped(0.6)
    h.handle(ev.InputCommitted("u1"), 0.6)
    assert h.tick(0.6 + TRANSCRIPT_WAIT_S - 0.05) == []
    resumed = h.tick(0.6 + TRANSCRIPT_WAIT_S + 0.01)
    assert resumed[0] == DeleteItem("u1") and len(of(PlayAudio, resumed)) == 2
    # Its transcript, late, does not bring the non-turn back into the transcript.
    h.handle(ev.CallerTranscribed("u1", "Mm-hmm."), 2.0)
    assert all(line.role != "caller" for line in h.summary().transcript)


def test_without_transcription_short_speech_resumes_when_it_stops() -> None:
    """A session that does not transcribe: the speech's length decides, at once; its item,
    committed after, is taken out of the conversation then."""
    h = confirming(transcribed=False)
    answer(h, chunks=2)
    h.speech_started(0.050)
    resumed = h.speech_stopped(0.6)
    assert kinds(resumed) == ["PlayAudio", "PlayAudio"]
    assert h.handle(ev.InputCommitted("u1"), 0.61) == [DeleteItem("u1")]


def test_speaking_again_before_it_is_decided_is_an_interruption() -> None:
    h = confirming()
    answer(h, chunks=3)
    h.speech_started(0.050)
    h.speech_stopped(0.6)
    again = h.speech_started(0.7)
    assert kinds(again) == ["CancelResponse", "TruncateItem", "SendMark"]


def test_a_second_mm_hm_while_resuming_pauses_again_at_the_right_byte() -> None:
    h = confirming(transcribed=False)
    answer(h, chunks=4)
    h.echo("a:800", 0.100)
    h.speech_started(0.150)  # 50 ms into the second chunk: heard 1200 bytes
    first = h.speech_stopped(0.6)
    assert played(first)[:4] == bytes(i % 256 for i in range(1200, 1204))
    h.echo("a:1600", 0.650)  # the rest of the second chunk (400 bytes) has played
    assert h.speech_started(0.700) == [ClearAudio()]  # 50 ms into the third chunk
    second = h.speech_stopped(1.2)
    assert played(second) == bytes(i % 256 for i in range(2000, 3200))


def test_a_key_during_the_pause_is_an_interruption_and_nothing_held_plays() -> None:
    h = confirming()
    answer(h, chunks=3)
    h.echo("a:800", 0.100)
    h.speech_started(0.160)
    cut = h.key("1", 0.3)
    assert of(TruncateItem, cut) == [TruncateItem("a", 0, 160)]
    assert of(CancelResponse, cut) and not of(PlayAudio, cut)
    h.handle(ev.InputCommitted("u1"), 0.9)
    assert not of(PlayAudio, h.tick(2.0))


def test_a_goodbye_during_the_pause_never_resumes_the_answer() -> None:
    h = confirming()
    answer(h, chunks=3)
    h.echo("a:800", 0.100)
    h.speech_started(0.160)
    bye = h.handle(ev.ShutdownRequested("We are closing. Goodbye."), 0.3)
    assert of(TruncateItem, bye) == [TruncateItem("a", 0, 160)]
    assert DisableTurnDetection() in bye and not of(PlayAudio, bye)
    h.speech_stopped(0.9)
    h.handle(ev.InputCommitted("u1"), 0.9)
    later = h.handle(ev.CallerTranscribed("u1", "Mm-hmm."), 1.0) + h.tick(2.0)
    assert not of(PlayAudio, later)


def test_a_model_that_keeps_talking_through_a_long_pause_is_not_held_without_bound() -> None:
    h = confirming()
    answer(h, chunks=1)
    h.speech_started(0.05)
    chunk = 8000  # 1 s
    cut = []
    for k in range(MAX_HELD_BYTES // chunk + 1):
        cut += h.handle(ev.AudioDelta("r1", "a", 0, numbered(chunk, k * chunk)), 0.1)
    assert kinds(cut) == ["CancelResponse", "TruncateItem", "SendMark"]


def test_a_turn_over_silence_is_answered_when_it_ends() -> None:
    h = confirming()
    assert h.speech_started(1.0) == []  # nothing playing: nothing to pause
    assert h.speech_stopped(2.0) == [CreateResponse()]


def test_a_400_ms_mm_hm_resumes_its_padding_is_not_counted_as_speech() -> None:
    """The session's speech_started puts the speech's start 300 ms early (its prefix
    padding): a 400 ms "Mm-hmm." is 400 ms of speech, under the 600 ms limit."""
    h = confirming()
    answer(h, chunks=10)
    # Speech from 1.0 s to 1.4 s: the session says it began at 0.7 s (padding), and that
    # it stopped at 1.9 s (the 500 ms of silence that told it so).
    h.speech_started(1.04, audio_start_ms=700)
    assert h.speech_stopped(1.9, audio_end_ms=1900) == []
    h.handle(ev.InputCommitted("u1"), 1.9)
    resumed = h.handle(ev.CallerTranscribed("u1", "Mm-hmm."), 2.0)
    assert resumed[0] == DeleteItem("u1") and of(PlayAudio, resumed)


def test_speaking_again_in_the_pause_is_answered_once_when_they_stop_not_while_they_talk() -> None:
    h = confirming()
    answer(h, chunks=30)
    h.speech_started(0.050)
    h.speech_stopped(0.6)
    cut = h.speech_started(0.7)  # "... actually, wait"
    assert kinds(cut) == ["CancelResponse", "TruncateItem", "SendMark"]
    # The cancelled answer ends while they still talk: nothing is asked for over them.
    assert h.response_done("r1", 0.8, status="cancelled") == []
    assert h.speech_stopped(2.5) == [CreateResponse()]  # one answer, once they stopped
    h.response_created("r2", 2.6)
    assert h.response_done("r2", 3.0) == []  # and only that one


def test_a_tool_the_held_answer_calls_waits_for_the_verdict() -> None:
    tools = ({"type": "function", "name": "book", "description": "d", "parameters": {}},)
    # Interrupted: it is not done, and the model is told so.
    h = confirming(tools=tools)
    answer(h, chunks=3)
    h.speech_started(0.05)
    assert h.function_call("call_1", "book", "{}", "r1", 0.1) == []
    h.speech_stopped(0.6)
    h.handle(ev.InputCommitted("u1"), 0.6)
    cut = h.handle(ev.CallerTranscribed("u1", "No, don't book it!"), 0.7)
    assert not of(RunTool, cut)
    [output] = of(AddToolOutput, cut)
    assert output.call_id == "call_1" and "not" in output.output.lower()
    # Resumed: it is done then.
    h2 = confirming(tools=tools)
    answer(h2, chunks=3)
    h2.speech_started(0.05)
    h2.function_call("call_2", "book", "{}", "r1", 0.1)
    h2.speech_stopped(0.6)
    h2.handle(ev.InputCommitted("u1"), 0.6)
    resumed = h2.handle(ev.CallerTranscribed("u1", "Mm-hm."), 0.7)
    assert of(RunTool, resumed) == [RunTool("call_2", "book", "{}")]


def test_a_hang_up_during_a_pause_leaves_the_held_answer_cut_in_the_transcript() -> None:
    h = confirming()
    answer(h, chunks=3)
    h.handle(ev.AssistantTranscribed("a", "One two three four five six seven eight nine."), 0)
    h.echo("a:800", 0.100)
    h.speech_started(0.160)
    h.handle(ev.StreamStopped(STREAM), 0.3)
    [line] = [line for line in h.summary().transcript if line.role == "assistant"]
    assert line.cut and line.text.endswith("…")
