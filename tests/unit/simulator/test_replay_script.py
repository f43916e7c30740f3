"""The replayed caller (sans-I/O): the recording's frames go out in order, each where it
was recorded, turns begin and end with its stretches of speech, and the caller listens to
the last answer before hanging up."""

from __future__ import annotations

from bridge.audio import mulaw_silence, synthetic_speech_mulaw
from bridge.simulator.playout import Playback
from bridge.simulator.replay_script import ReplayScript
from bridge.simulator.script import FRAME_MS
from bridge.simulator.simulator_options import SimulatorOptions

OPTIONS = SimulatorOptions(webhook_url="http://127.0.0.1:9/voice", answer_idle_ms=200)


def recording() -> bytes:
    """0.5 s quiet, 0.6 s speech, 1 s quiet, 0.4 s speech, 0.3 s quiet."""
    return (
        mulaw_silence(500)
        + synthetic_speech_mulaw(600, seed=1)
        + mulaw_silence(1000)
        + synthetic_speech_mulaw(400, seed=2)
        + mulaw_silence(300)
    )


def test_every_recorded_frame_goes_out_where_it_was_recorded_with_turns_at_its_speech() -> None:
    audio = recording()
    playback = Playback()
    script = ReplayScript(audio, OPTIONS, playback)
    sent = []
    for k in range(script.recorded_frames):
        frame = script.next_frame(k * FRAME_MS, now=k * FRAME_MS)
        assert frame is not None
        sent.append(frame)
    assert b"".join(sent) == audio
    assert script.finished_speaking
    assert [(t.speech_start_ms, t.speech_end_ms) for t in script.turns] == [
        (500, 1100),
        (2100, 2500),
    ]
    assert script.speech_frames_sent == (600 + 400) // FRAME_MS
    # The first turn ended when the second began.
    assert script.turns[0].ended_at == 2100


def test_after_the_recording_the_caller_hears_the_answer_out_then_hangs_up() -> None:
    audio = recording()
    playback = Playback()
    script = ReplayScript(audio, OPTIONS, playback)
    end = script.recorded_frames * FRAME_MS
    for k in range(script.recorded_frames):
        script.next_frame(k * FRAME_MS, now=k * FRAME_MS)
    # The answer to turn 2 arrives as the recording ends: 400 ms of it.
    playback.advance(end)
    playback.push_audio(synthetic_speech_mulaw(400, seed=3), end, script.response_for_audio())
    # Still playing, then not yet quiet for answer_idle_ms: the line stays open.
    assert script.next_frame(end, now=end + 20) is not None
    assert script.next_frame(end + 20, now=end + 500) is not None
    playback.advance(end + 620)
    assert script.next_frame(end + 40, now=end + 620) is None
    assert script.done
    assert playback.heard_bytes_by_response[2] == 400 * 8


def test_a_recording_with_no_speech_hangs_up_when_it_ends() -> None:
    script = ReplayScript(mulaw_silence(200), OPTIONS, Playback())
    for k in range(10):
        assert script.next_frame(k * FRAME_MS, now=k * FRAME_MS) is not None
    assert script.next_frame(200, now=200) is None
    assert script.turns == []
