"""A recording set against what the simulated caller heard: the right channel holds every
byte they heard, placed where it played and cut where the clears cut it; the left channel
the caller's speech where they said it. For recordings wherever they are kept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import httpx
import numpy as np
import soundfile

from bridge.audio import mulaw_to_pcm16
from bridge.simulator import CallReport, HeardAudio
from tests.helpers.running_bridge import RunningBridge

ALIGNED_MS = 20  # the bound on where audio sits, both channels
SAMPLES_PER_MS = 8


def read_stereo(source: Path | BinaryIO, subtype: str = "PCM_16") -> tuple[np.ndarray, np.ndarray]:
    with soundfile.SoundFile(source) as audio:
        assert (audio.channels, audio.samplerate, audio.subtype) == (2, 8000, subtype)
        stereo = audio.read(dtype="int16")
    return stereo[:, 0], stereo[:, 1]


def found_at(channel: np.ndarray, pcm: np.ndarray, near_ms: float) -> int | None:
    """Where `pcm` begins in `channel`, searched within 100 ms of `near_ms`: found by its
    first 20 ms of sound (silence would match any silence)."""
    sound = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 1000)
    assert len(sound), "nothing to find: the segment is silent"
    first = int(sound[0])
    probe = pcm[first : first + 160]
    centre = round(near_ms * SAMPLES_PER_MS) + first
    for at in range(max(0, centre - 800), min(len(channel) - len(probe), centre + 800)):
        if np.array_equal(channel[at : at + len(probe)], probe):
            return at - first
    return None


def heard_stretches(report: CallReport) -> Iterator[tuple[HeardAudio, np.ndarray]]:
    """Each stretch the caller heard without a break, with its audio as 16-bit samples."""
    heard = report.heard_audio
    assert sum(s.nbytes for s in report.heard_segments) == len(heard)
    offset = 0
    for segment in report.heard_segments:
        said = heard[offset : offset + segment.nbytes]
        offset += segment.nbytes
        yield segment, np.frombuffer(mulaw_to_pcm16(said), dtype=np.int16)


def assert_recorded_as_heard(
    caller: np.ndarray, assistant: np.ndarray, report: CallReport, cuts: int
) -> None:
    """Lossless channels: every stretch heard is in the right channel, byte for byte, where
    it played, and nothing follows a cut; the caller speaks on the left where they did."""
    found_cuts = 0
    for segment, said in heard_stretches(report):
        start = found_at(assistant, said, segment.start_ms)
        assert start is not None, segment
        # Placed where it played ...
        assert abs(start / SAMPLES_PER_MS - segment.start_ms) <= ALIGNED_MS, segment
        # ... and exactly what was heard: every byte, and it stops where the clear cut it.
        recorded = assistant[start : start + len(said)]
        same = int(np.argmin(recorded == said)) if not np.array_equal(recorded, said) else None
        tail_ms = 0.0 if same is None else (len(said) - same) / SAMPLES_PER_MS
        assert tail_ms <= ALIGNED_MS, (segment, tail_ms)
        if segment.cut:
            found_cuts += 1
            # Nothing the caller did not hear follows the cut (within the bound).
            cut_at = start + len(said) + ALIGNED_MS * SAMPLES_PER_MS
            assert not np.any(assistant[cut_at : cut_at + 200 * SAMPLES_PER_MS]), segment
    assert found_cuts == cuts
    assert_the_caller_speaks_where_they_did(caller, report)


def assert_the_caller_speaks_where_they_did(caller: np.ndarray, report: CallReport) -> None:
    for turn in report.turns:
        window = caller[
            round((turn.speech_start_ms - 100) * SAMPLES_PER_MS) : round(
                (turn.speech_start_ms + 200) * SAMPLES_PER_MS
            )
        ]
        loud = np.flatnonzero(np.abs(window.astype(np.int32)) > 1000)
        assert len(loud), turn
        onset_ms = turn.speech_start_ms - 100 + loud[0] / SAMPLES_PER_MS
        assert abs(onset_ms - turn.speech_start_ms) <= ALIGNED_MS, (turn, onset_ms)


async def assert_served(
    bridge: RunningBridge, call_sid: str, content: bytes, media_type: str, password: str
) -> None:
    """The console's page of the call plays the recording (behind the login, as
    `media_type`, its bytes `content`) and seeks in it (range requests), at its address and
    at the one it had before FLAC and Opus."""
    async with httpx.AsyncClient(base_url=bridge.base_url) as http:
        url = f"/console/calls/{call_sid}/recording"
        refused = await http.get(url)
        await http.post("/console/login", data={"password": password})
        page = await http.get(f"/console/calls/{call_sid}")
        seek = await http.get(url, headers={"Range": "bytes=44-8043"})
        whole = await http.get(url)
        old_address = await http.get(url + ".wav")
    assert refused.status_code == 401
    assert '<audio id="recording"' in page.text and f'src="{url}"' in page.text
    assert (seek.status_code, seek.content) == (206, content[44:8044])
    assert seek.headers["content-range"] == f"bytes 44-8043/{len(content)}"
    assert whole.content == old_address.content == content
    for response in (seek, whole, old_address):
        assert response.headers["content-type"] == media_type
