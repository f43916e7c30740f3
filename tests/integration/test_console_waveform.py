"""A recorded call on the console over loopback: its waveform's data (behind the login, each
side loud where it spoke, the call's moments marked where the timeline has them) and its
transcript placed on the recording's clock, every line a button that plays from there."""

from __future__ import annotations

import html
import re
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest

from bridge.console.waveform import BUCKETS, FULL_SCALE
from bridge.core.summary import TranscriptLine
from bridge.core.timeline import Moment, speech_edge
from bridge.defaults import VAD_PREFIX_PADDING_MS
from bridge.records.model import Recording
from tests.helpers.records import record as stored_call
from tests.helpers.running_bridge import running_bridge
from tests.helpers.twilio_side import recorded_call_with_two_barge_ins

pytestmark = pytest.mark.integration

PASSWORD = "console-test-password"
LOUD = FULL_SCALE // 20  # a bucket a voice is in: a twentieth of full scale or more
QUIET = FULL_SCALE // 100  # a bucket with nobody in it
PLACED_MS = 60  # where the voice detection puts speech: within a few of its 20 ms frames


async def test_the_waveform_shows_each_side_where_it_spoke_with_the_calls_moments(
    tmp_path: Path,
) -> None:
    async with recorded_call_with_two_barge_ins(tmp_path, PASSWORD) as (bridge, report, record):
        unrecorded = stored_call("CA" + "e" * 32)
        failed = replace(
            stored_call("CA" + "f" * 32), recording=Recording("bridge", "failed", url="x.wav")
        )
        for other in (unrecorded, failed):
            await bridge.app.state.store.save(other)
        async with httpx.AsyncClient(base_url=bridge.base_url) as http:
            url = f"/console/calls/{report.call_sid}/waveform.json"
            refused = await http.get(url)
            await http.post("/console/login", data={"password": PASSWORD})
            answer = await http.get(url)
            again = await http.get(url)
            missing = [
                await http.get(f"/console/calls/{sid}/waveform.json")
                for sid in (unrecorded.call_sid, failed.call_sid, "CA" + "0" * 32)
            ]
            page = (await http.get(f"/console/calls/{report.call_sid}")).text

    assert refused.status_code == 401 and "log in" in refused.json()["error"]
    assert [m.status_code for m in missing] == [404, 404, 404]
    assert all("no recording" in m.json()["error"] for m in missing)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert "no-store" in answer.headers["cache-control"]
    assert again.content == answer.content  # (the second from what the first read)
    picture = answer.json()

    # As long as the recording, in BUCKETS stretches of it, both sides.
    recording = tmp_path / f"{report.call_sid}.wav"
    frames = (recording.stat().st_size - 44) // 4
    assert picture["duration_s"] == pytest.approx(frames / 8000, abs=0.001)
    assert picture["pictured_s"] == picture["duration_s"]
    assert picture["buckets"] == BUCKETS and picture["full_scale"] == FULL_SCALE
    caller = np.array(picture["channels"]["caller"])
    assistant = np.array(picture["channels"]["assistant"])
    assert caller.shape == assistant.shape == (BUCKETS,)
    assert 0 <= min(caller.min(), assistant.min()) <= max(caller.max(), assistant.max()) <= 1000
    bucket_ms = picture["duration_s"] * 1000 / BUCKETS

    def buckets(start_ms: float, end_ms: float) -> slice:
        return slice(int(start_ms / bucket_ms) + 1, int(end_ms / bucket_ms))  # wholly inside

    # The caller is loud where they spoke ...
    for turn in report.turns:
        assert turn.speech_end_ms is not None
        spoke = caller[buckets(turn.speech_start_ms, turn.speech_end_ms)]
        assert len(spoke) and spoke.min() >= LOUD, (turn, spoke)
    # ... the assistant where the caller heard it, and nowhere before the first answer.
    for segment in report.heard_segments:
        if segment.end_ms - segment.start_ms >= 3 * bucket_ms:
            heard = assistant[buckets(segment.start_ms, segment.end_ms)]
            assert np.percentile(heard, 50) >= LOUD, (segment, heard)
    first_heard = report.heard_segments[0].start_ms
    assert assistant[buckets(0, first_heard)].max() <= QUIET
    # Before the caller's first word, nobody.
    assert caller[buckets(0, report.turns[0].speech_start_ms)].max() <= QUIET

    # The marks are the timeline's moments, where it has them.
    timeline = record.timeline
    marks = picture["markers"]
    assert [m["start"] for m in marks] == sorted(m["start"] for m in marks)

    def of(kind: str) -> list[dict[str, object]]:
        return [m for m in marks if m["kind"] == kind]

    started = [e for e in timeline if e.moment is Moment.SPEECH_STARTED]
    stopped = [e for e in timeline if e.moment is Moment.SPEECH_STOPPED]
    assert [(m["start"], m["end"]) for m in of("caller")] == [
        (round(speech_edge(a), 3), round(speech_edge(b), 3))
        for a, b in zip(started, stopped, strict=True)
    ]
    for mark, turn in zip(of("caller"), report.turns, strict=True):
        began = turn.speech_start_ms - VAD_PREFIX_PADDING_MS  # the padding is the turn's
        assert began - PLACED_MS <= float(mark["start"]) * 1000 <= began + PLACED_MS, mark
    heard = [e for e in timeline if e.moment is Moment.AUDIO_HEARD]
    assert [m["start"] for m in of("heard")] == [round(e.at, 3) for e in heard]
    assert len(heard) == 3
    # Two barge-ins, each the clear and the item it cut, as the timeline says.
    clears = [e for e in timeline if e.moment is Moment.CLEAR]
    cuts = [e.detail for e in timeline if e.moment is Moment.TRUNCATE]
    assert len(of("barge_in")) == len(clears) == len(cuts) == 2
    assert [m["start"] for m in of("barge_in")] == [round(e.at, 3) for e in clears]
    assert [m["label"] for m in of("barge_in")] == [f"barge-in: cut {cut}" for cut in cuts]
    assert len(marks) == len(of("caller")) + len(of("heard")) + len(of("barge_in"))

    # The transcript on the same clock: each caller line where their speech began (as the
    # voice detection placed it, with its padding), each answer where it began to be heard.
    lines = record.transcript
    said = [line for line in lines if line.role == "caller"]
    answered = [line for line in lines if line.role == "assistant"]
    assert [line.at for line in said] == [m["start"] for m in of("caller")]
    first_heard_of = {}
    for segment in report.heard_segments:
        first_heard_of.setdefault(segment.item_id, segment.start_ms)
    assert len(answered) == len(first_heard_of) == 3
    for line, began_ms in zip(answered, first_heard_of.values(), strict=True):
        assert line.at is not None and abs(line.at * 1000 - began_ms) <= 20, (line, began_ms)

    # On the page: each line's time is a button that plays the recording from there.
    buttons = re.findall(r'<button type="button" class="at" data-at="([\d.]+)"[^>]*>([^<]+)<', page)
    assert [float(at) for at, _ in buttons] == [line.at for line in lines]
    assert all(re.fullmatch(r"\d\d:\d\d\.\d", html.unescape(shown)) for _, shown in buttons)
    assert 'id="waveform"' in page and f'data-src="{url}"' in page
    assert '<script src="/console/static/recording.js">' in page
    # The legend counts what the picture marks.
    counts = dict(re.findall(r'data-kind="(\w+)" data-count="(\d+)"', page))
    assert {kind: int(n) for kind, n in counts.items()} == {
        kind: len(of(kind)) for kind in ("caller", "heard", "barge_in")
    }


async def test_a_call_without_a_recording_shows_its_times_but_plays_nothing() -> None:
    call = replace(
        stored_call("CA" + "d" * 32),
        transcript=(
            TranscriptLine("caller", "When do you open?", at=1.25),  # (half up, as the JS)
            TranscriptLine("assistant", "At nine.", at=63.04),
            TranscriptLine("caller", "(recorded before lines had times)"),
        ),
    )
    async with running_bridge(console_password=PASSWORD) as bridge:
        await bridge.app.state.store.save(call)
        async with httpx.AsyncClient(base_url=bridge.base_url) as http:
            await http.post("/console/login", data={"password": PASSWORD})
            page = (await http.get(f"/console/calls/{call.call_sid}")).text
    assert "<button" not in page.split('id="transcript"')[1].split("</ol>")[0]
    times = re.findall(r'<span class="at"[^>]*>([^<]+)</span>', page)
    assert times == ["00:01.3", "01:03.0", "—"]
    assert 'id="waveform"' not in page and "recording.js" not in page


async def test_a_recording_that_cannot_be_read_is_said_so_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    call = replace(
        stored_call("CA" + "c" * 32),
        recording=Recording("bridge", "completed", url="broken.wav", duration_s=65),
    )
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVE not a recording")
    async with running_bridge(
        recording="bridge", recordings_dir=str(tmp_path), console_password=PASSWORD
    ) as bridge:
        await bridge.app.state.store.save(call)
        async with httpx.AsyncClient(base_url=bridge.base_url) as http:
            await http.post("/console/login", data={"password": PASSWORD})
            answer = await http.get(f"/console/calls/{call.call_sid}/waveform.json")
    assert answer.status_code == 500
    assert answer.json() == {
        "error": f"the recording of the call {call.call_sid} could not be read"
    }
    assert "Traceback" not in answer.text
    assert any("could not read the recording" in r.getMessage() for r in caplog.records)
