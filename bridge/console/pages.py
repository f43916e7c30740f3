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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

if TYPE_CHECKING:
    from bridge.records import CallRecord, CallSummary, TurnTiming

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


def fmt_cost(usd: float | None) -> str:
    if usd is None:
        return "unpriced"
    if 0 < usd < 0.0001:
        return "< $0.0001"
    return f"${usd:.4f}"


def fmt_ms(ms: float | None) -> str:
    return "—" if ms is None else f"{ms:.0f} ms"


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
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
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


@dataclass(frozen=True, slots=True)
class LiveCall:
    call_sid: str
    from_number: str
    to_number: str
    profile: str
    phase: str
    duration_s: float | None
    turns: int
    barge_ins: int

    def as_json(self) -> dict[str, object]:
        return {
            "call_sid": self.call_sid,
            "from": self.from_number,
            "to": self.to_number,
            "profile": self.profile,
            "phase": self.phase,
            "duration_s": self.duration_s,
            "duration": fmt_duration(self.duration_s),
            "turns": self.turns,
            "barge_ins": self.barge_ins,
        }


LIVE_COLUMNS = ("Call", "From", "To", "Profile", "Duration", "Phase", "Turns", "Barge-ins")


def live_rows(calls: Iterable[LiveCall]) -> str:
    rows = []
    for call in calls:
        rows.append(
            "<tr>"
            f"<td><code>{esc(call.call_sid or '(starting)')}</code></td>"
            f"<td>{esc(call.from_number)}</td><td>{esc(call.to_number)}</td>"
            f"<td>{esc(call.profile)}</td><td>{esc(fmt_duration(call.duration_s))}</td>"
            f"<td>{esc(call.phase)}</td><td>{call.turns}</td><td>{call.barge_ins}</td>"
            "</tr>"
        )
    return "".join(rows)


def live_page(calls: Sequence[LiveCall]) -> str:
    head = "".join(f"<th>{c}</th>" for c in LIVE_COLUMNS)
    body = (
        f'<p><span id="live-count">{len(calls)}</span> call(s) in progress on this instance. '
        '<a href="/console/softphone">Call the agent from this browser</a>.</p>'
        f'<table id="live-calls"><thead><tr>{head}</tr></thead>'
        f"<tbody>{live_rows(calls)}</tbody></table>"
        '<p class="muted" id="live-updated">Refreshes every 2 s.</p>'
    )
    return layout("Live calls", body, active="live", scripts=["live.js"])


# ------------------------------------------------------------------------------ calls list


def calls_page(
    summaries: Sequence[CallSummary] | None,
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
            link = f"/console/calls/{quote(s.call_sid, safe='')}"
            duration = max(0.0, s.ended_at - s.started_at)
            rows.append(
                "<tr>"
                f'<td><a href="{esc(link)}">{esc(fmt_time(s.started_at))}</a></td>'
                f"<td>{esc(s.from_number)}</td><td>{esc(s.to_number)}</td>"
                f"<td>{esc(s.profile or '')}</td><td>{esc(s.direction)}</td>"
                f"<td>{esc(fmt_duration(duration))}</td><td>{esc(s.outcome)}</td>"
                f'<td class="num">{s.turns}</td><td class="num">{s.barge_ins}</td>'
                f'<td class="num">{esc(fmt_cost(s.cost_usd))}</td>'
                "</tr>"
            )
        columns = (
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
        head = "".join(f"<th>{c}</th>" for c in columns)
        table = (
            f'<table id="calls"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
            "</table>"
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
    facts: list[tuple[str, str]] = [
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
        ("Model", r.model or "—"),
        ("Turns", str(len(r.turns))),
        ("Barge-ins", str(r.barge_ins)),
        ("Reconnects", str(r.reconnects)),
        ("Tokens", _tokens_text(r.tokens)),
        ("Cost", fmt_cost(r.cost_usd)),
    ]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    body = (
        f'<dl class="facts" id="facts">{dl}</dl>'
        f"<h2>Transcript</h2>{transcript_html(r)}"
        f"<h2>Latency per turn</h2>{latency_chart(r.turns)}{turns_table(r.turns)}"
    )
    return layout(f"Call {r.call_sid}", body, active="calls")


def _no_status(direction: str) -> str:
    # A softphone call never touched Twilio: no status callback will ever come.
    return "— (a browser call: no Twilio leg)" if direction == "browser" else "—"


def _tokens_text(tokens: Mapping[str, int]) -> str:
    shown = [f"{name.replace('_', ' ')} {count}" for name, count in tokens.items() if count]
    total = sum(count for name, count in tokens.items() if name != "transcription")
    return f"{total} ({', '.join(shown)})" if shown else "0"


def transcript_html(record: CallRecord) -> str:
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
            f'<li class="{css}"><span class="who">{who}</span>'
            f'<span class="text">{esc(line.text)}</span>{cut}</li>'
        )
    return f'<ol class="transcript" id="transcript">{"".join(items)}</ol>'


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
        rows.append(
            f"<tr><td>{t.index}</td><td>{esc(at)}</td><td>{esc(fmt_ms(answered))}</td>"
            f"<td>{esc(fmt_ms(heard))}</td><td>{esc(barge)}</td></tr>"
        )
    head = (
        "<tr><th>Turn</th><th>Caller stopped (into the call)</th><th>First audio sent</th>"
        "<th>First audio heard</th><th>Barge-in</th></tr>"
    )
    return f'<table id="turns"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


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
        '<p class="legend"><span class="swatch seg-sent"></span> caller stopped → first '
        'audio sent (model and bridge) <span class="swatch seg-heard"></span> sent → heard '
        '(Twilio, network, playback) <span class="swatch barge-in"></span> the caller '
        "talked over the answer</p>"
    )
    return "".join(parts) + legend


# ------------------------------------------------------------------------------ softphone


def softphone_page() -> str:
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
    body = (
        '<p class="muted">Talks to the agent from this browser\'s microphone over the same '
        "media stream Twilio uses. Use headphones: the agent hears whatever your speakers "
        "play.</p>"
        '<form id="softphone" class="softphone" autocomplete="off">'
        '<label>Profile <input type="text" id="profile" name="profile" maxlength="64" '
        'placeholder="default"></label>'
        '<button type="submit" id="call">Call</button>'
        '<button type="button" id="hangup" disabled>Hang up</button></form>'
        '<p id="status" role="status" aria-live="polite">Ready.</p>'
        '<p>Microphone <meter id="mic-level" min="0" max="1" value="0"></meter></p>'
        f'<dl class="counters">{dl}</dl>'
        f'<div class="keypad" id="keypad">{keys}</div>'
    )
    return layout("Softphone", body, active="softphone", scripts=["softphone.js"])
