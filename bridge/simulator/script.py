"""The caller's side of the conversation: what to say, and when, as a sans-I/O state machine.

The caller is a phone line: it sends one 20 ms frame every 20 ms whether or not anyone
speaks. `CallerScript.next_frame` is asked for each frame in turn and decides, from what the
caller has heard so far (the `Playback`), whether to keep quiet, speak, barge in or hang up.

Sequence: silence for `pause_ms` (and, if the bridge greets, until the greeting has been
heard), then per turn: the utterance, then silence until the answer is over (nothing playing
and no new audio for `answer_idle_ms`), until `barge_in_after_ms` of it has been heard when
barging in (only when a next turn exists), or until `turn_timeout_s` after the utterance.

A keypad turn (`SimulatorOptions.keypad`) presses keys instead of speaking: the line keeps
sending silence while `press_due_keys` hands out one key every `KEY_INTERVAL_MS`, and the
wait for the answer starts at the last key.
"""

from __future__ import annotations

import math
import wave
from dataclasses import dataclass

from bridge.audio import (
    MULAW_BYTES_PER_MS,
    MULAW_SILENCE,
    TWILIO_FRAME_BYTES,
    mulaw_silence,
    mulaw_to_pcm16,
    read_wav_as_mulaw,
    rms_dbfs,
    synthetic_speech_mulaw,
)
from bridge.simulator.playout import Playback
from bridge.simulator.simulator_options import SimulatorError, SimulatorOptions

FRAME_MS = TWILIO_FRAME_BYTES // MULAW_BYTES_PER_MS  # 20
SPLIT_SILENCE_MS = 400
SILENCE_FRAME = mulaw_silence(FRAME_MS)
GREETING = 0  # the response tag of audio the bridge plays before the caller's first turn
KEY_INTERVAL_MS = 250  # between two keys of a keypad turn
# How long after an "mm-hm" an answer that stopped may still go on (the bridge decides it
# was nothing once the caller's speech is over and its transcript came).
BACKCHANNEL_PAUSE_MS = 2000


def speech_spans(
    mulaw: bytes, min_silence_ms: int = SPLIT_SILENCE_MS, floor_dbfs: float = -50.0
) -> list[tuple[int, int]]:
    """Where a recording speaks: (first frame, frame after the last) of each stretch of
    speech, split at pauses of at least `min_silence_ms`, in 20 ms frames.

    A 20 ms frame counts as silent below max(floor_dbfs, loudest frame - 35 dB): relative to
    the recording so that a quiet background hum does not glue utterances together. Leading
    and trailing silence of each stretch is left out; shorter pauses stay inside it.
    """
    frames = [mulaw[i : i + TWILIO_FRAME_BYTES] for i in range(0, len(mulaw), TWILIO_FRAME_BYTES)]
    levels = [rms_dbfs(mulaw_to_pcm16(frame)) for frame in frames]
    loudest = max(levels, default=-math.inf)
    if loudest == -math.inf:
        return []
    threshold = max(floor_dbfs, loudest - 35.0)
    gap_frames = max(1, math.ceil(min_silence_ms / FRAME_MS))
    spans: list[tuple[int, int]] = []
    first = last = None  # voiced frame range of the stretch being collected
    for index, level in enumerate(levels):
        if level <= threshold:
            continue
        if first is not None and last is not None and index - last - 1 >= gap_frames:
            spans.append((first, last + 1))
            first = None
        if first is None:
            first = index
        last = index
    if first is not None and last is not None:
        spans.append((first, last + 1))
    return spans


def split_utterances(
    mulaw: bytes, min_silence_ms: int = SPLIT_SILENCE_MS, floor_dbfs: float = -50.0
) -> list[bytes]:
    """Cut a recording into utterances at pauses of at least `min_silence_ms` (see
    `speech_spans`)."""
    return [
        mulaw[first * TWILIO_FRAME_BYTES : end * TWILIO_FRAME_BYTES]
        for first, end in speech_spans(mulaw, min_silence_ms, floor_dbfs)
    ]


def load_utterances(options: SimulatorOptions) -> list[bytes]:
    """The caller's utterances, one per turn (a WAV's utterances are reused in a cycle)."""
    if options.wav_path:
        try:
            audio = read_wav_as_mulaw(options.wav_path)
        except (OSError, EOFError, ValueError, wave.Error) as exc:
            raise SimulatorError(f"cannot read WAV {options.wav_path}: {exc}") from None
        found = split_utterances(audio)
        if not found:
            raise SimulatorError(f"no speech found in {options.wav_path}")
        return [found[i % len(found)] for i in range(options.turns)]
    # A different seed per turn so consecutive utterances do not sound identical.
    return [
        synthetic_speech_mulaw(options.utterance_ms, seed=turn)
        for turn in range(1, options.turns + 1)
    ]


def to_frames(audio: bytes) -> list[bytes]:
    """Twilio-sized frames; the last one padded with silence."""
    frames = [audio[i : i + TWILIO_FRAME_BYTES] for i in range(0, len(audio), TWILIO_FRAME_BYTES)]
    if frames and len(frames[-1]) < TWILIO_FRAME_BYTES:
        frames[-1] += MULAW_SILENCE * (TWILIO_FRAME_BYTES - len(frames[-1]))
    return frames


@dataclass
class TurnState:
    """What the caller did in one turn (times: `*_ms` stream timestamps, `*_at` clock ms)."""

    index: int
    speech_start_ms: int
    speech_started_at: float  # clock when the first speech frame was sent
    speech_end_ms: int | None = None
    speech_ended_at: float | None = None  # clock when the last speech frame was sent
    barged_in: bool = False  # assistant audio was playing when the caller began
    intentional_barge_in: bool = False  # ...because of barge_in_after_ms
    interrupted_response: int | None = None
    interrupted_heard_ms: float | None = None  # of that response, when the caller began
    timed_out: bool = False
    ended_at: float | None = None  # clock when the caller moved on
    # A keypad turn: the keys pressed so far (None: a spoken turn). Its "speech" is the key
    # presses: it starts with the first key and ends with the last.
    keys: str | None = None
    # A short "mm-hm" said over this turn's answer: when (stream ms, clock ms), and how
    # much of the answer had been heard then.
    backchannel_ms: int | None = None
    backchannel_at: float | None = None
    backchannel_heard_ms: float | None = None


class CallerScript:
    """Decides each 20 ms frame the caller sends and tags the audio it hears by response.

    Response N is the assistant's answer to turn N (0 is a greeting before turn 1). Audio is
    attributed to the latest turn once it starts from an empty queue: while the previous
    answer is still playing, more of it may arrive after the caller began speaking, and only
    a `clear` (or the end of that answer) separates it from the new one.
    """

    def __init__(
        self, utterances: list[bytes], options: SimulatorOptions, playback: Playback
    ) -> None:
        self._utterances = [to_frames(u) for u in utterances]
        self._options = options
        self._playback = playback
        self.turns: list[TurnState] = []
        self._phase = "pause"  # pause -> speak|keys -> wait -> speak|keys ... -> done
        self._frames: list[bytes] = []
        self._pos = 0
        self._wait_started = 0.0
        self._current_response = GREETING
        self._awaiting: int | None = None
        self._keys = ""  # the keys of the current keypad turn not pressed yet
        self.speech_frames_sent = 0
        self.keys_pressed = 0
        self._backchannel: list[bytes] = []  # frames of an "mm-hm" still to say

    @property
    def done(self) -> bool:
        return self._phase == "done"

    @property
    def finished_speaking(self) -> bool:
        """All utterances have been sent: a hang-up from here on ends a complete call."""
        return len(self.turns) == len(self._utterances) and self._phase in ("wait", "done")

    def response_for_audio(self) -> int:
        """The response that audio arriving now belongs to (call after advancing playback)."""
        if self._awaiting is not None and not self._playback.is_playing:
            self._current_response, self._awaiting = self._awaiting, None
        return self._current_response

    def next_frame(self, frame_ms: int, now: float) -> bytes | None:
        """The frame covering [frame_ms, frame_ms + 20) sent at clock `now`; None to hang up."""
        if self._phase == "pause" and frame_ms >= self._options.pause_ms:
            if self._playback.pushed_bytes_by_response.get(GREETING):
                # The bridge greets: listen to the greeting like to an answer first.
                self._phase, self._wait_started = "wait", now
            else:
                self._start_turn(frame_ms, now, barge_in=False)
        if self._phase == "wait":
            self._after_wait(frame_ms, now)
        if self._phase == "done":
            return None
        if self._backchannel and self._phase == "wait":
            self.speech_frames_sent += 1
            return self._backchannel.pop(0)
        if self._phase != "speak":
            return SILENCE_FRAME  # also while pressing keys: the line stays open
        frame = self._frames[self._pos]
        self._pos += 1
        self.speech_frames_sent += 1
        if self._pos == len(self._frames):
            turn = self.turns[-1]
            turn.speech_end_ms = frame_ms + FRAME_MS
            turn.speech_ended_at = now
            self._phase, self._wait_started = "wait", now
        return frame

    def next_key_time(self) -> float | None:
        """When the next key of the current keypad turn is due (clock ms); None if none."""
        if self._phase != "keys":
            return None
        turn = self.turns[-1]
        assert turn.keys is not None
        return turn.speech_started_at + len(turn.keys) * KEY_INTERVAL_MS

    def press_due_keys(self, now: float) -> str:
        """The keys due by `now`, each handed out once; after the last, wait for the answer."""
        pressed = ""
        while (due := self.next_key_time()) is not None and due <= now:
            turn = self.turns[-1]
            key, self._keys = self._keys[0], self._keys[1:]
            turn.keys = (turn.keys or "") + key
            pressed += key
            self.keys_pressed += 1
            if not self._keys:
                turn.speech_end_ms = round(now)
                turn.speech_ended_at = now
                self._phase, self._wait_started = "wait", now
        return pressed

    def hang_up(self, now: float) -> None:
        """The call ends from outside (bridge hang-up, max duration)."""
        if self.turns and self.turns[-1].ended_at is None:
            self.turns[-1].ended_at = now
        self._phase = "done"

    def _after_wait(self, frame_ms: int, now: float) -> None:
        response = len(self.turns)  # the answer being waited for (0: the greeting)
        has_next = response < len(self._utterances)
        playback, options = self._playback, self._options
        heard_ms = playback.heard_bytes_for_response(response, now) / MULAW_BYTES_PER_MS
        turn = self.turns[-1] if self.turns and response != GREETING else None
        if (
            turn is not None
            and options.backchannel_after_ms is not None
            and turn.backchannel_ms is None
            and playback.is_playing
            and heard_ms >= options.backchannel_after_ms
        ):
            # Not a turn: said over the answer, which should pause and go on.
            turn.backchannel_ms, turn.backchannel_at = frame_ms, now
            turn.backchannel_heard_ms = heard_ms
            self._backchannel = to_frames(
                synthetic_speech_mulaw(options.backchannel_ms, seed=1000 + response)
            )
        if (
            options.barge_in_after_ms is not None
            and response != GREETING
            and has_next
            and playback.is_playing
            and heard_ms >= options.barge_in_after_ms
        ):
            self._end_turn(now)
            self._start_turn(frame_ms, now, barge_in=True)
            return
        if self._answer_is_over(response, now):
            self._next(frame_ms, now)
            return
        if now - self._wait_started >= options.turn_timeout_s * 1000:
            if self.turns:
                self.turns[-1].timed_out = True
            self._next(frame_ms, now)

    def _answer_is_over(self, response: int, now: float) -> bool:
        """Response `response` came and nothing has played or arrived for answer_idle_ms."""
        playback = self._playback
        idle_since = playback.idle_since()
        if not playback.pushed_bytes_by_response.get(response) or idle_since is None:
            return False
        quiet_since = max(idle_since, playback.last_push_ms or idle_since)
        turn = self.turns[-1] if self.turns and response != GREETING else None
        if turn is not None and turn.backchannel_at is not None:
            # The answer may be paused while the bridge makes sure the mm-hm was nothing.
            quiet_since = max(quiet_since, turn.backchannel_at + BACKCHANNEL_PAUSE_MS)
        return now - quiet_since >= self._options.answer_idle_ms

    def _next(self, frame_ms: int, now: float) -> None:
        self._end_turn(now)
        if len(self.turns) < len(self._utterances):
            self._start_turn(frame_ms, now, barge_in=False)
        else:
            self._phase = "done"

    def _end_turn(self, now: float) -> None:
        if self.turns:
            self.turns[-1].ended_at = now

    def _start_turn(self, frame_ms: int, now: float, barge_in: bool) -> None:
        index = self._open_turn(frame_ms, now, barge_in).index
        keys = self._options.keypad.get(index)
        if keys:
            self.turns[-1].keys = ""
            self._keys = keys
            self._phase = "keys"
            return
        self._frames = self._utterances[index - 1]
        self._pos = 0
        self._phase = "speak"

    def _open_turn(self, frame_ms: int, now: float, barge_in: bool) -> TurnState:
        """A new turn begins with the frame at `frame_ms`: audio that starts from an empty
        queue from now on answers it."""
        index = len(self.turns) + 1
        playing = self._playback.is_playing
        turn = TurnState(
            index=index,
            speech_start_ms=frame_ms,
            speech_started_at=now,
            barged_in=playing,
            intentional_barge_in=barge_in,
        )
        if playing:
            turn.interrupted_response = self._current_response
            turn.interrupted_heard_ms = (
                self._playback.heard_bytes_for_response(self._current_response, now)
                / MULAW_BYTES_PER_MS
            )
        self.turns.append(turn)
        self._awaiting = index
        return turn
