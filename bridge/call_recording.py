"""The bridge's own recording of a call (RECORDING=bridge): stereo at the call's own 8 kHz,
the caller on the left as received, the assistant on the right **as the caller heard it**;
a 16-bit WAV, or (RECORDING_FORMAT) FLAC or Ogg Opus through libsndfile.

The right channel follows Twilio's playback as the bridge learns of it: the chunks sent
play in order, a mark coming back means its chunk has just finished playing (so it is
placed ending there), and a clear cuts the chunk that was playing at that moment and
drops the rest, which was never heard. The left channel is the caller's frames, one
after the other from where they arrived (a gap in their arrival is silence).

On the audio path the recorder only keeps references to the messages, with their times
(nothing is decoded there); once a second, off that path, they are decoded, placed, and
the part no later message can change is written out, in a worker thread. So memory stays
bounded whatever the call's length, and a disk that fails or stalls costs the recording,
never the call: one log line, and the record says why it has no audio.

The formats hold the same samples: FLAC is lossless (it decodes to the WAV's bytes); Opus
is lossy and costs several times the rest of the call's CPU (bench/recording_formats.py).
libsndfile encodes Opus in whole 20 ms packets, holding the rest of a write until the next
one (the last is padded at the close and the padding cut by the end's granule position),
and writes the encoder's lookahead as the stream's pre-skip, which decoders drop: decoded,
both channels sit where the WAV has them (0 samples apart, measured by cross-correlation
in tests/unit/test_call_recording.py). Its Ogg pages hold up to 1 s of audio each, so at
most that much more (a few KB) waits in memory before it reaches the disk.

With RECORDINGS_URL, the same file is written to a bucket instead, in parts as the call goes
(`bridge.object_storage.UploadingFile`), by the same thread, under the same failure
semantics: a store that is away or slow costs the recording, never the call.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import queue
import random
import threading
import time
import wave
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
import soundfile

from bridge.audio import MULAW_RATE, mulaw_to_pcm16
from bridge.core.call import decoded_length
from bridge.object_storage import UPLOAD_DEADLINE_S, Bucket, UploadingFile, described
from bridge.records.model import Recording

log = logging.getLogger("bridge.call_recording")

FLUSH_EVERY_S = 1.0
# Audio is placed at most this long after it was heard (a chunk once its mark is back,
# a cut chunk at the clear): older audio is final and written out.
SETTLE_S = 2.0
WINDOW_S = 4.0  # what is held unwritten at most (128 KiB): SETTLE_S and a margin
# Chunks sent to Twilio and not yet heard (a whole answer may be queued there).
MAX_QUEUED_S = 120.0
WRITE_DEADLINE_S = 5.0  # a write (or the file's close) past this: the disk is failing
# A chunk sent no later than this after the last one finished playing was waiting behind it
# at Twilio (the mark's news travels while the next chunk is on its way).
SAME_QUEUE_S = 0.02
WRITER_NICENESS = 19  # the lowest priority a thread can give itself
# Compressed recordings encode on at most half the CPUs at once, so the calls' audio keeps
# the rest: Opus costs ~10 ms per call-second, and 100 calls of it would take a whole CPU.
# A recording that cannot keep up fails (WRITE_DEADLINE_S), as on a slow disk; its call
# does not notice. (WAV costs next to nothing: each writes on its own, whatever the others'
# disks do.)
_ENCODING = threading.BoundedSemaphore(max(1, (os.cpu_count() or 2) // 2))

_CALLER, _SENT, _PLAYED, _CLEARED = range(4)
SPOOL_SUFFIX = ".spool"  # a recording's local spool, while it is uploaded (no format's suffix)
# What a WAV's header says before its close: "to the end of the file" (the most RIFF can
# hold), so a file or object a stopped bridge left reads whole; the close writes the length.
_UNKNOWN_WAV_FRAMES = (0xFFFFFFFF - 36) // 4


@dataclass(frozen=True, slots=True)
class RecordingFormat:
    """A format RECORDING_FORMAT names: the file's suffix says which a recording is in."""

    name: str  # as RECORDING_FORMAT names it
    suffix: str
    media_type: str
    libsndfile: tuple[str, str] | None  # its format and subtype; None: the stdlib's wave


RECORDING_FORMATS = {
    f.name: f
    for f in (
        RecordingFormat("wav", ".wav", "audio/wav", None),
        RecordingFormat("flac", ".flac", "audio/flac", ("FLAC", "PCM_16")),
        RecordingFormat("opus", ".ogg", "audio/ogg", ("OGG", "OPUS")),
    )
}


def format_of(path: Path) -> RecordingFormat | None:
    """The format a recording's file is in, by its suffix."""
    return next((f for f in RECORDING_FORMATS.values() if f.suffix == path.suffix), None)


@dataclass(slots=True)
class _Chunk:
    mark: str
    payload: str  # base64 mu-law, as sent
    sent_at: float


class CallRecorder:
    def __init__(self, path: Path, started_at: float, bucket: Bucket | None = None) -> None:
        """`path`'s suffix says the format (RECORDING_FORMATS). With a `bucket`, the
        recording is the object of `path`'s name there, and `path` its local spool."""
        file_format = format_of(path)
        if file_format is None:
            raise ValueError(f"{path.name}: not the file of a recording format")
        self.path = path
        self.format = file_format
        self._bucket = bucket
        # Where the record says the recording is: the file's name in RECORDINGS_DIR, or
        # the object's s3:// address.
        self.url = bucket.url_of(path.name) if bucket is not None else path.name
        self._deadline_s = UPLOAD_DEADLINE_S if bucket is not None else WRITE_DEADLINE_S
        self._file: BinaryIO | UploadingFile | None = None
        self._origin = started_at  # the stream's start: sample 0
        self._messages: list[tuple[int, str, str, float]] = []  # (kind, payload, mark, at)
        self._queue: deque[_Chunk] = deque()
        self._queued_samples = 0
        self._heard_until: float | None = None  # when the last chunk finished playing
        self._assistant_next = 0  # the sample after the last one of the assistant's placed
        self._caller_next = 0  # the sample the caller's next frame goes at
        self._window = np.zeros((int(WINDOW_S * MULAW_RATE), 2), dtype=np.int16)
        self._window_start = 0  # the sample the window's first row is
        self._end = 0  # one past the last sample placed
        self._late = 0  # samples placed after their place was written out (dropped)
        self._done: list[bytes] = []  # final frames, to write out
        self._writer: _Writer | None = None
        # One thread of its own, taking writes in order from a queue: one the call's end
        # stopped waiting for is still done before the next; and a daemon, so a stuck disk
        # never holds up the process's exit.
        self._disk: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._written = 0
        # The CPU time the recorder's thread spent writing (encoding, mostly): what the
        # format costs, as bench/recording_formats.py reports it.
        self.writer_cpu_s = 0.0
        self.failed: str | None = None  # why there is no (complete) recording

    # --- on the audio path: references and times only ----------------------------------------

    def caller(self, payload: str, now: float) -> None:
        if self.failed is None:
            self._messages.append((_CALLER, payload, "", now))

    def sent(self, payload: str, mark: str, now: float) -> None:
        if self.failed is None:
            self._messages.append((_SENT, payload, mark, now))

    def played(self, mark: str, now: float) -> None:
        if self.failed is None:
            self._messages.append((_PLAYED, "", mark, now))

    def cleared(self, now: float) -> None:
        if self.failed is None:
            self._messages.append((_CLEARED, "", "", now))

    # --- off it ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Place and write what came, once a second, until cancelled. (Calls that began
        together do not all do it at the same moment.)"""
        await asyncio.sleep(random.uniform(0, FLUSH_EVERY_S))
        while self.failed is None:
            await self.flush(time.monotonic())  # (the clock the times are on)
            await asyncio.sleep(FLUSH_EVERY_S)

    async def flush(self, now: float) -> None:
        """Place what came, and write out what is final at `now` (on the clock of the
        messages' times): what `run` does each second."""
        await self._settle(now - SETTLE_S)

    async def finish(self) -> Recording:
        """Write out everything; the recording as the call's record keeps it."""
        if self.failed is None:
            await self._settle(None)
        if self.failed is None and self._thread is not None:
            # The header is written with the file's length only now (WAV, FLAC; Opus: the
            # last packet): a close that fails leaves a file players would cut short.
            try:
                await asyncio.wait_for(self._on_disk(self._close), self._deadline_s)
            except Exception as exc:
                self._fail(exc)
        elif self._thread is not None:
            self._disk.put(self._close_quietly)  # (not waited for: the disk is failing)
        self._disk.put(None)  # (the thread ends once what it holds is done)
        if self.failed is not None:
            return Recording("bridge", "failed", url=self.url, error=self.failed)
        if self._late:
            log.warning("recording: %d ms of audio came too late to be placed", self._late // 8)
        return Recording(
            "bridge", "completed", url=self.url, duration_s=round(self._written / MULAW_RATE)
        )

    async def _settle(self, until: float | None) -> None:
        """Place what came, and write out all that is final by `until` (None: everything).
        Placing is a fraction of a millisecond a second of call, done here (calls' clocks
        are spread over the second); the write is the recorder's own thread's, as a disk
        may stall."""
        messages, self._messages = self._messages, []
        try:
            frames = self._place(messages, until)
            if frames:
                await asyncio.wait_for(self._on_disk(self._write, frames), self._deadline_s)
        except Exception as exc:  # a full disk, a stalled one, or a bug: never the call's end
            self._fail(exc)

    def _place(self, messages: list[tuple[int, str, str, float]], until: float | None) -> bytes:
        """Put the messages' audio in place; the frames now final, to write out."""
        for kind, payload, mark, at in messages:
            if kind == _CALLER:
                self._place_caller(payload)
            elif kind == _SENT:
                self._queue.append(_Chunk(mark, payload, at))
                self._queued_samples += decoded_length(payload)
                while self._queued_samples > MAX_QUEUED_S * MULAW_RATE:
                    dropped = self._queue.popleft()  # never heard: Twilio holds no more
                    self._queued_samples -= decoded_length(dropped.payload)
            elif kind == _PLAYED:
                self._place_played(mark, at)
            else:
                self._place_cut(at)
        final = self._end if until is None else min(self._end, self._sample(until))
        protected = self._protected()
        if until is not None and protected is not None:
            final = min(final, protected)
        count = final - self._window_start
        if count > 0:
            self._done.append(self._window[:count].tobytes())
            self._shift(count)
            self._written += count
        base = int(WINDOW_S * MULAW_RATE)
        if len(self._window) > base and self._end - self._window_start <= base:
            self._window = self._window[:base].copy()  # (grown for a long chunk, now placed)
        frames, self._done = b"".join(self._done), []
        return frames

    def _place_caller(self, payload: str) -> None:
        pcm = _pcm(payload)
        if pcm is None:
            return  # (the call dropped it too)
        # Twilio streams the caller without a break (silence too), 20 ms a frame from the
        # stream's start: each frame follows the last, however late it arrived.
        self._put(0, self._caller_next, pcm)
        self._caller_next += len(pcm)

    def _place_played(self, mark: str, at: float) -> None:
        if not any(chunk.mark == mark for chunk in self._queue):
            return  # a cleared chunk's echo, or a mark that carries no audio
        # In order: any before it finished before it, back to back.
        played = []
        while self._queue:
            chunk = self._queue.popleft()
            self._queued_samples -= decoded_length(chunk.payload)
            played.append(chunk)
            if chunk.mark == mark:
                break
        pcms = [pcm for pcm in map(_pcm, (chunk.payload for chunk in played)) if pcm is not None]
        start = self._sample(at) - sum(len(pcm) for pcm in pcms)
        if self._queued_behind(played[0]) or start < self._assistant_next:
            start = self._assistant_next  # it followed the last one without a gap
        for pcm in pcms:
            self._put(1, start, pcm)
            start += len(pcm)
        self._assistant_next = start
        self._heard_until = at

    def _place_cut(self, at: float) -> None:
        """A clear: the chunk playing is heard up to now, the rest never."""
        if self._queue:
            chunk = self._queue[0]
            began = self._sample(max(chunk.sent_at, self._heard_until or chunk.sent_at))
            if self._queued_behind(chunk) or began < self._assistant_next:
                began = self._assistant_next
            pcm = _pcm(chunk.payload)
            if pcm is not None:
                heard = min(len(pcm), max(0, self._sample(at) - began))
                self._put(1, began, pcm[:heard])
                self._assistant_next = began + heard
        self._queue.clear()
        self._queued_samples = 0
        self._heard_until = at

    def _protected(self) -> int | None:
        """The earliest sample the next chunk to be heard may start at (it is queued at
        Twilio, its mark not back yet): nothing from there on is final."""
        if not self._queue:
            return None
        head = self._queue[0]
        return self._sample(max(head.sent_at, self._heard_until or head.sent_at))

    def _queued_behind(self, chunk: _Chunk) -> bool:
        """`chunk` was sent while the one before it was still playing: Twilio played it
        right after (so whatever its mark's lateness, it follows without a gap)."""
        return self._heard_until is not None and chunk.sent_at <= self._heard_until + SAME_QUEUE_S

    def _sample(self, at: float) -> int:
        return max(0, round((at - self._origin) * MULAW_RATE))

    def _put(self, channel: int, start: int, pcm: np.ndarray) -> None:
        size = int(WINDOW_S * MULAW_RATE) // 2
        while len(pcm) > size:  # longer than the window holds at once: in pieces
            self._put(channel, start, pcm[:size])
            start, pcm = start + size, pcm[size:]
        if start < self._window_start:  # its place is written out already
            cut = min(len(pcm), self._window_start - start)
            self._late += cut
            pcm, start = pcm[cut:], start + cut
        if not len(pcm):
            return
        end = start + len(pcm)
        overflow = end - (self._window_start + len(self._window))
        if overflow > 0:  # past the window: the oldest is final, unless a chunk may cover it
            protected = self._protected()
            final = overflow if protected is None else min(overflow, protected - self._window_start)
            final = max(0, final)
            if final:
                self._done.append(self._window[:final].tobytes())
                if final > len(self._window):  # and a silence longer than the window
                    self._done.append(bytes(4 * (final - len(self._window))))
                self._written += final
                self._shift(final)
            if overflow > final:  # a long chunk still to come: the window grows for it
                grown = np.zeros((overflow - final, 2), dtype=np.int16)
                self._window = np.concatenate((self._window, grown))
        offset = start - self._window_start
        self._window[offset : offset + len(pcm), channel] = pcm
        self._end = max(self._end, end)

    def _shift(self, count: int) -> None:
        window = self._window
        if count >= len(window):
            window[:] = 0
        else:
            window[:-count] = window[count:]
            window[-count:] = 0
        self._window_start += count

    def _on_disk(self, work: Callable[..., None], *args: object) -> asyncio.Future[None]:
        """Run `work(*args)` in the recorder's thread, after what it was given before."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def job() -> None:
            began = time.thread_time()
            outcome: BaseException | None = None
            try:
                with _ENCODING if self.format.libsndfile else contextlib.nullcontext():
                    # A recording given up meanwhile (it fell behind) is not worth the CPU.
                    if self.failed is None or work == self._close:
                        work(*args)
            except BaseException as exc:  # handed to whoever waits, if anyone still does
                outcome = exc
            self.writer_cpu_s += time.thread_time() - began  # (before its waiter reads it)
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(_settle_future, done, outcome)

        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="recording", daemon=True)
            self._thread.start()
        self._disk.put(job)
        return done

    def _work(self) -> None:
        """(The recorder's thread.) It runs at the lowest priority: when the CPUs are short
        (Opus at many calls), a recording falls behind rather than any call's audio."""
        with contextlib.suppress(AttributeError, OSError):  # (per thread on Linux only)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICENESS)
        while (job := self._disk.get()) is not None:
            job()

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def _close_quietly(self) -> None:
        if isinstance(self._file, UploadingFile):
            self._file.abandon()  # (no object made of a failed recording's parts)
        with contextlib.suppress(Exception):
            self._close()

    def _write(self, frames: bytes) -> None:
        if self._writer is None:
            file = self._open_file()
            try:
                self._writer = _open_writer(file, self.format)
            except BaseException:
                if isinstance(file, UploadingFile):
                    file.abandon()  # (closing it would upload a header-only object)
                else:
                    file.close()
                raise
        self._writer.write(frames)

    def _open_file(self) -> BinaryIO:
        if self._bucket is not None:
            spool = self.path.with_name(self.path.name + SPOOL_SUFFIX)
            uploading = UploadingFile(self._bucket, self.path.name, self.format.media_type, spool)
            self._file = uploading
            return uploading  # type: ignore[return-value]  # (what the writers use of a file)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # What callers said is personal data: readable by this user only.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file = os.fdopen(fd, "wb")
        return self._file

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, TimeoutError):
            if self._bucket is not None:
                short = "object storage slow or unreachable"
            else:
                short = "a slow disk"
            if self.format.libsndfile:
                short += ", or too little CPU to encode"
            why = f"not done within {self._deadline_s:g} s ({short})"
        elif self._bucket is not None:
            why = described(exc)
        else:
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        where = self.url if self._bucket is not None else self.path
        log.error("recording stopped, the call goes on: %s: %s", where, why)
        self.failed = f"could not be written: {why}"[:300]
        self._messages = []
        self._queue.clear()


class _Writer(Protocol):
    def write(self, frames: bytes) -> None:
        """Stereo 16-bit frames, interleaved."""

    def close(self) -> None:
        """Finish the file (its header, its last packet) and close it."""


def _open_writer(file: BinaryIO, file_format: RecordingFormat) -> _Writer:
    if file_format.libsndfile is None:
        return _WavWriter(file)
    return _LibsndfileWriter(file, *file_format.libsndfile)


class _WavWriter:
    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._wav = wave.open(file, "wb")  # noqa: SIM115 (closed by close)
        self._wav.setnchannels(2)
        self._wav.setsampwidth(2)
        self._wav.setframerate(MULAW_RATE)
        self._wav.setnframes(_UNKNOWN_WAV_FRAMES)

    def write(self, frames: bytes) -> None:
        self._wav.writeframesraw(frames)

    def close(self) -> None:
        try:
            self._wav.close()  # (writes the header's lengths; leaves the file open)
        finally:
            self._file.close()


class _LibsndfileWriter:
    """FLAC or Opus, encoded by libsndfile as the frames come, into our file (opened 0600,
    so never readable by others, not even for a moment)."""

    def __init__(self, file: BinaryIO, container: str, codec: str) -> None:
        self._file = _DiskErrorKept(file)
        with self._disk_errors():
            self._sound = soundfile.SoundFile(
                self._file,
                "w",
                samplerate=MULAW_RATE,
                channels=2,
                format=container,
                subtype=codec,
            )

    def write(self, frames: bytes) -> None:
        with self._disk_errors():
            self._sound.write(np.frombuffer(frames, dtype=np.int16).reshape(-1, 2))

    def close(self) -> None:
        try:
            with self._disk_errors():
                self._sound.close()
        finally:
            self._file.close()

    @contextlib.contextmanager
    def _disk_errors(self) -> Iterator[None]:
        """The disk's own error if libsndfile met one, which it reports as "System error"
        at best, and some of which (a failed Ogg page) it lets go."""
        try:
            yield
        except soundfile.LibsndfileError:
            self._file.raise_kept()
            raise
        self._file.raise_kept()


class _DiskErrorKept:
    """A file as libsndfile writes it, from C: an error there would be printed and lost,
    so it is kept instead (and the write or seek reports failure) for `raise_kept`."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._error: Exception | None = None

    def write(self, data: bytes) -> int:
        if self._error is None:
            try:
                return self._file.write(data)
            except Exception as exc:
                self._error = exc
        return 0

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._kept(lambda: self._file.seek(offset, whence))

    def tell(self) -> int:
        return self._kept(self._file.tell)

    def close(self) -> None:
        self._file.close()

    def raise_kept(self) -> None:
        if self._error is not None:
            raise self._error

    def _kept(self, work: Callable[[], int]) -> int:
        try:
            return work()
        except Exception as exc:
            self._error = self._error or exc
            return -1


def _settle_future(future: asyncio.Future[None], exc: BaseException | None) -> None:
    if not future.done():  # (not if its waiter gave up on it)
        if exc is None:
            future.set_result(None)
        else:
            future.set_exception(exc)


def _pcm(payload: str) -> np.ndarray | None:
    try:
        mulaw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None
    return np.frombuffer(mulaw_to_pcm16(mulaw), dtype=np.int16)


def recording_file(directory: Path, recording: Recording | None) -> Path | None:
    """The bridge's file of a recording, if it made one: only ever a plain file name in
    `directory`, of a format the bridge writes (the name is the store's, but a path is
    never followed; an s3:// address is not a file's). Its suffix says the format, so
    records from before FLAC and Opus (CallSid.wav) are found as ever."""
    if recording is None or recording.kind != "bridge" or not recording.url:
        return None
    name = recording.url
    if Path(name).name != name or name.startswith(".") or format_of(Path(name)) is None:
        return None
    return directory / name


def media_type_of(path: Path) -> str:
    """What a recording's file is, as HTTP names it."""
    file_format = format_of(path)
    return file_format.media_type if file_format is not None else "application/octet-stream"
