"""A call's recording as a picture for the console: each channel's loudness in a fixed
number of buckets, and the call's moments (from its timeline) to mark on it.

The recording is read with libsndfile, so whatever format the bridge wrote reads the same,
block by block: a two-hour call is never in memory whole. Reading blocks (disk and CPU):
the console runs `read_peaks` in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import soundfile

from bridge.core.timeline import Moment, TimelineEntry, speech_edge
from bridge.object_storage import in_object_io

if TYPE_CHECKING:
    from bridge.recording_storage import StoredRecording

BUCKETS = 1000  # about one a pixel of a wide screen; ~8 KB of JSON for both channels
FULL_SCALE = 1000  # a bucket's peak: thousandths of full scale
BLOCK_FRAMES = 1 << 16  # read at a time: 8 s at 8 kHz, 512 KiB as float32 stereo
# Past this a recording is pictured only so far: a bound on the work one request can cost
# (a call is never this long unless its time limit was lifted).
MAX_PICTURED_S = 4 * 3600
CHANNELS = ("caller", "assistant")  # the bridge's recording: left, right
# A clear and the truncations it caused are noted at the same instant: one barge-in.
SAME_BARGE_IN_S = 0.05
# What `markers` marks, in the legend's order.
MARKER_KINDS = ("caller", "heard", "barge_in", "paused", "tool", "keys", "session")
KEPT_PICTURES = 8  # a page opened again, or reloaded, costs no second read


@dataclass(frozen=True, slots=True)
class Peaks:
    duration_s: float  # the whole recording's
    pictured_s: float  # what the buckets cover: all of it, unless past MAX_PICTURED_S
    channels: dict[str, list[int]]  # per channel, per bucket: its loudest sample

    def as_json(self) -> dict[str, Any]:
        return {
            "duration_s": self.duration_s,
            "pictured_s": self.pictured_s,
            "buckets": len(next(iter(self.channels.values()), [])),
            "full_scale": FULL_SCALE,
            "channels": self.channels,
        }


def read_peaks(source: Path | BinaryIO, buckets: int = BUCKETS) -> Peaks:
    """Each channel's peak amplitude in `buckets` equal stretches of the recording (fewer
    if it has fewer samples). Raises what soundfile raises for a file it cannot read."""
    with soundfile.SoundFile(source) as audio:
        rate = audio.samplerate
        total = max(0, audio.frames)
        pictured = min(total, int(MAX_PICTURED_S * rate))
        count = min(buckets, pictured)
        peaks = np.zeros((count, audio.channels), dtype=np.float32)
        if count:
            # Bucket k holds frames edges[k] to edges[k+1]: as equal as whole frames allow.
            edges = np.arange(count + 1, dtype=np.int64) * pictured // count
            position = 0
            while position < pictured:
                block = audio.read(
                    min(BLOCK_FRAMES, pictured - position), dtype="float32", always_2d=True
                )
                if not len(block):
                    break  # shorter than its header said: the rest stays silent
                _fold(peaks, edges, position, np.abs(block))
                position += len(block)
    scaled = np.minimum(np.rint(peaks * FULL_SCALE), FULL_SCALE).astype(np.int32)
    return Peaks(
        duration_s=round(total / rate, 3),
        pictured_s=round(pictured / rate, 3),
        channels={
            name: scaled[:, index].tolist() for index, name in enumerate(CHANNELS[: audio.channels])
        },
    )


class Waveforms:
    """Recordings' peaks, read one recording at a time (each read is the whole file: two
    CPUs are not spent on one operator's clicks) and the last few kept."""

    def __init__(self, keep: int = KEPT_PICTURES) -> None:
        self._keep = keep
        self._kept: OrderedDict[tuple[str, int, str], Peaks] = OrderedDict()
        self._one_at_a_time = asyncio.Lock()

    async def peaks(
        self, recording: StoredRecording, version: tuple[str, int, str] | None = None
    ) -> Peaks:
        """`version`: where the recording is, its length and version (a file's mtime, an
        object's ETag), if the caller looked already: what a recording written again
        changes. Raises FileNotFoundError if it is gone."""
        async with self._one_at_a_time:
            key = version or await in_object_io(recording.version)
            if key is None:
                raise FileNotFoundError(recording.name)
            peaks = self._kept.get(key)
            if peaks is None:
                peaks = await in_object_io(_read_peaks_of, recording)
                self._kept[key] = peaks
                while len(self._kept) > self._keep:
                    self._kept.popitem(last=False)
            self._kept.move_to_end(key)
            return peaks


def _read_peaks_of(recording: StoredRecording) -> Peaks:
    source = recording.open()
    try:
        return read_peaks(source)
    finally:
        if not isinstance(source, Path):
            source.close()


def _fold(peaks: np.ndarray, edges: np.ndarray, start: int, magnitudes: np.ndarray) -> None:
    """Raise each bucket's peaks to the loudest of `magnitudes` (frames from `start` on)
    that fall in it."""
    end = start + len(magnitudes)
    first = int(np.searchsorted(edges, start, side="right")) - 1
    last = int(np.searchsorted(edges, end - 1, side="right")) - 1
    # Where each bucket the block touches begins in it (the first: at its start).
    offsets = np.concatenate(([0], edges[first + 1 : last + 1] - start))
    maxima = np.maximum.reduceat(magnitudes, offsets, axis=0)
    touched = peaks[first : last + 1]
    np.maximum(touched, maxima, out=touched)


# ------------------------------------------------------------------------------ markers


@dataclass(frozen=True, slots=True)
class Marker:
    """A stretch of the call (`start` == `end`: an instant), s on the call's clock."""

    kind: str  # one of MARKER_KINDS
    start: float
    end: float
    label: str

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "start": self.start, "end": self.end, "label": self.label}


def markers(timeline: Iterable[TimelineEntry], until: float) -> list[Marker]:
    """What to mark on the picture, from the call's timeline: the caller speaking (where
    the voice detection placed their speech), each answer beginning to be heard,
    barge-ins, tools running, keys, and sessions lost or replaced. Anything still open
    at the end (speech, a tool) lasts until `until`. In order of their start."""
    found: list[Marker] = []
    speech_from: float | None = None
    tools_running: list[tuple[str, float]] = []
    barge_ins: list[tuple[float, list[str]]] = []  # (when, the items it truncated)
    # INTERRUPTIONS=confirm: a clear first silences the answer (PAUSED); it either resumes
    # (no barge-in: a pause is marked) or is cut a moment later (the barge-in it was).
    paused_at: float | None = None
    for entry in timeline:
        moment = entry.moment
        if moment is Moment.SPEECH_STARTED:
            speech_from = speech_edge(entry)
        elif moment is Moment.SPEECH_STOPPED and speech_from is not None:
            found.append(_span("caller", speech_from, speech_edge(entry), "caller speaking"))
            speech_from = None
        elif moment is Moment.AUDIO_HEARD:
            found.append(_instant("heard", entry.at, f"answer began to play, {entry.detail}"))
        elif moment is Moment.PAUSED:
            if not barge_ins or entry.at - barge_ins[-1][0] > SAME_BARGE_IN_S:
                barge_ins.append((entry.at, []))  # (nothing was queued: no clear)
            paused_at = barge_ins[-1][0]
        elif moment is Moment.RESUMED and paused_at is not None:
            if barge_ins and barge_ins[-1][0] == paused_at:
                barge_ins.pop()
            found.append(
                _span("paused", paused_at, entry.at, f"paused, then resumed {entry.detail}")
            )
            paused_at = None
        elif moment in (Moment.CLEAR, Moment.TRUNCATE):
            in_pause = paused_at is not None and bool(barge_ins)
            if not in_pause and (not barge_ins or entry.at - barge_ins[-1][0] > SAME_BARGE_IN_S):
                barge_ins.append((entry.at, []))
            if moment is Moment.TRUNCATE:
                barge_ins[-1][1].append(entry.detail)
                paused_at = None  # the pause was an interruption
        elif moment is Moment.TOOL_STARTED:
            tools_running.append((entry.detail, entry.at))
        elif moment is Moment.TOOL_FINISHED:
            started = next((t for t in tools_running if t[0] == entry.detail), None)
            if started is not None:
                tools_running.remove(started)
                found.append(_span("tool", started[1], entry.at, f"tool {entry.detail}"))
        elif moment is Moment.KEYS:
            found.append(_instant("keys", entry.at, f"caller pressed {entry.detail}"))
        elif moment is Moment.SESSION_LOST:
            found.append(_instant("session", entry.at, f"session lost: {entry.detail}"))
        elif moment is Moment.ROLLOVER:
            found.append(_instant("session", entry.at, f"session replaced {entry.detail}"))
    if speech_from is not None:
        found.append(_span("caller", speech_from, until, "caller speaking (until the end)"))
    for name, started_at in tools_running:
        found.append(_span("tool", started_at, until, f"tool {name} (unfinished)"))
    for at, truncated in barge_ins:
        cuts = f": cut {', '.join(truncated)}" if truncated else ""
        found.append(_instant("barge_in", at, f"barge-in{cuts}"))
    found.sort(key=lambda marker: marker.start)
    return found


def _instant(kind: str, at: float, label: str) -> Marker:
    return Marker(kind, round(at, 3), round(at, 3), label)


def _span(kind: str, start: float, end: float, label: str) -> Marker:
    return Marker(kind, round(start, 3), round(max(start, end), 3), label)
