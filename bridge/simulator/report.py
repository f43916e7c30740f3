"""What the simulated caller measured, as data and as a per-turn timeline.

Clock times (`*_at_ms`) are milliseconds since the simulator sent `start`; caller speech
times are the `media.timestamp` values of the frames, which share that origin.

Latencies count from the end of the caller's speech (the end of their last speech frame, or
their last key), the instant the bridge's records, console and metrics count from too
(`bridge.call.TurnClock`), so that one call's figures agree: "heard after" is the bridge's
"first audio heard", "arrived after" its "first audio sent" plus the network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bridge.audio import MULAW_BYTES_PER_MS
from bridge.simulator.playout import Playback, TruncationRecord
from bridge.simulator.script import GREETING, CallerScript, TurnState


@dataclass
class HeardAudio:
    """A stretch of assistant audio the caller heard without a break."""

    start_ms: float
    end_ms: float
    nbytes: int
    item_id: str
    response: int  # 0: greeting, N: answer to turn N
    cut: bool  # ended by a clear


@dataclass
class TurnReport:
    index: int
    speech_start_ms: int
    speech_end_ms: int | None  # None: the call ended mid-utterance
    barged_in: bool  # the caller began while assistant audio was playing
    intentional_barge_in: bool  # ...because barge_in_after_ms said so
    barge_in_heard_ms: float | None  # of the interrupted answer, when the caller began
    clear_latency_ms: float | None  # first barge-in speech frame sent -> clear received
    truncated_item_id: str | None
    truncated_at_ms: float | None  # audio_end_ms of the bridge's `truncated:` mark
    truncated_heard_ms: float | None  # what the caller heard of that item (0.1 ms)
    truncation_delta_ms: float | None  # heard - truncated
    # How long after the clear the truncation came: ~0 when the bridge cuts at once,
    # the pause (INTERRUPTIONS=confirm) while it made sure it was an interruption.
    cut_after_clear_ms: float | None
    first_audio_heard_at_ms: float | None
    response_latency_ms: float | None  # end of caller speech -> first answer audio heard
    arrival_latency_ms: float | None  # end of caller speech -> first answer audio arrived
    answer_heard_ms: float
    answer_complete: bool | None  # None: no answer; False: cut by a clear or the hang-up
    answer_items: list[str] = field(default_factory=list)
    timed_out: bool = False
    # A keypad turn: the keys the caller pressed instead of speaking (None: it spoke). Its
    # speech_* times are those of the first and the last key.
    keys: str | None = None
    # An "mm-hm" said over the answer (--backchannel-after): when, how far into the answer,
    # how soon the answer stopped, and whether (and after how long a pause) it went on.
    backchannel_ms: int | None = None
    backchannel_heard_ms: float | None = None
    backchannel_clear_ms: float | None = None  # mm-hm's first frame -> clear received
    paused_ms: float | None = None  # clear -> the answer audible again
    resumed: bool | None = None  # None: no pause (the answer did not stop)


@dataclass
class CallReport:
    call_sid: str
    account_sid: str
    stream_sid: str
    webhook_url: str
    stream_url: str
    parameters: dict[str, str]
    turns: list[TurnReport]
    greeting_heard_ms: float | None  # None: the bridge did not speak first
    greeting_complete: bool | None
    frames_sent: int
    speech_frames_sent: int
    media_received: int
    bytes_received: int
    marks_received: int
    marks_echoed: int
    clears_received: int
    truncations: list[TruncationRecord]
    heard_by_item: dict[str, int]  # item_id -> mu-law bytes heard
    heard_segments: list[HeardAudio]
    heard_audio: bytes  # everything heard, concatenated (no gaps)
    duration_ms: float
    end_reason: str  # "completed" | "closed_by_bridge" | "max_duration"
    completed: bool  # every utterance was sent before the call ended
    closed_by_bridge: bool = False
    close_code: int | None = None
    close_reason: str = ""
    notes: list[str] = field(default_factory=list)
    digits_sent: int = 0  # Twilio `dtmf` messages sent (keypad turns)
    wav_error: str | None = None  # why the --out WAV could not be written

    @property
    def ended_by(self) -> str:
        """Who ended the call: "caller" (hung up after the script), "bridge" (closed the
        stream: a hang-up or transfer through Twilio's REST API, or a failure; see
        `completed` and `close_code`) or "timeout" (`max_duration_s`)."""
        return {"closed_by_bridge": "bridge", "max_duration": "timeout"}.get(
            self.end_reason, "caller"
        )

    @property
    def heard_ms_by_item(self) -> dict[str, float]:
        return {item: n / MULAW_BYTES_PER_MS for item, n in self.heard_by_item.items()}


def _round1(ms: float) -> float:
    return round(ms, 1)


def _heard_audio(playback: Playback) -> list[HeardAudio]:
    """Merge back-to-back chunks of one item into continuous stretches."""
    merged: list[HeardAudio] = []
    for segment in playback.segments:
        item = playback.item_of(segment)
        last = merged[-1] if merged else None
        if (
            last is not None
            and not last.cut
            and last.item_id == item
            and last.response == segment.response
            and math.isclose(last.end_ms, segment.start_ms, abs_tol=1e-6)
        ):
            last.end_ms = segment.end_ms
            last.nbytes += segment.nbytes
            last.cut = segment.cut
            continue
        merged.append(
            HeardAudio(
                start_ms=segment.start_ms,
                end_ms=segment.end_ms,
                nbytes=segment.nbytes,
                item_id=item,
                response=segment.response,
                cut=segment.cut,
            )
        )
    return merged


def _since_speech_ended(turn: TurnState, at_ms: float | None) -> float | None:
    if at_ms is None or turn.speech_end_ms is None:
        return None
    return _round1(at_ms - turn.speech_end_ms)


def _turn_report(
    turn: TurnState,
    window_end: float,
    playback: Playback,
    heard: list[HeardAudio],
    heard_by_item: dict[str, int],
) -> TurnReport:
    response = turn.index
    mine = [h for h in heard if h.response == response]
    first_heard = min((h.start_ms for h in mine), default=None)
    first_arrived = playback.first_push_ms_by_response.get(response)
    pushed = playback.pushed_bytes_by_response.get(response, 0)
    # Events between this turn's first speech frame and the next turn's belong to this turn.
    in_window = turn.speech_started_at, window_end
    clear_latency = clear = None
    if turn.barged_in:
        clear = next((c for c in playback.clears if in_window[0] <= c.at_ms < in_window[1]), None)
        clear_latency = None if clear is None else clear.at_ms - turn.speech_started_at
    truncation = next(
        (t for t in playback.truncations if in_window[0] <= t.at_ms < in_window[1]), None
    )
    heard_of_truncated = delta = cut_after = None
    if truncation is not None and clear is not None:
        # INTERRUPTIONS=confirm: silenced at once, cut once the bridge was sure.
        cut_after = _round1(max(0.0, truncation.at_ms - clear.at_ms))
    if truncation is not None:
        heard_of_truncated = _round1(heard_by_item.get(truncation.item_id, 0) / MULAW_BYTES_PER_MS)
        delta = _round1(heard_of_truncated - truncation.audio_end_ms)
    bc_clear_ms, paused_ms, resumed = _backchannel(turn, playback, mine, window_end)
    items: list[str] = []
    for h in mine:
        if h.item_id not in items:
            items.append(h.item_id)
    return TurnReport(
        index=turn.index,
        speech_start_ms=turn.speech_start_ms,
        speech_end_ms=turn.speech_end_ms,
        barged_in=turn.barged_in,
        intentional_barge_in=turn.intentional_barge_in,
        barge_in_heard_ms=(
            None if turn.interrupted_heard_ms is None else _round1(turn.interrupted_heard_ms)
        ),
        clear_latency_ms=None if clear_latency is None else _round1(clear_latency),
        truncated_item_id=None if truncation is None else truncation.item_id,
        truncated_at_ms=None if truncation is None else truncation.audio_end_ms,
        truncated_heard_ms=heard_of_truncated,
        truncation_delta_ms=delta,
        cut_after_clear_ms=cut_after,
        first_audio_heard_at_ms=None if first_heard is None else _round1(first_heard),
        response_latency_ms=_since_speech_ended(turn, first_heard),
        arrival_latency_ms=_since_speech_ended(turn, first_arrived),
        answer_heard_ms=playback.heard_bytes_by_response.get(response, 0) / MULAW_BYTES_PER_MS,
        answer_complete=(
            None
            if not pushed
            # A resumed answer's cut stretch was sent again: it is complete if its last
            # stretch played to the end.
            else (resumed is True and bool(mine) and not mine[-1].cut)
            or playback.unheard_bytes_by_response.get(response, 0) == 0
        ),
        answer_items=items,
        timed_out=turn.timed_out,
        keys=turn.keys,
        backchannel_ms=turn.backchannel_ms,
        backchannel_heard_ms=(
            None if turn.backchannel_heard_ms is None else _round1(turn.backchannel_heard_ms)
        ),
        backchannel_clear_ms=bc_clear_ms,
        paused_ms=paused_ms,
        resumed=resumed,
    )


def _backchannel(
    turn: TurnState, playback: Playback, mine: list[HeardAudio], window_end: float
) -> tuple[float | None, float | None, bool | None]:
    """What the mm-hm said over this turn's answer did: how soon the answer stopped, and
    whether (and after how long a pause) it went on. (None, None, None): it did not stop."""
    said = turn.backchannel_at
    if said is None:
        return None, None, None
    clear = next((c for c in playback.clears if said <= c.at_ms < window_end), None)
    if clear is None:
        return None, None, None
    again = next((h for h in mine if h.start_ms >= clear.at_ms), None)
    # Cut, the bridge says where (a truncation mark), and what follows is another answer.
    cut = any(clear.at_ms <= t.at_ms < window_end for t in playback.truncations)
    if again is None or cut:
        return _round1(clear.at_ms - said), None, False
    return _round1(clear.at_ms - said), _round1(again.start_ms - clear.at_ms), True


def build_report(
    *,
    playback: Playback,
    script: CallerScript,
    call_sid: str,
    account_sid: str,
    stream_sid: str,
    webhook_url: str,
    stream_url: str,
    parameters: dict[str, str],
    frames_sent: int,
    media_received: int,
    bytes_received: int,
    marks_received: int,
    marks_echoed: int,
    clears_received: int,
    duration_ms: float,
    end_reason: str,
    completed: bool,
    closed_by_bridge: bool,
    close_code: int | None,
    close_reason: str,
    notes: list[str],
    digits_sent: int = 0,
) -> CallReport:
    """Assemble the report once the call is over and `playback.finish()` was called."""
    heard = _heard_audio(playback)
    heard_by_item = playback.heard_by_item()
    turns = []
    for i, turn in enumerate(script.turns):
        window_end = (
            script.turns[i + 1].speech_started_at if i + 1 < len(script.turns) else math.inf
        )
        turns.append(_turn_report(turn, window_end, playback, heard, heard_by_item))
    greeting_pushed = playback.pushed_bytes_by_response.get(GREETING, 0)
    return CallReport(
        call_sid=call_sid,
        account_sid=account_sid,
        stream_sid=stream_sid,
        webhook_url=webhook_url,
        stream_url=stream_url,
        parameters=dict(parameters),
        turns=turns,
        greeting_heard_ms=(
            playback.heard_bytes_by_response.get(GREETING, 0) / MULAW_BYTES_PER_MS
            if greeting_pushed
            else None
        ),
        greeting_complete=(
            playback.unheard_bytes_by_response.get(GREETING, 0) == 0 if greeting_pushed else None
        ),
        frames_sent=frames_sent,
        speech_frames_sent=script.speech_frames_sent,
        media_received=media_received,
        bytes_received=bytes_received,
        marks_received=marks_received,
        marks_echoed=marks_echoed,
        clears_received=clears_received,
        truncations=list(playback.truncations),
        heard_by_item=heard_by_item,
        heard_segments=heard,
        heard_audio=bytes(playback.heard_audio),
        duration_ms=duration_ms,
        end_reason=end_reason,
        completed=completed,
        closed_by_bridge=closed_by_bridge,
        close_code=close_code,
        close_reason=close_reason,
        notes=list(notes),
        digits_sent=digits_sent,
    )


def _ms(value: float) -> str:
    return f"{value:.0f} ms"


LEGEND = (
    "legend  times: s since the stream started; 'caller': when the caller spoke",
    "        'heard after': from the end of the caller's speech (their last speech frame or",
    "        key) until the answer began to play: the console's 'First audio heard' for this",
    "        call; 'arrived after': until it reached the phone: the console's 'First audio",
    "        sent', plus the network",
    "        Δ: what the caller heard of the cut answer minus where the bridge truncated it;",
    "        within a few ms is exact (+1.9 ms when the bridge transcodes to pcm16: it takes",
    "        off its resampler's delay, which the caller still hears)",
)
_INDENT = "        "


def _answer_line(turn: TurnReport) -> str:
    if turn.answer_complete is None:
        return "no answer" + (" (timed out)" if turn.timed_out else "")
    parts = []
    if turn.response_latency_ms is not None:
        arrived = turn.arrival_latency_ms
        also = "" if arrived is None else f" (arrived after {_ms(arrived)})"
        parts.append(f"first audio heard after {_ms(turn.response_latency_ms)}{also}")
    state = "complete" if turn.answer_complete else "cut"
    parts.append(f"heard {_ms(turn.answer_heard_ms)} ({state})")
    if turn.timed_out:
        parts.append("(turn timed out)")
    return f"answer {turn.index}  " + "; ".join(parts)


def _barge_in_line(cut: str, turn: TurnReport) -> str:
    """How `turn` began: over the `cut` answer (or greeting)."""
    label = "BARGE-IN" if turn.intentional_barge_in else "the caller spoke over the assistant"
    heard = turn.barge_in_heard_ms or 0.0
    text = f"{label} at {turn.speech_start_ms / 1000:.2f} s, {_ms(heard)} into {cut}: "
    text += (
        "no clear received"
        if turn.clear_latency_ms is None
        else f"clear after {_ms(turn.clear_latency_ms)}"
    )
    if turn.truncated_item_id is None:
        return text + "; no truncation mark"
    confirmed = turn.cut_after_clear_ms
    paused = f" after a {_ms(confirmed)} pause" if confirmed is not None and confirmed > 50 else ""
    return text + (
        f"; truncated {turn.truncated_item_id}{paused} at {turn.truncated_at_ms:g} ms, "
        f"caller heard {turn.truncated_heard_ms:.1f} ms (Δ {turn.truncation_delta_ms:+.1f} ms)"
    )


def _backchannel_line(turn: TurnReport) -> str:
    """The mm-hm said over the answer, and what became of the answer."""
    at = (turn.backchannel_ms or 0) / 1000
    text = f"mm-hm at {at:.2f} s, {_ms(turn.backchannel_heard_ms or 0.0)} into the answer: "
    if turn.resumed is None:
        return text + "the answer did not stop"
    stopped = f"stopped after {_ms(turn.backchannel_clear_ms or 0.0)}"
    if turn.resumed:
        return text + f"{stopped}, paused {_ms(turn.paused_ms or 0.0)}, then RESUMED"
    return text + f"{stopped}, and was CUT (taken for an interruption)"


def _turn_lines(turn: TurnReport, following: TurnReport | None) -> list[str]:
    """The turn in the order it happened: the caller, the answer, and the barge-in that cut
    the answer (which began the next turn)."""
    end = "…" if turn.speech_end_ms is None else f"{turn.speech_end_ms / 1000:.2f}"
    pressed = "" if turn.keys is None else f"pressed {turn.keys or '(nothing)'} "
    lines = [f"turn {turn.index}  caller {pressed}{turn.speech_start_ms / 1000:.2f}–{end} s"]
    lines.append(_INDENT + _answer_line(turn))
    if turn.backchannel_ms is not None:
        lines.append(_INDENT + _backchannel_line(turn))
    if following is not None and following.barged_in:
        lines.append(_INDENT + _barge_in_line(f"answer {turn.index}", following))
    return lines


def format_report(report: CallReport) -> str:
    """The call as a human-readable per-turn timeline."""
    lines = [f"call {report.call_sid} stream {report.stream_sid} via {report.stream_url}"]
    if report.parameters:
        # A stream token admits a call: shown by length only, like any secret.
        shown = ", ".join(
            f"{k}=<{len(v)} chars>" if k == "token" else f"{k}={v}"
            for k, v in report.parameters.items()
        )
        lines.append(f"parameters  {shown}")
    if report.greeting_heard_ms is not None:
        state = "complete" if report.greeting_complete else "cut"
        lines.append(f"greeting  heard {_ms(report.greeting_heard_ms)} ({state})")
    turns = report.turns
    if turns and turns[0].barged_in:  # the first turn cut the greeting
        lines.append(_INDENT + _barge_in_line("the greeting", turns[0]))
    for i, turn in enumerate(turns):
        following = turns[i + 1] if i + 1 < len(turns) else None
        lines.extend(_turn_lines(turn, following))
    if turns:
        lines.extend(LEGEND)
    keys = f", {report.digits_sent} keypad digits" if report.digits_sent else ""
    lines.append(
        f"sent {report.frames_sent} frames ({report.speech_frames_sent} speech){keys}; "
        f"received {report.media_received} media ({report.bytes_received} B), "
        f"{report.marks_received} marks, {report.clears_received} clears; "
        f"echoed {report.marks_echoed} marks"
    )
    if report.heard_by_item:
        heard = ", ".join(f"{item} {ms:.1f} ms" for item, ms in report.heard_ms_by_item.items())
        lines.append(f"heard  {heard}")
    seconds = f"{report.duration_ms / 1000:.1f} s"
    if report.closed_by_bridge:
        reason = f" {report.close_reason!r}" if report.close_reason else ""
        when = "" if report.completed else " EARLY"
        lines.append(
            f"ended{when}: the bridge closed the stream (code {report.close_code}{reason})"
            f" after {seconds}"
        )
    elif report.end_reason == "max_duration":
        lines.append(f"ended: max duration reached after {seconds}")
    else:
        lines.append(f"ended: caller hung up after {seconds}")
    lines.extend(f"note: {note}" for note in report.notes)
    return "\n".join(lines)
