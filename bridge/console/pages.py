"""The console's HTML, rendered on the server from plain values.

Every value that came from a call (numbers, profile names, transcripts: a caller controls
some of them) goes through `esc` before it reaches the page; nothing here builds markup
from a value in any other way. Pages load only the console's own CSS and scripts (no CDN,
no fonts), and draw charts as inline SVG, so the console works offline and under a strict
Content-Security-Policy.
"""

from __future__ import annotations

import html
import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from bridge.console.waveform import MARKER_KINDS, markers
from bridge.core.phases import Phase
from bridge.usage import is_local_agent

if TYPE_CHECKING:
    from bridge.records.model import CallListing, CallRecord, Recording, TurnTiming

STATIC = "/console/static"


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


# ------------------------------------------------------------------------------ formats


def fmt_time(unix: float | None) -> str:
    if unix is None or not math.isfinite(unix):
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix))


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def fmt_cost(usd: float | None, model: str | None = None) -> str:
    if is_local_agent(model):
        return "none (local echo agent)"
    if usd is None:
        return "unpriced"
    if 0 < usd < 0.0001:
        return "< $0.0001"
    return f"${usd:.4f}"


def fmt_clock(seconds: float) -> str:
    """A moment on the call's clock as a player shows it: mm:ss.s (h:mm:ss.s past an hour)."""
    tenths = math.floor(max(0.0, seconds) * 10 + 0.5)  # (half up, as recording.js rounds)
    minutes, tenths = divmod(tenths, 600)
    hours, minutes = divmod(minutes, 60)
    clock = f"{minutes:02d}:{tenths // 10:02d}.{tenths % 10}"
    return f"{hours}:{clock}" if hours else clock


def fmt_ms(ms: float | None) -> str:
    return "—" if ms is None else f"{ms:.0f} ms"


def fmt_model(model: str | None) -> str:
    if is_local_agent(model):
        return "the built-in local echo agent (no charge)"
    return model or "—"


def call_href(call_sid: str) -> str:
    return f"/console/calls/{quote(call_sid, safe='')}"


# What the figures mean, said where they are shown (a tooltip, a legend).
COST_HINT = (
    "Estimated from the tokens the session reported and the price table (REALTIME_PRICES); "
    "Twilio's charges are not included. The local echo agent costs nothing."
)
CALLER_STOPPED_HINT = (
    "When the caller stopped speaking, in seconds since the call's stream started: where "
    "the session's voice detection put the end of their speech (speech_stopped, less the "
    "VAD_SILENCE_MS it waited to be sure). For keys: the last key pressed."
)
SENT_HINT = (
    "From the end of the caller's speech until the bridge sent the answer's first audio to "
    "Twilio: the voice detection's silence (VAD_SILENCE_MS), then the model and the bridge."
)
HEARD_HINT = (
    "From the end of the caller's speech until the answer's first audio began to play to "
    "the caller (its mark came back, less its length): what the caller waited. The "
    "simulator's 'first audio heard after' for the same call."
)


# ------------------------------------------------------------------------------ layout

_NAV = (
    ("live", "/console", "Live calls"),
    ("calls", "/console/calls", "Past calls"),
    ("softphone", "/console/softphone", "Softphone"),
)
_ACTIVE = ' class="active" aria-current="page"'


def layout(
    title: str,
    body: str,
    *,
    active: str = "",
    logged_in: bool = True,
    scripts: Sequence[str] = (),
    refresh_s: int | None = None,
) -> str:
    nav = ""
    if logged_in:
        links = "".join(
            f'<a href="{href}"{_ACTIVE if key == active else ""}>{label}</a>'
            for key, href, label in _NAV
        )
        nav = (
            f'<nav>{links}<form method="post" action="/console/logout" class="logout">'
            '<button type="submit">Log out</button></form></nav>'
        )
    script_tags = "".join(f'<script src="{STATIC}/{esc(name)}"></script>' for name in scripts)
    # A plain reload, no script: a page that waits on something (a call in progress).
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{refresh}"
        f"<title>{esc(title)} · phone-bridge</title>"
        # No favicon to fetch: an empty data: icon keeps a 404 out of every page load.
        '<link rel="icon" href="data:,">'
        f'<link rel="stylesheet" href="{STATIC}/console.css"></head>'
        f'<body><header><span class="brand">phone-bridge</span>{nav}</header>'
        f"<main><h1>{esc(title)}</h1>{body}</main>{script_tags}</body></html>"
    )


def login_page(next_path: str, error: str | None = None) -> str:
    problem = f'<p class="error" role="alert">{esc(error)}</p>' if error else ""
    body = (
        f'{problem}<form method="post" action="/console/login" class="login">'
        f'<input type="hidden" name="next" value="{esc(next_path)}">'
        '<label>Password <input type="password" name="password" id="password" '
        'autocomplete="current-password" required autofocus></label>'
        '<button type="submit" id="login">Log in</button></form>'
    )
    return layout("Log in", body, logged_in=False)


def message_page(title: str, message: str, *, logged_in: bool = True) -> str:
    return layout(title, f'<p class="notice">{esc(message)}</p>', logged_in=logged_in)


# ------------------------------------------------------------------------------ live


# How an operator says where a call is (the core's phases are the bridge's words).
PHASE_WORDS = {
    Phase.AWAITING_START.value: "answering",
    Phase.CONNECTING.value: "connecting to the assistant",
    Phase.BRIDGING.value: "in conversation",
    Phase.RECONNECTING.value: "reconnecting to the assistant",
    Phase.ENDED.value: "hanging up",
}


@dataclass(frozen=True, slots=True)
class LiveCall:
    call_sid: str
    from_number: str
    to_number: str
    profile: str
    phase: str  # the core's Phase value, for scripts; `status` says it in words
    duration_s: float | None
    turns: int
    barge_ins: int
    replica: str = ""  # which instance serves it

    @property
    def status(self) -> str:
        return PHASE_WORDS.get(self.phase, self.phase)

    def as_json(self) -> dict[str, object]:
        return {
            "call_sid": self.call_sid,
            "href": call_href(self.call_sid) if self.call_sid else None,
            "from": self.from_number,
            "to": self.to_number,
            "profile": self.profile,
            "phase": self.phase,
            "status": self.status,
            "duration_s": self.duration_s,
            "duration": fmt_duration(self.duration_s),
            "turns": self.turns,
            "barge_ins": self.barge_ins,
            "replica": self.replica,
        }


LIVE_COLUMNS = (
    "Call", "From", "To", "Profile", "Duration", "Status", "Turns", "Barge-ins", "Replica",
)  # fmt: skip


def _call_link(call_sid: str) -> str:
    if not call_sid:
        return "<code>(starting)</code>"
    return f'<a href="{esc(call_href(call_sid))}"><code>{esc(call_sid)}</code></a>'


def live_rows(calls: Iterable[LiveCall]) -> str:
    rows = []
    for call in calls:
        cells = (
            _call_link(call.call_sid),
            esc(call.from_number),
            esc(call.to_number),
            esc(call.profile),
            esc(fmt_duration(call.duration_s)),
            esc(call.status),
            str(call.turns),
            str(call.barge_ins),
            esc(call.replica),
        )
        rows.append(_row(LIVE_COLUMNS, cells))
    return "".join(rows)


def _row(columns: Sequence[str], cells: Sequence[str]) -> str:
    """A table row whose cells carry their column's name, for the narrow-screen layout
    that shows each row as a card (`cells` are markup already)."""
    tds = "".join(
        f'<td data-label="{esc(column)}">{cell}</td>'
        for column, cell in zip(columns, cells, strict=True)
    )
    return f"<tr>{tds}</tr>"


def _head(columns: Sequence[str], hints: Mapping[str, str] | None = None) -> str:
    """A table's header cells; a column with a hint explains itself in a tooltip."""
    hints = hints or {}
    return "".join(
        f'<th title="{esc(hints[c])}" class="hint">{esc(c)}</th>'
        if c in hints
        else f"<th>{esc(c)}</th>"
        for c in columns
    )


def live_page(calls: Sequence[LiveCall]) -> str:
    head = _head(LIVE_COLUMNS)
    body = (
        f'<p><span id="live-count">{len(calls)}</span> call(s) in progress. '
        '<a href="/console/softphone">Call the agent from this browser</a>.</p>'
        f'<table id="live-calls" class="cards"><thead><tr>{head}</tr></thead>'
        f"<tbody>{live_rows(calls)}</tbody></table>"
        '<p class="muted" id="live-updated">Refreshes every 2 s.</p>'
    )
    return layout("Live calls", body, active="live", scripts=["live.js"])


def live_call_page(call: LiveCall) -> str:
    """A call still in progress: what is known so far; the record replaces this page once
    the call has ended (it reloads itself)."""
    facts = [
        ("Call", call.call_sid),
        ("From", call.from_number),
        ("To", call.to_number),
        ("Profile", call.profile or "—"),
        ("Status", call.status),
        ("Duration so far", fmt_duration(call.duration_s)),
        ("Turns", str(call.turns)),
        ("Barge-ins", str(call.barge_ins)),
        ("Replica", call.replica or "—"),
    ]
    body = (
        '<p class="notice" id="in-progress">This call is in progress. Its transcript, '
        "latency per turn and cost appear here once it has ended; this page reloads every "
        "5 s.</p>"
        f'<dl class="facts" id="facts">{_facts(facts)}</dl>'
    )
    return layout(f"Call {call.call_sid}", body, active="live", refresh_s=5)


def _facts(facts: Sequence[tuple[str, str] | tuple[str, str, str]]) -> str:
    """A definition list; a third element is a hint shown as the label's tooltip."""
    items = []
    for label, value, *hint in facts:
        title = f' title="{esc(hint[0])}" class="hint"' if hint else ""
        items.append(f"<dt{title}>{esc(label)}</dt><dd>{esc(value)}</dd>")
    return "".join(items)


# ------------------------------------------------------------------------------ calls list


CALLS_COLUMNS = (
    "Started",
    "From",
    "To",
    "Profile",
    "Direction",
    "Duration",
    "Outcome",
    "Turns",
    "Barge-ins",
    "Cost",
)


def calls_page(
    summaries: Sequence[CallListing] | None,
    query: str,
    page: int,
    has_next: bool,
) -> str:
    search = (
        '<form method="get" action="/console/calls" class="search" role="search">'
        f'<input type="search" name="q" value="{esc(query)}" '
        'placeholder="number, call sid, profile, outcome or words said" id="q">'
        '<button type="submit">Search</button></form>'
    )
    if summaries is None:
        note = (
            "Call records are off on this server (CALL_DB_PATH is empty), so there are no "
            "past calls to show."
        )
        return layout("Past calls", f'<p class="notice">{esc(note)}</p>', active="calls")
    if not summaries:
        found = "No calls match." if query else "No calls yet."
        table = f'<p class="notice">{esc(found)}</p>'
    else:
        rows = []
        for s in summaries:
            duration = max(0.0, s.ended_at - s.started_at)
            cells = (
                f'<a href="{esc(call_href(s.call_sid))}">{esc(fmt_time(s.started_at))}</a>',
                esc(s.from_number),
                esc(s.to_number),
                esc(s.profile or ""),
                esc(s.direction),
                esc(fmt_duration(duration)),
                esc(s.outcome),
                str(s.turns),
                str(s.barge_ins),
                esc(fmt_cost(s.cost_usd, s.model)),
            )
            rows.append(_row(CALLS_COLUMNS, cells))
        head = "".join(
            f'<th title="{esc(COST_HINT)}" class="hint">{c}</th>'
            if c == "Cost"
            else f"<th>{c}</th>"
            for c in CALLS_COLUMNS
        )
        table = (
            f'<table id="calls" class="cards"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
    pages = []
    if page > 1:
        pages.append(f'<a href="{esc(_calls_href(query, page - 1))}" rel="prev">Newer</a>')
    if has_next:
        pages.append(f'<a href="{esc(_calls_href(query, page + 1))}" rel="next">Older</a>')
    pager = f'<p class="pager">Page {page} {" ".join(pages)}</p>' if pages or page > 1 else ""
    return layout("Past calls", search + table + pager, active="calls")


def _calls_href(query: str, page: int) -> str:
    params = {"q": query} if query else {}
    params["page"] = str(page)
    return "/console/calls?" + urlencode(params)


# ------------------------------------------------------------------------------ one call


def call_page(record: CallRecord) -> str:
    r = record
    twilio_duration = f" (Twilio: {r.duration_s} s)" if r.duration_s is not None else ""
    facts: list[tuple[str, str] | tuple[str, str, str]] = [
        ("Call", r.call_sid),
        ("From", r.from_number),
        ("To", r.to_number),
        ("Profile", r.profile or "—"),
        ("Direction", r.direction),
        ("Started", fmt_time(r.started_at)),
        ("Ended", fmt_time(r.ended_at)),
        ("Duration", fmt_duration(r.duration_ms / 1000) + twilio_duration),
        ("Outcome", f"{r.outcome}: {r.end_reason}" if r.end_reason else r.outcome),
        ("Twilio final status", r.final_status or _no_status(r.direction)),
        ("Model", fmt_model(r.model)),
        ("Turns", str(len(r.turns))),
        ("Barge-ins", str(r.barge_ins)),
        ("Reconnects", str(r.reconnects)),
        ("Tokens", _tokens_text(r.tokens)),
        ("Cost (estimated)", fmt_cost(r.cost_usd, r.model), COST_HINT),
    ]
    if r.recording is not None:
        facts.append(("Recording", _recording_text(r.recording)))
    player = recording_player(r)
    body = (
        f'<dl class="facts" id="facts">{_facts(facts)}</dl>'
        f"{player}"
        f"<h2>Transcript</h2>{transcript_html(r, playable=bool(player))}"
        f"<h2>Latency per turn</h2>{latency_chart(r.turns)}{turns_table(r.turns)}"
        f"<h2>Timeline</h2>{timeline_table(r)}"
        f'<form method="post" action="/console/calls/{esc(quote(r.call_sid, safe=""))}/delete"'
        ' class="delete"><button type="submit">Delete this call, its timeline and the '
        "bridge's recording of it (a Twilio recording stays at Twilio)</button></form>"
    )
    scripts = ["recording.js"] if player else []
    return layout(f"Call {r.call_sid}", body, active="calls", scripts=scripts)


def recording_player(record: CallRecord) -> str:
    """The bridge's recording of the call: a player (seekable), its waveform with the
    call's moments marked (drawn by recording.js from waveform.json), and a download."""
    recording = record.recording
    if recording is None or recording.kind != "bridge" or recording.status != "completed":
        return ""
    base = f"/console/calls/{quote(record.call_sid, safe='')}"
    src = f"{base}/recording"
    duration_s = float(recording.duration_s or 0) or record.duration_ms / 1000
    marked = markers(record.timeline, until=duration_s)
    counts = Counter(marker.kind for marker in marked)
    said = ", ".join(
        f"{counts[kind]} {_marks(kind, counts[kind])}" for kind in MARKER_KINDS if counts[kind]
    )
    label = (
        f"Waveform of the recording, {fmt_clock(duration_s)} long: the caller above, the "
        f"assistant below{', with ' + said if said else ''}. Click, or use the arrow keys, "
        "to play from a moment."
    )
    return (
        "<h2>Recording</h2>"
        '<p class="notice">Left: the caller as received. Right: the assistant as the caller '
        "heard it (cut where they talked over it).</p>"
        f'<audio id="recording" controls preload="metadata" src="{esc(src)}"></audio>'
        '<figure class="waveform">'
        f'<canvas id="waveform" data-src="{esc(base)}/waveform.json" tabindex="0" '
        f'role="slider" aria-label="{esc(label)}" aria-describedby="waveform-legend" '
        f'aria-valuemin="0" aria-valuemax="{duration_s:.1f}" aria-valuenow="0" '
        'aria-valuetext="00:00.0">'
        f"{esc(label)} The timeline below lists the same moments.</canvas>"
        f"<figcaption>{waveform_legend(counts)}"
        '<span id="waveform-status" class="muted" role="status"></span></figcaption></figure>'
        f'<p><a href="{esc(src)}" download>Download the recording</a></p>'
    )


# What each kind of mark on the waveform is called (one, many), and what it shows.
MARKER_WORDS = {
    "caller": ("caller turn", "caller turns"),
    "heard": ("answer heard", "answers heard"),
    "barge_in": ("barge-in", "barge-ins"),
    "paused": ("pause, resumed", "pauses, resumed"),
    "tool": ("tool call", "tool calls"),
    "keys": ("keypad entry", "keypad entries"),
    "session": ("session lost or replaced", "sessions lost or replaced"),
}
MARKER_HINTS = {
    "caller": "the caller speaking, where the voice detection placed it (its padding included)",
    "heard": "an answer beginning to play to the caller",
    "barge_in": "the caller talked over the answer: it was cleared and cut",
    "paused": "the caller made a sound over the answer: it stopped, and went on where it was",
    "tool": "a tool running",
    "keys": "keys given to the model",
    "session": "the Realtime session lost, or replaced before its limit",
}


def _marks(kind: str, count: int) -> str:
    one, many = MARKER_WORDS[kind]
    return many if count > 1 else one


def waveform_legend(counts: Mapping[str, int]) -> str:
    """The waveform's key: its two lanes, and each kind of mark on it with how many."""
    lanes = (
        '<li><span class="swatch wave-caller"></span>Caller (top)</li>'
        '<li><span class="swatch wave-assistant"></span>Assistant as heard (bottom)</li>'
    )
    marks = "".join(
        f'<li data-kind="{kind}" data-count="{counts[kind]}" title="{esc(MARKER_HINTS[kind])}">'
        f'<span class="swatch mk-{kind}"></span>'
        f"{esc(_marks(kind, counts[kind]))} ({counts[kind]})</li>"
        for kind in MARKER_KINDS
        if counts[kind]
    )
    playhead = '<li><span class="swatch playhead"></span>Playing now</li>'
    return f'<ul class="legend waveform-legend" id="waveform-legend">{lanes}{marks}{playhead}</ul>'


TIMELINE_COLUMNS = ("At", "What", "Detail")
TIMELINE_HINTS = {"At": "seconds since the media stream started (before it: negative)"}


def timeline_table(record: CallRecord) -> str:
    """What happened when on the call, with a link to the same as JSON."""
    if not record.timeline:
        return '<p class="notice">No timeline was kept for this call.</p>'
    rows = [
        _row(
            TIMELINE_COLUMNS,
            (f"{e.at:.3f} s", esc(e.moment.value.replace("_", " ")), esc(e.detail)),
        )
        for e in record.timeline
    ]
    dropped = record.timeline_dropped
    note = (
        f'<p class="notice">{dropped} later moments were not kept (the timeline is bounded).</p>'
        if dropped
        else ""
    )
    download = f"/console/calls/{quote(record.call_sid, safe='')}/timeline.json"
    return (
        f'<p><a href="{esc(download)}" download>Download the timeline (JSON)</a></p>'
        f'<table id="timeline" class="cards"><thead><tr>{_head(TIMELINE_COLUMNS, TIMELINE_HINTS)}'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>{note}"
    )


def _recording_text(recording: Recording) -> str:
    if recording.status == "failed":
        return f"{recording.kind}: could not be started ({recording.error})"
    length = f", {recording.duration_s} s" if recording.duration_s is not None else ""
    where = f" — {recording.url}" if recording.url else ""
    who = f"{recording.kind} {recording.sid}" if recording.sid else recording.kind
    return f"{who}: {recording.status}{length}{where}"


def _no_status(direction: str) -> str:
    # A softphone call never touched Twilio: no status callback will ever come.
    return "— (a browser call: no Twilio leg)" if direction == "browser" else "—"


def _tokens_text(tokens: Mapping[str, int]) -> str:
    shown = [f"{name.replace('_', ' ')} {count}" for name, count in tokens.items() if count]
    total = sum(count for name, count in tokens.items() if name != "transcription")
    return f"{total} ({', '.join(shown)})" if shown else "0"


def transcript_html(record: CallRecord, playable: bool = False) -> str:
    """What was said, each line at its time on the call's clock; `playable` (the call has
    a recording on the page): the time is a button that plays the recording from there."""
    if not record.transcript:
        return '<p class="notice">No transcript was kept for this call.</p>'
    items = []
    for line in record.transcript:
        who = "Caller" if line.role == "caller" else "Assistant"
        role = "caller" if line.role == "caller" else "assistant"
        cut = (
            ' <span class="cut" title="the caller talked over this answer; the text is what '
            'they heard">cut off</span>'
            if line.cut
            else ""
        )
        css = f"{role} cut-line" if line.cut else role
        items.append(
            f'<li class="{css}">{_line_time(line.at, playable)}<span class="who">{who}</span>'
            f'<span class="text">{esc(line.text)}</span>{cut}</li>'
        )
    return f'<ol class="transcript" id="transcript">{"".join(items)}</ol>'


def _line_time(at: float | None, playable: bool) -> str:
    if at is None:
        return '<span class="at" title="not known for this call">—</span>'
    clock = fmt_clock(at)
    if not playable:
        return f'<span class="at">{clock}</span>'
    return (
        f'<button type="button" class="at" data-at="{at:.3f}" '
        f'aria-label="Play the recording from {clock}">{clock}</button>'
    )


def turns_table(turns: Sequence[TurnTiming]) -> str:
    if not turns:
        return ""
    rows = []
    for t in turns:
        answered = _since(t.caller_stopped_ms, t.first_audio_sent_ms)
        heard = _since(t.caller_stopped_ms, t.first_audio_heard_ms)
        barge = "—"
        if t.barged_in:
            barge = "yes" if t.truncated_at_ms is None else f"cut at {t.truncated_at_ms} ms"
        at = "—" if t.caller_stopped_ms is None else f"{t.caller_stopped_ms / 1000:.2f} s"
        cells = (str(t.index), esc(at), esc(fmt_ms(answered)), esc(fmt_ms(heard)), esc(barge))
        rows.append(_row(TURN_COLUMNS, cells))
    head = _head(TURN_COLUMNS, TURN_HINTS)
    return (
        f'<table id="turns" class="cards"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


TURN_COLUMNS = (
    "Turn",
    "Caller stopped speaking",
    "First audio sent, after",
    "First audio heard, after",
    "Barge-in",
)
TURN_HINTS = {
    "Caller stopped speaking": CALLER_STOPPED_HINT,
    "First audio sent, after": SENT_HINT,
    "First audio heard, after": HEARD_HINT,
}


def _since(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, end - start)


# Chart geometry, in SVG user units (the SVG scales to the page width).
_W = 820
_LABEL_W = 64
_BAR_X0 = 72
_BAR_X1 = 400
_TEXT_X = 412
_BARGE_X = 612
_ROW_H = 30
_TOP = 26


def _nice_ceiling(ms: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above `ms` (at least 100)."""
    ms = max(ms, 100.0)
    power = 10 ** math.floor(math.log10(ms))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= ms:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def latency_chart(turns: Sequence[TurnTiming]) -> str:
    """Per turn, one bar from the end of the caller's speech to the first audio sent to
    Twilio (the model's and the bridge's part), then on to the first audio heard (Twilio's
    and the network's part), on one scale so turns compare at a glance; a barge-in marker
    with how much of the answer was heard on turns the caller interrupted."""
    if not turns:
        return '<p class="notice">No caller turns were timed on this call.</p>'
    longest = max(
        (
            v
            for t in turns
            for v in (
                _since(t.caller_stopped_ms, t.first_audio_sent_ms),
                _since(t.caller_stopped_ms, t.first_audio_heard_ms),
            )
            if v is not None
        ),
        default=0.0,
    )
    scale = _nice_ceiling(longest)

    def x(ms: float) -> float:
        return _BAR_X0 + (_BAR_X1 - _BAR_X0) * min(ms, scale) / scale

    height = _TOP + _ROW_H * len(turns) + 8
    parts = [
        f'<svg class="latency" id="latency-chart" viewBox="0 0 {_W} {height}" '
        f'width="{_W}" height="{height}" role="img" '
        'aria-label="Latency per turn: caller stopped, first audio sent, first audio heard">'
    ]
    for i in range(5):
        ms = scale * i / 4
        gx = x(ms)
        parts.append(
            f'<line class="grid" x1="{gx:.1f}" y1="{_TOP - 6}" x2="{gx:.1f}" '
            f'y2="{height - 6}"></line>'
            f'<text class="axis" x="{gx:.1f}" y="{_TOP - 10}" text-anchor="middle">'
            f"{ms:.0f} ms</text>"
        )
    for row, t in enumerate(turns):
        y = _TOP + row * _ROW_H
        mid = y + _ROW_H / 2
        parts.append(
            f'<g class="turn" data-turn="{t.index}">'
            f'<text class="label" x="4" y="{mid + 4:.1f}">Turn {t.index}</text>'
        )
        sent = _since(t.caller_stopped_ms, t.first_audio_sent_ms)
        heard = _since(t.caller_stopped_ms, t.first_audio_heard_ms)
        bar_y, bar_h = y + 7, _ROW_H - 14
        if sent is not None:
            parts.append(
                f'<rect class="seg-sent" x="{_BAR_X0}" y="{bar_y}" '
                f'width="{max(1.0, x(sent) - _BAR_X0):.1f}" height="{bar_h}">'
                f"<title>caller stopped → first audio sent: {sent:.0f} ms</title></rect>"
            )
        if heard is not None:
            start = x(sent) if sent is not None else _BAR_X0
            parts.append(
                f'<rect class="seg-heard" x="{start:.1f}" y="{bar_y}" '
                f'width="{max(1.0, x(heard) - start):.1f}" height="{bar_h}">'
                f"<title>first audio sent → heard: {heard:.0f} ms after the caller stopped"
                "</title></rect>"
            )
        if t.caller_stopped_ms is None:
            label = "not timed"
        elif sent is None:
            label = "no answer"
        elif heard is None:
            label = f"sent {sent:.0f} ms · not heard"
        else:
            label = f"sent {sent:.0f} ms · heard {heard:.0f} ms"
        parts.append(f'<text class="value" x="{_TEXT_X}" y="{mid + 4:.1f}">{esc(label)}</text>')
        if t.barged_in:
            cut = "barge-in"
            if t.truncated_at_ms is not None:
                cut += f", cut at {t.truncated_at_ms} ms"
            parts.append(
                f'<g class="barge-in"><path d="M{_BARGE_X} {mid - 6:.1f} l6 6 l-6 6 l-6 -6 z">'
                "</path>"
                f'<text x="{_BARGE_X + 10}" y="{mid + 4:.1f}">{esc(cut)}</text></g>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    legend = (
        '<p class="legend" id="latency-legend">Each bar starts where the caller stopped '
        "speaking (where the session's voice detection put the end of their speech). "
        '<span class="swatch seg-sent"></span> until the bridge sent the answer\'s first '
        "audio to Twilio: the voice detection's silence (VAD_SILENCE_MS), the model and the "
        'bridge. <span class="swatch seg-heard"></span> until that audio began to play to '
        "the caller: Twilio and the network; the simulator's \u201cfirst audio heard "
        'after\u201d for the same call. <span class="swatch barge-in"></span> the caller '
        "talked over the answer; \u201ccut at\u201d is how much of it they had heard.</p>"
    )
    return "".join(parts) + legend


# ------------------------------------------------------------------------------ softphone


def softphone_page(profiles: Sequence[str] = ("default",)) -> str:
    """The softphone; `profiles` are the agent profiles the operator can call (the first
    one, the default, chosen)."""
    counters = (
        ("state", "State", "idle"),
        ("framesSent", "Frames sent", "0"),
        ("mediaReceived", "Media received", "0"),
        ("marksEchoed", "Marks echoed", "0"),
        ("clears", "Clears", "0"),
    )
    dl = "".join(
        f'<dt>{label}</dt><dd id="sp-{key}">{value}</dd>' for key, label, value in counters
    )
    keys = "".join(
        f'<button type="button" class="key" data-digit="{d}" disabled>{d}</button>'
        for d in "123456789*0#"
    )
    options = "".join(
        f'<option value="{esc(name)}"{" selected" if i == 0 else ""}>{esc(name)}</option>'
        for i, name in enumerate(profiles)
    )
    body = (
        '<p class="muted">Talks to the agent from this browser\'s microphone over the same '
        "media stream Twilio uses. Use headphones: the agent hears whatever your speakers "
        "play.</p>"
        '<form id="softphone" class="softphone" autocomplete="off">'
        f'<label>Profile <select id="profile" name="profile">{options}</select></label>'
        '<button type="submit" id="call">Call</button>'
        '<button type="button" id="hangup" disabled>Hang up</button></form>'
        '<p id="status" role="status" aria-live="polite">Ready.</p>'
        '<p>Microphone <meter id="mic-level" min="0" max="1" value="0"></meter></p>'
        f'<dl class="counters">{dl}</dl>'
        f'<div class="keypad" id="keypad">{keys}</div>'
    )
    return layout("Softphone", body, active="softphone", scripts=["softphone.js"])
