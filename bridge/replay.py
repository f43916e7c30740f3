"""`phone-bridge replay CALL_ID|FILE URL`: a recorded call becomes a regression test.

The caller channel of a recording (RECORDING=bridge: the left channel; any mono file is
taken as the caller) is played into a running bridge at real-time pace, frame for frame
where it was recorded, by the simulator (same Twilio signing, same playback of marks and
clears). What the caller heard this time is set beside what the original call's record
says they heard: per turn, the latency to the first audio heard and where the caller cut
the answer off, then what changed.

Turns are paired by where the caller stopped speaking: the recording fixes that instant,
so a turn of the original and of the replay that end within `PAIRING_MS` of each other are
the same turn. Keys are not replayed: a record counts key presses but never keeps their
digits.
"""

from __future__ import annotations

import argparse
import asyncio
import audioop
import contextlib
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from bridge.arguments import OneLineErrorParser, non_negative_int
from bridge.audio import MULAW_RATE, pcm16_to_mulaw
from bridge.core.timeline import Moment
from bridge.object_storage import described
from bridge.recording_storage import ObjectRecording, RecordingStorage
from bridge.simulator.caller import simulate_call
from bridge.simulator.command import add_bridge_arguments
from bridge.simulator.replay_script import ReplayScript
from bridge.simulator.report import CallReport, format_report
from bridge.simulator.simulator_options import SimulatorError, SimulatorOptions

if TYPE_CHECKING:
    from bridge.records.model import CallRecord
    from bridge.records.store import CallStore
    from bridge.settings import Settings

CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
PAIRING_MS = 400.0  # turns ending this close together are the same turn
LATENCY_TOLERANCE_MS = 150  # a first-audio latency that moved less is unchanged
CUT_TOLERANCE_MS = 40  # a truncation point that moved less (two frames) is unchanged
# After the recording ends, the caller listens for the rest of the answer at most this long
# (the call's --timeout bounds it too).
LISTEN_AFTER_S = 15.0
READ_BLOCK_FRAMES = 8000 * 10  # 10 s of audio read at a time: memory bounded by the block
LEGEND = (
    "legend  caller stopped: s since the stream started; heard: from the end of the caller's",
    "        speech until the answer began to play; cut: where the caller's speech cut the",
    "        answer off (how much of it they had heard)",
)
ANSWERED_AT_EXIT = 0  # the replay ran (what changed is printed)
FAILED_AT_EXIT = 1  # the replay could not be carried out
CHANGED_AT_EXIT = 3  # --fail-on-change and something changed


class ReplayError(Exception):
    """A replay that cannot be done; the message is one line for the command line."""


@dataclass(frozen=True)
class ReplaySource:
    caller: bytes  # the caller's audio: 8 kHz mu-law, from the stream's start
    described: str  # what is replayed, for the first line
    original: CallRecord | None  # the original call's record, to compare with


@dataclass(frozen=True)
class TurnFigures:
    """One turn as the caller lived it (ms on the call's clock, from the stream's start)."""

    caller_stopped_ms: float | None
    heard_after_ms: float | None  # the end of their speech -> the answer began to play
    cut: bool  # the caller spoke over this turn's answer and the bridge stopped it
    truncated_at_ms: float | None  # where the answer was cut (what the caller had heard)


@dataclass(frozen=True)
class TurnRow:
    was: TurnFigures | None  # None: only in the replay
    now: TurnFigures | None  # None: only in the original


# --- what is replayed -------------------------------------------------------------------


def read_caller_channel(source: Path | BinaryIO, label: str | None = None) -> bytes:
    """The caller's audio in a recording (its left channel; a mono file is the caller) as
    8 kHz mu-law, read a block at a time: any format libsndfile reads (WAV, FLAC, Ogg), from
    a file or (`label` naming it) an object being read."""
    import soundfile

    name = label or str(source)
    try:
        with soundfile.SoundFile(source) as audio:
            rate = audio.samplerate
            state = None
            out = bytearray()
            for block in audio.blocks(READ_BLOCK_FRAMES, dtype="int16", always_2d=True):
                pcm = np.ascontiguousarray(block[:, 0]).tobytes()
                if rate != MULAW_RATE:
                    pcm, state = audioop.ratecv(pcm, 2, 1, rate, MULAW_RATE, state)
                out += pcm16_to_mulaw(pcm)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        raise ReplayError(f"cannot read {name} as audio: {exc}") from None
    if not out:
        raise ReplayError(f"{name} holds no audio")
    return bytes(out)


@dataclass(frozen=True)
class CallRecords:
    """Where a bridge keeps its call records: a store to open (read only here), and how
    to name it in a message."""

    open_store: Callable[[], CallStore]
    where: str  # e.g. "CALL_DB_PATH calls.db" (never a password)

    @classmethod
    def sqlite(cls, path: str) -> CallRecords | None:
        """A SQLite file's records; None if there is no such file (none is made)."""
        from bridge.records.store import SQLiteCallStore

        if not os.path.isfile(path):
            return None
        return cls(lambda: SQLiteCallStore(path), f"CALL_DB_PATH {path}")

    @classmethod
    def of(cls, settings: Settings) -> CallRecords | None:
        """The records the settings name: CALL_DB_URL (PostgreSQL), else CALL_DB_PATH."""
        if settings.call_db_url:
            from bridge.records.backends import store_for
            from bridge.records.postgres import safe_url

            url = settings.call_db_url

            def postgres() -> CallStore:
                store = store_for(settings)
                assert store is not None
                return store

            return cls(postgres, f"CALL_DB_URL {safe_url(url)}")
        return cls.sqlite(settings.call_db_path) if settings.call_db_path else None

    async def get(self, call_sid: str) -> CallRecord | None:
        store = self.open_store()
        try:
            await store.open()
            return await store.get(call_sid)
        except Exception as exc:  # a database that is away, or not one
            why = described(exc)
            raise ReplayError(f"cannot read the call records ({self.where}): {why}") from None
        finally:
            with contextlib.suppress(Exception):
                await store.close()


def load_source(
    call_or_file: str, records: CallRecords | None, recordings: RecordingStorage | None
) -> ReplaySource:
    """A recording file (its record too, when its name is a call the records know), or a
    call's record and its recording (a file in RECORDINGS_DIR, or an object under
    RECORDINGS_URL)."""
    path = Path(call_or_file)
    if path.is_file():
        stem = path.name.split(".", 1)[0]
        known = records is not None and CALL_SID.fullmatch(stem)
        record = asyncio.run(records.get(stem)) if known and records is not None else None
        return ReplaySource(read_caller_channel(path), str(path), record)
    if not CALL_SID.fullmatch(call_or_file):
        raise ReplayError(
            f"{call_or_file!r} is neither a file nor a call's id (CA followed by 32 hex digits)"
        )
    if records is None:
        raise ReplayError(
            f"no call records to find {call_or_file} in (CALL_DB_URL and CALL_DB_PATH are "
            "unset, or CALL_DB_PATH is no file); pass the recording's file instead"
        )
    record = asyncio.run(records.get(call_or_file))
    if record is None:
        raise ReplayError(f"no call {call_or_file} in the call records ({records.where})")
    recording = record.recording
    if recording is None:
        raise ReplayError(f"call {call_or_file} was not recorded (RECORDING was off)")
    if recording.kind != "bridge":
        raise ReplayError(
            f"call {call_or_file} was recorded by Twilio ({recording.sid}): download its "
            "dual-channel audio and pass the file"
        )
    found = recordings.find(recording) if recordings is not None else None
    where = recordings.where if recordings is not None else "RECORDINGS_DIR"
    try:
        there = found is not None and found.version() is not None
    except Exception as exc:  # the bucket is away, or refuses these credentials
        raise ReplayError(f"cannot reach {recording.url}: {described(exc)}") from None
    if found is None or not there:
        raise ReplayError(
            f"the recording of call {call_or_file} ({recording.url}) is not in {where} "
            "(RECORDINGS_DIR, RECORDINGS_URL): deleted, or kept elsewhere?"
        )
    label = found.url if isinstance(found, ObjectRecording) else str(found.path)
    try:
        source = found.open()
    except Exception as exc:
        raise ReplayError(f"cannot read {label}: {described(exc)}") from None
    try:
        caller = read_caller_channel(source, label)
    finally:
        if not isinstance(source, Path):
            source.close()
    return ReplaySource(caller, f"call {call_or_file} ({label})", record)


# --- the comparison ------------------------------------------------------------------------


def original_turns(record: CallRecord) -> list[TurnFigures]:
    return [
        TurnFigures(
            caller_stopped_ms=turn.caller_stopped_ms,
            heard_after_ms=_since(turn.caller_stopped_ms, turn.first_audio_heard_ms),
            cut=turn.barged_in,
            truncated_at_ms=None if turn.truncated_at_ms is None else float(turn.truncated_at_ms),
        )
        for turn in record.turns
    ]


def replayed_turns(report: CallReport) -> list[TurnFigures]:
    """The simulator's turns, told like a record's: a barge-in belongs to the answer it cut
    (the simulator files it under the turn it began)."""
    figures = []
    for i, turn in enumerate(report.turns):
        following = report.turns[i + 1] if i + 1 < len(report.turns) else None
        cut = (
            following is not None and following.barged_in and following.clear_latency_ms is not None
        )
        figures.append(
            TurnFigures(
                caller_stopped_ms=turn.speech_end_ms,
                heard_after_ms=turn.response_latency_ms,
                cut=cut,
                truncated_at_ms=following.truncated_at_ms if cut and following else None,
            )
        )
    return figures


def pair_turns(was: list[TurnFigures], now: list[TurnFigures]) -> list[TurnRow]:
    """Pair the turns that ended at the same point of the recording (within PAIRING_MS),
    in order; a turn with no partner gets a row of its own."""
    rows: list[TurnRow] = []
    j = 0
    for original in was:
        stopped = original.caller_stopped_ms
        match = None
        if stopped is not None:
            for k in range(j, len(now)):
                other = now[k].caller_stopped_ms
                if other is not None and abs(other - stopped) <= PAIRING_MS:
                    match = k
                    break
                if other is not None and other > stopped + PAIRING_MS:
                    break
        if match is None:
            rows.append(TurnRow(original, None))
            continue
        rows.extend(TurnRow(None, extra) for extra in now[j:match])
        rows.append(TurnRow(original, now[match]))
        j = match + 1
    rows.extend(TurnRow(None, extra) for extra in now[j:])
    return rows


def what_changed(
    rows: list[TurnRow], latency_tolerance_ms: float, cut_tolerance_ms: float
) -> list[str]:
    """One line per difference the caller would notice, in turn order."""
    changes = []
    for number, row in enumerate(rows, 1):
        was, now = row.was, row.now
        if now is None:
            changes.append(f"turn {number} of the original has no turn in the replay")
            continue
        if was is None:
            changes.append(f"turn {number} is new: the original had no turn ending there")
            continue
        if (was.heard_after_ms is None) != (now.heard_after_ms is None):
            heard = "was answered and now is not" if now.heard_after_ms is None else "is now"
            changes.append(f"turn {number} {heard} answered")
        elif (
            was.heard_after_ms is not None
            and now.heard_after_ms is not None
            and abs(now.heard_after_ms - was.heard_after_ms) > latency_tolerance_ms
        ):
            changes.append(
                f"turn {number}: first audio heard after {now.heard_after_ms:.0f} ms, "
                f"was {was.heard_after_ms:.0f} ms ({now.heard_after_ms - was.heard_after_ms:+.0f})"
            )
        if was.cut != now.cut:
            changes.append(
                f"turn {number}: the caller "
                + ("now cuts its answer off" if now.cut else "no longer cuts its answer off")
            )
        elif (
            was.truncated_at_ms is not None
            and now.truncated_at_ms is not None
            and abs(now.truncated_at_ms - was.truncated_at_ms) > cut_tolerance_ms
        ):
            changes.append(
                f"turn {number}: its answer was cut at {now.truncated_at_ms:.0f} ms, "
                f"was {was.truncated_at_ms:.0f} ms"
            )
    return changes


def _since(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} ms"


def _cut(figures: TurnFigures | None) -> str:
    if figures is None:
        return "—"
    if not figures.cut:
        return "no"
    return "cut" if figures.truncated_at_ms is None else f"at {figures.truncated_at_ms:.0f} ms"


def _change(was: float | None, now: float | None) -> str:
    return "" if was is None or now is None else f"{now - was:+.0f} ms"


def _table(rows: list[TurnRow]) -> Iterator[str]:
    widths = (4, 15, 9, 9, 9, 14, 14)
    header = ("turn", "caller stopped", "heard:was", "now", "change", "cut:was", "now")
    yield "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()
    for number, row in enumerate(rows, 1):
        either = row.was or row.now
        stopped = either.caller_stopped_ms if either is not None else None
        was_heard = row.was.heard_after_ms if row.was else None
        now_heard = row.now.heard_after_ms if row.now else None
        cells = (
            str(number),
            "—" if stopped is None else f"{stopped / 1000:.2f} s",
            _ms(was_heard),
            _ms(now_heard),
            _change(was_heard, now_heard),
            _cut(row.was),
            _cut(row.now),
        )
        yield "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def _ended(report: CallReport) -> str:
    seconds = f"{report.duration_ms / 1000:.1f} s"
    if report.closed_by_bridge:
        return f"the bridge hung up (code {report.close_code}) after {seconds}"
    if report.end_reason == "max_duration":
        return f"--timeout reached after {seconds}"
    return f"the recording ended and the caller hung up after {seconds}"


def format_comparison(
    source: ReplaySource,
    report: CallReport,
    rows: list[TurnRow],
    changes: list[str],
    latency_tolerance_ms: float,
    cut_tolerance_ms: float,
) -> str:
    original = source.original
    lines = [f"replayed {source.described} as call {report.call_sid}"]
    if original is None:
        lines.append("no record of the original call to compare with: the replay's turns only")
    else:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(original.started_at))
        lines.append(
            f"original: {when}, {original.ended_at - original.started_at:.1f} s, "
            f"{len(original.turns)} turns, {original.barge_ins} barge-ins, ended: "
            f"{original.end_reason}"
        )
        keys = sum(1 for entry in original.timeline if entry.moment is Moment.KEYS)
        if keys:
            lines.append(
                f"note: the original caller pressed keys {keys} times; a replay cannot (the "
                "record never keeps the digits)"
            )
    lines.append(
        f"replay: {len(report.turns)} turns, {report.clears_received} barge-ins, "
        f"ended: {_ended(report)}"
    )
    lines.append("")
    lines.extend(_table(rows))
    lines.append("")
    if original is not None:
        paired = [
            now.heard_after_ms - was.heard_after_ms
            for row in rows
            if (was := row.was) is not None
            and (now := row.now) is not None
            and was.heard_after_ms is not None
            and now.heard_after_ms is not None
        ]
        if paired:
            lines.append(
                f"first audio heard: median change {statistics.median(paired):+.0f} ms over "
                f"{len(paired)} turns answered in both"
            )
        if changes:
            lines.append(f"changed ({len(changes)}):")
            lines.extend(f"  - {change}" for change in changes)
        else:
            lines.append(
                f"unchanged: the same turns, answers heard within ±{latency_tolerance_ms:g} ms "
                f"of the original, the same barge-ins cut within {cut_tolerance_ms:g} ms"
            )
    lines.extend(LEGEND)
    return "\n".join(lines)


# --- the command ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="phone-bridge replay",
        description=(
            "Play the caller of a recorded call into a running bridge at real-time pace, as "
            "Twilio would, and print what the caller heard beside what they heard the first "
            "time: per turn, the latency to the answer and where barge-ins cut it off."
        ),
    )
    parser.add_argument(
        "source",
        metavar="CALL_ID|FILE",
        help="a call recorded with RECORDING=bridge (found through CALL_DB_URL or "
        "CALL_DB_PATH, and RECORDINGS_DIR or RECORDINGS_URL), or a recording's file (stereo: "
        "the left channel is the caller; mono: all of it)",
    )
    add_bridge_arguments(parser, "URL")
    parser.add_argument(
        "--from",
        dest="from_number",
        help="the caller's number (default: the original's, else +15550001111)",
    )
    parser.add_argument(
        "--to",
        dest="to_number",
        help="the number called, which picks the profile (default: the original's, else "
        "+15550002222)",
    )
    parser.add_argument(
        "--latency-tolerance",
        type=non_negative_int,
        default=LATENCY_TOLERANCE_MS,
        metavar="MS",
        help=f"a first-audio latency that moved less is unchanged ({LATENCY_TOLERANCE_MS})",
    )
    parser.add_argument(
        "--cut-tolerance",
        type=non_negative_int,
        default=CUT_TOLERANCE_MS,
        metavar="MS",
        help=f"a truncation point that moved less is unchanged ({CUT_TOLERANCE_MS})",
    )
    parser.add_argument(
        "--fail-on-change",
        action="store_true",
        help=f"exit {CHANGED_AT_EXIT} when anything changed (a regression test in a script)",
    )
    parser.add_argument(
        "--out", metavar="FILE", help="write what the caller heard this time as a WAV"
    )
    parser.add_argument(
        "--details", action="store_true", help="also print the simulator's per-turn report"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        source = _source_from(args.source)
        original = source.original
        options = SimulatorOptions(
            webhook_url=args.webhook_url,
            auth_token=args.auth_token or None,
            from_number=args.from_number or (original.from_number if original else "+15550001111"),
            to_number=args.to_number or (original.to_number if original else "+15550002222"),
            max_duration_s=len(source.caller) / MULAW_RATE + LISTEN_AFTER_S + 5,
            turn_timeout_s=LISTEN_AFTER_S,
            out_path=args.out,
        )
        options.validate()
    except (ReplayError, SimulatorError) as exc:
        parser.error(str(exc))
    try:
        report = asyncio.run(
            simulate_call(options, lambda playback: ReplayScript(source.caller, options, playback))
        )
    except SimulatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return FAILED_AT_EXIT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return FAILED_AT_EXIT
    was = original_turns(original) if original is not None else []
    rows = pair_turns(was, replayed_turns(report))
    changes = what_changed(rows, args.latency_tolerance, args.cut_tolerance) if original else []
    text = format_comparison(
        source, report, rows, changes, args.latency_tolerance, args.cut_tolerance
    )
    if args.details:
        text += "\n\n" + format_report(report)
    print(text, flush=True)
    if report.wav_error is not None:
        print(f"error: could not write --out {args.out}: {report.wav_error}", file=sys.stderr)
        return FAILED_AT_EXIT
    if args.fail_on_change and changes:
        return CHANGED_AT_EXIT
    return ANSWERED_AT_EXIT


def _source_from(call_or_file: str) -> ReplaySource:
    """Calls are found where the bridge keeps them: its settings' CALL_DB_URL or
    CALL_DB_PATH, and RECORDINGS_DIR or RECORDINGS_URL (a file needs them only to find its
    original record, if any)."""
    from bridge.settings import ConfigError, load_settings

    try:
        settings = load_settings()
    except ConfigError as exc:
        if Path(call_or_file).is_file():
            return load_source(call_or_file, None, None)
        raise ReplayError(
            "cannot read the settings that find the call: " + "; ".join(exc.problems)
        ) from None
    try:
        recordings = RecordingStorage.from_settings(settings)
    except Exception as exc:  # (boto3 refusing the endpoint or region it was given)
        raise ReplayError(f"cannot reach RECORDINGS_URL: {described(exc)}") from None
    return load_source(call_or_file, CallRecords.of(settings), recordings)
