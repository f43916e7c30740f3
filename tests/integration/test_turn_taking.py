"""Turn-taking a caller does not notice, over real sockets with the local agent (its own
interruption and auto-response off, as the bridge asks; items deleted as the service
does): an "mm-hm" over an answer pauses it and it goes on where the caller stopped
hearing it; a real interruption is cut there and answered; a quiet caller is checked on
and hung up on, timed from what they heard; a slow tool gets a filler that stops when it
returns."""

from __future__ import annotations

import pytest

from bridge.core.playback import FILLER_ITEM_PREFIX
from bridge.core.timeline import Moment
from bridge.local_agent import AgentOptions, FunctionCallPlan
from bridge.records.model import CallRecord
from bridge.simulator import CallReport, format_report
from tests.helpers.heard_audio import TRUNCATION_TOLERANCE_MS
from tests.helpers.running_bridge import running_bridge, stored_record
from tests.helpers.twilio_rest_fake import RecordingTwilio
from tests.helpers.twilio_side import simulated_call

pytestmark = pytest.mark.integration

BYTES_PER_MS = 8
# A resumed answer starts from where the bridge reckons the caller stopped hearing it: the
# playing chunk's start (its previous mark's echo) plus the time since. The echo's own trip
# makes that reckoning a little short, so a little may be heard twice (1 to 21 ms measured
# here: about a truncation's error, which shares its cause); never skipped.
SEAM_MS = TRUNCATION_TOLERANCE_MS + 5
UTTERANCE_MS = 1500  # each turn: its echo, the answer, is 2.3 s (padding and silence too)


def answer_audio(report: CallReport, response: int) -> tuple[bytes, int | None]:
    """What the caller heard of one answer, and where in it the stretch that followed a
    cut (a clear) began, in bytes (None: never cut)."""
    out = bytearray()
    seam = None
    offset = 0
    after_cut = False
    for segment in report.heard_segments:
        if segment.response == response and not segment.item_id.startswith(FILLER_ITEM_PREFIX):
            if after_cut and seam is None:
                seam = len(out)
            out += report.heard_audio[offset : offset + segment.nbytes]
            after_cut = after_cut or segment.cut
        offset += segment.nbytes
    return bytes(out), seam


def moments(record: CallRecord, moment: Moment) -> list[float]:
    return [e.at for e in record.timeline if e.moment is moment]


SCENARIOS = {
    # The whole answer is queued at Twilio when the caller says "mm-hm".
    "queued": ({}, AgentOptions()),
    # The model is still sending it in real time: deltas arrive during the pause.
    "still streaming": ({}, AgentOptions(speed=1.0)),
    "two items": ({}, AgentOptions(items_per_response=2)),
    # The bridge transcodes: the session speaks PCM16 24 kHz.
    "pcm16": ({"realtime_audio_format": "pcm16"}, AgentOptions()),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_an_mm_hm_pauses_the_answer_and_the_caller_hears_all_of_it_once(
    scenario: str,
) -> None:
    settings, agent = SCENARIOS[scenario]
    async with running_bridge(agent, **settings) as bridge:
        plain, _ = await simulated_call(bridge, turns=1, utterance_ms=UTTERANCE_MS)
        report, _ = await simulated_call(
            bridge, turns=1, utterance_ms=UTTERANCE_MS, backchannel_after_ms=500
        )
        session = bridge.agent.sessions[-1]  # this call's (the first was the plain one's)
        record = await stored_record(bridge, report.call_sid)

    uninterrupted, _ = answer_audio(plain, 1)
    heard, seam = answer_audio(report, 1)
    [turn] = report.turns
    # Silenced at once (the clear), then the rest of the answer after a pause.
    assert turn.resumed is True, format_report(report)
    assert turn.backchannel_clear_ms is not None and turn.backchannel_clear_ms < 100
    assert turn.paused_ms is not None and turn.paused_ms < 1200, turn
    # Byte for byte the uninterrupted answer, apart from the pause: the stretch before it,
    # then the rest from (within SEAM_MS before) where it was cut. Nothing skipped.
    assert seam is not None, format_report(report)
    assert heard[:seam] == uninterrupted[:seam]
    repeated = len(heard) - len(uninterrupted)
    assert 0 <= repeated <= SEAM_MS * BYTES_PER_MS, (repeated, scenario)
    assert heard[seam:] == uninterrupted[seam - repeated :]
    assert turn.answer_complete is True

    # The model was neither stopped nor cut; the mm-hm left the conversation.
    sent = [e["type"] for e in session.received if e["type"] != "input_audio_buffer.append"]
    assert "response.cancel" not in sent and "conversation.item.truncate" not in sent
    assert sent.count("conversation.item.delete") == 1
    assert sent.count("response.create") == 1  # the answer, asked for by the bridge
    assert len(moments(record, Moment.PAUSED)) == len(moments(record, Moment.RESUMED)) == 1
    assert record.barge_ins == 0
    items = agent.items_per_response
    assert [line.role for line in record.transcript] == ["caller"] + ["assistant"] * items
    assert "then RESUMED" in format_report(report)


async def test_a_real_interruption_is_cut_where_it_was_heard_and_answered() -> None:
    async with running_bridge() as bridge:
        report, session = await simulated_call(
            bridge, turns=2, utterance_ms=UTTERANCE_MS, barge_in_after_ms=600
        )
        record = await stored_record(bridge, report.call_sid)
    barge_in = report.turns[1]
    assert barge_in.clear_latency_ms is not None and barge_in.clear_latency_ms < 100
    assert barge_in.truncation_delta_ms is not None
    assert 0 <= barge_in.truncation_delta_ms <= SEAM_MS, barge_in
    sent = [e["type"] for e in session.received if e["type"] != "input_audio_buffer.append"]
    # Cut by the bridge (the session does not by itself), then answered.
    assert sent.count("conversation.item.truncate") == 1
    assert report.turns[1].answer_complete is True
    assert record.barge_ins == 1 and len(moments(record, Moment.RESUMED)) == 0


async def test_immediate_interruptions_cut_at_once_as_before() -> None:
    async with running_bridge(interruptions="immediate") as bridge:
        report, session = await simulated_call(
            bridge, turns=2, utterance_ms=UTTERANCE_MS, backchannel_after_ms=500
        )
    # An mm-hm is an interruption: the answer is cut and the mm-hm answered.
    assert report.turns[0].resumed is False
    sent = [e["type"] for e in session.received if e["type"] != "input_audio_buffer.append"]
    assert "conversation.item.truncate" in sent and "conversation.item.delete" not in sent


async def test_a_quiet_caller_is_checked_on_then_hung_up_timed_from_what_they_heard() -> None:
    # The agent sends each answer at 4x real time: it is generated long before it is heard.
    twilio = RecordingTwilio()  # the hang-up goes through Twilio's REST API
    async with running_bridge(idle_prompt_s=1.0, idle_hangup_s=1.5, twilio_http=twilio) as bridge:
        report, _ = await simulated_call(
            bridge,
            turns=1,
            utterance_ms=UTTERANCE_MS,
            answer_idle_ms=30_000,  # the simulated caller stays on the line, silent
            turn_timeout_s=30,
            max_duration_s=20,
        )
        record = await stored_record(bridge, report.call_sid)
    assert report.closed_by_bridge and record.outcome == "caller_idle"
    assert [r["path"].rsplit("/", 1)[-1] for r in twilio.requests] == [f"{report.call_sid}.json"]
    heard = report.heard_segments
    [check_in] = moments(record, Moment.IDLE_PROMPT)
    answer_end = max(s.end_ms for s in heard if s.start_ms / 1000 < check_in) / 1000
    # Timed from the end of what was heard (ticks of the call's clock: up to 0.25 s late).
    assert 1.0 <= check_in - answer_end <= 1.3, (check_in, answer_end)
    check_in_heard = [s for s in heard if s.start_ms / 1000 > check_in]
    assert check_in_heard, "the check-in was never heard"
    [goodbye] = moments(record, Moment.GOODBYE)
    check_in_end = max(s.end_ms for s in check_in_heard if s.start_ms / 1000 < goodbye) / 1000
    assert 1.5 <= goodbye - check_in_end <= 1.8, (goodbye, check_in_end)


async def test_a_slow_tool_gets_a_filler_that_stops_the_moment_it_returns() -> None:
    plans = {1: FunctionCallPlan("lookup_slowly", {}, speak_first=False)}
    async with running_bridge(
        AgentOptions(function_calls=plans),
        tools_module="tests.helpers.tools_for_tests",
        tool_filler_ms=800,
        recording="off",
    ) as bridge:
        report, _ = await simulated_call(bridge, turns=1, utterance_ms=600)
        record = await stored_record(bridge, report.call_sid)
    [tool_started] = moments(record, Moment.TOOL_STARTED)
    [tool_finished] = moments(record, Moment.TOOL_FINISHED)
    filler = [s for s in report.heard_segments if s.item_id.startswith(FILLER_ITEM_PREFIX)]
    assert filler, format_report(report)
    # It began TOOL_FILLER_MS into the tool (and its first mark's trip), and the caller
    # stopped hearing it as the tool returned.
    assert 0.8 <= filler[0].start_ms / 1000 - tool_started <= 0.85, filler[0]
    assert abs(filler[-1].end_ms / 1000 - tool_finished) <= 0.05, (filler[-1], tool_finished)
    assert filler[-1].cut  # stopped by a clear, not played out
    # Then the model's answer: never the filler's, in the transcript or anywhere else.
    answered = [s for s in report.heard_segments if s.start_ms > filler[-1].end_ms]
    assert answered and not any(s.item_id.startswith(FILLER_ITEM_PREFIX) for s in answered)
    assert all("filler" not in line.text for line in record.transcript)
