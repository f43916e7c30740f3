"""What the caller heard, set against what the model sent: the test of exact barge-in."""

from __future__ import annotations

from bridge.local_agent import AgentSession
from bridge.simulator import CallReport
from tests.helpers.running_bridge import RunningBridge
from tests.helpers.twilio_side import simulated_call

TRUNCATION_TOLERANCE_MS = 20


def heard_bytes_by_item(report: CallReport) -> dict[str, bytes]:
    """What the caller heard of each assistant item, cut out of the call's heard audio."""
    heard: dict[str, bytearray] = {}
    offset = 0
    for segment in report.heard_segments:
        chunk = report.heard_audio[offset : offset + segment.nbytes]
        heard.setdefault(segment.item_id, bytearray()).extend(chunk)
        offset += segment.nbytes
    assert offset == len(report.heard_audio)
    return {item: bytes(data) for item, data in heard.items()}


def model_audio_by_item(session: AgentSession) -> dict[str, bytes]:
    return {
        item: audio for response in session.responses for item, audio in response.audio_sent.items()
    }


async def call_with_barge_in(
    bridge: RunningBridge, turns: int = 3, barge_in_after_ms: int = 600
) -> tuple[CallReport, AgentSession]:
    return await simulated_call(
        bridge, turns=turns, barge_in_after_ms=barge_in_after_ms, max_duration_s=60
    )


def assert_heard_exactly_what_the_model_sent_up_to_each_cut(
    report: CallReport, session: AgentSession
) -> None:
    model = model_audio_by_item(session)
    heard = heard_bytes_by_item(report)
    assert heard, "the caller heard nothing"
    for item, audio in heard.items():
        assert audio == model[item][: len(audio)], f"caller heard other audio than {item}"
    last_item = session.responses[-1].items[-1]
    assert heard[last_item] == model[last_item], "the last answer was not heard in full"


def assert_truncations_match_what_was_heard(report: CallReport, session: AgentSession) -> None:
    heard_ms = {item: len(audio) / 8 for item, audio in heard_bytes_by_item(report).items()}
    barge_ins = [turn for turn in report.turns if turn.intentional_barge_in]
    assert len(barge_ins) == len(report.turns) - 1
    assert len(session.truncations) == len(barge_ins)
    for truncation in session.truncations:
        assert truncation["accepted"], truncation["error"]
        difference = truncation["audio_end_ms"] - heard_ms[truncation["item_id"]]
        assert abs(difference) <= TRUNCATION_TOLERANCE_MS, (truncation, heard_ms)
    # The simulator saw the same cut points through the bridge's `truncated:` marks.
    assert [t.truncated_at_ms for t in barge_ins] == [
        t["audio_end_ms"] for t in session.truncations
    ]
    assert all(t.clear_latency_ms is not None for t in barge_ins)
    assert session.errors_sent == []


def model_audio_of_all(sessions: list[AgentSession]) -> dict[str, bytes]:
    return {item: audio for s in sessions for item, audio in model_audio_by_item(s).items()}


def assert_every_item_heard_as_sent(report: CallReport, sessions: list[AgentSession]) -> None:
    model = model_audio_of_all(sessions)
    for item, audio in heard_bytes_by_item(report).items():
        assert audio == model[item][: len(audio)], f"caller heard other audio than {item}"
