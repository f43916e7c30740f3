"""The web console over loopback HTTP: off by default, behind a login, pages that show what
was stored (escaped), and the softphone's way in to /media-stream."""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
import time
from dataclasses import replace
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bridge.console.auth import COOKIE_NAME, LoginThrottle, Sessions
from bridge.console.pages import HEARD_HINT
from bridge.core.summary import TranscriptLine
from bridge.core.timeline import Moment
from bridge.records.model import CallRecord, Recording, TurnTiming
from bridge.usage import LOCAL_AGENT_MODEL
from tests.helpers.records import record
from tests.helpers.running_bridge import (
    RunningBridge,
    running_bridge,
    stored_record,
    wait_until,
)
from tests.helpers.twilio_side import call_with_two_barge_ins

pytestmark = pytest.mark.integration

PASSWORD = "console-test-password"


async def log_in(http: httpx.AsyncClient) -> str:
    answer = await http.post("/console/login", data={"password": PASSWORD, "next": "/console"})
    assert answer.status_code == 303, answer.text
    return answer.cookies[COOKIE_NAME]


def use_cookie(http: httpx.AsyncClient, value: str) -> None:
    http.cookies.clear()
    http.cookies.set(COOKIE_NAME, value)


def visible_text(page: str) -> str:
    """Roughly what a reader sees: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


# ----------------------------------------------------------------------------- off / auth


async def test_the_console_is_off_without_a_password() -> None:
    async with running_bridge() as bridge, httpx.AsyncClient(base_url=bridge.base_url) as http:
        for path in ("/console", "/console/login", "/console/calls", "/console/softphone"):
            answer = await http.get(path)
            assert answer.status_code == 404, path
            assert "CONSOLE_PASSWORD" in answer.text
        assert (await http.get("/console/static/softphone.js")).status_code == 404
        assert (await http.post("/console/login", data={"password": "x" * 20})).status_code == 404
        assert (await http.post("/console/api/softphone")).status_code == 404

        # A session cookie from some other console is no way past the Twilio signature.
        forged = Sessions("some other console password").issue()
        with pytest.raises(InvalidStatus) as refused:
            await connect(
                bridge.stream_url,
                origin=bridge.base_url,
                additional_headers={"Cookie": f"{COOKIE_NAME}={forged}"},
            )
        assert refused.value.response.status_code == 403


async def test_login_sets_a_strict_http_only_session_cookie(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with (
        running_bridge(console_password=PASSWORD) as bridge,
        httpx.AsyncClient(base_url=bridge.base_url) as http,
    ):
        form = await http.get("/console/login")
        assert form.status_code == 200
        assert 'type="password"' in form.text

        wrong = await http.post("/console/login", data={"password": "not the password"})
        assert wrong.status_code == 401
        assert "Wrong password" in wrong.text
        assert "set-cookie" not in wrong.headers

        right = await http.post(
            "/console/login", data={"password": PASSWORD, "next": "/console/calls"}
        )
        assert right.status_code == 303
        assert right.headers["location"] == "/console/calls"
        cookie = right.headers["set-cookie"]
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert {"httponly", "path", "max-age"} <= attributes
        assert "samesite=strict" in cookie.lower()
        assert "Max-Age=43200" in cookie
        assert "secure" not in attributes  # plain http on loopback: the browser would drop it
        assert PASSWORD not in cookie

        # Behind a TLS proxy, the cookie only ever travels over https.
        proxied = await http.post(
            "/console/login",
            data={"password": PASSWORD},
            headers={"X-Forwarded-Proto": "https"},
        )
        assert "secure" in proxied.headers["set-cookie"].lower()

        # After login, only a console path: never another site (an open redirect).
        for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
            away = await http.post("/console/login", data={"password": PASSWORD, "next": target})
            assert away.headers["location"] == "/console", target

        huge = await http.post("/console/login", content=b"password=" + b"x" * 10_000)
        assert huge.status_code == 413

    # The server's own log (not this test's HTTP client, which logs what it received).
    logged = "\n".join(
        record.getMessage()
        for record in caplog.records
        if record.name.startswith(("bridge", "uvicorn", "twiml"))
    )
    assert "failed login" in logged and "logged in" in logged
    session = cookie.split(";")[0].split("=", 1)[1]
    for secret in (PASSWORD, "not the password", session):
        assert secret not in logged


async def test_pages_need_the_session_and_logout_ends_it() -> None:
    async with (
        running_bridge(console_password=PASSWORD) as bridge,
        httpx.AsyncClient(base_url=bridge.base_url) as http,
    ):
        for path in ("/console", "/console/calls?q=x", "/console/softphone", "/console/calls/CA1"):
            answer = await http.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/console/login?next=%2Fconsole")
        assert (await http.get("/console/api/live")).status_code == 401
        assert (await http.post("/console/api/softphone")).status_code == 401

        cookie = await log_in(http)
        tampered = cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")
        use_cookie(http, tampered)
        answer = await http.get("/console")
        assert answer.status_code == 303

        use_cookie(http, cookie)
        live = await http.get("/console")
        assert live.status_code == 200
        assert "Live calls" in live.text
        assert "script-src 'self'" in live.headers["content-security-policy"]
        assert live.headers["x-frame-options"] == "DENY"
        api = await http.get("/console/api/live")
        assert api.json() == {"calls": []}

        out = await http.post("/console/logout")
        assert out.status_code == 303
        assert (
            f'{COOKIE_NAME}=""' in out.headers["set-cookie"]
            or "Max-Age=0" in (out.headers["set-cookie"])
        )
        # The logged-out cookie is dead here even if the browser kept a copy.
        use_cookie(http, cookie)
        again = await http.get("/console")
        assert again.status_code == 303


async def test_guesses_are_checked_one_at_a_time_at_the_throttles_pace() -> None:
    async with (
        running_bridge(console_password=PASSWORD) as bridge,
        httpx.AsyncClient(base_url=bridge.base_url) as http,
    ):
        delay = bridge.app.state.console.throttle.delay_s
        began = time.monotonic()
        guesses = await asyncio.gather(
            *(http.post("/console/login", data={"password": f"guess {i}"}) for i in range(6))
        )
        took = time.monotonic() - began
        right = await http.post("/console/login", data={"password": PASSWORD})
    assert [g.status_code for g in guesses] == [401] * 6
    # However many are sent at once, each wrong guess holds the line for the delay.
    assert took >= 6 * delay - 0.05
    assert right.status_code == 303


async def test_a_flood_of_logins_is_turned_away_unchecked() -> None:
    throttle = LoginThrottle(delay_s=0.05, max_waiting_per_client=2)
    checked = []

    def wrong() -> bool:
        checked.append(1)
        return False

    results = await asyncio.gather(*(throttle.check("10.0.0.66", wrong) for _ in range(5)))
    assert sorted(results, key=str) == [False, False, None, None, None]
    assert len(checked) == 2  # the refused ones were never compared


async def test_guessers_on_many_addresses_together_stay_under_the_global_ceiling() -> None:
    throttle = LoginThrottle(delay_s=0.2, max_checking=2, max_waiting=6)
    results = await asyncio.gather(
        *(throttle.check(f"10.0.0.{i}", lambda: False) for i in range(10))
    )
    assert results.count(None) == 4  # past six queued in all, refused unchecked
    began = time.monotonic()
    assert await throttle.check("10.0.0.99", lambda: False) is False
    assert time.monotonic() - began >= 0.2


async def test_a_flood_from_one_address_leaves_the_operator_able_to_log_in() -> None:
    async with (
        running_bridge(console_password=PASSWORD) as bridge,
        httpx.AsyncClient(base_url=bridge.base_url, timeout=30) as http,
    ):
        # The test talks over loopback, whose X-Forwarded-For uvicorn trusts by default
        # (FORWARDED_ALLOW_IPS=127.0.0.1), as it would a proxy's in front of the bridge.
        guesser = {"X-Forwarded-For": "203.0.113.66"}
        flood = [
            asyncio.ensure_future(
                http.post("/console/login", data={"password": f"guess {i}"}, headers=guesser)
            )
            for i in range(30)
        ]
        await asyncio.sleep(0.2)  # the flood is queued and being refused
        began = time.monotonic()
        operator = await http.post(
            "/console/login",
            data={"password": PASSWORD},
            headers={"X-Forwarded-For": "198.51.100.7"},
        )
        took = time.monotonic() - began
        statuses = [(await f).status_code for f in flood]
    assert operator.status_code == 303
    assert took < bridge.app.state.console.throttle.delay_s  # not queued behind the guesser
    # At most ten of its guesses were queued and checked; the rest were turned away.
    assert statuses.count(401) <= 10 and statuses.count(429) == 30 - statuses.count(401)


def test_session_cookies_expire_and_cannot_be_forged() -> None:
    now = [1_800_000_000.0]
    sessions = Sessions(PASSWORD, clock=lambda: now[0])
    cookie = sessions.issue()
    assert sessions.valid(cookie)
    # Every replica derives the same key from the password, so any of them accepts it...
    assert Sessions(PASSWORD, clock=lambda: now[0]).valid(cookie)
    # ...and none holding another password does.
    assert not Sessions(PASSWORD + "!", clock=lambda: now[0]).valid(cookie)
    version, expires, nonce, mac = cookie.split(".")
    longer = f"{version}.{int(expires) + 3600}.{nonce}.{mac}"
    for bad in (longer, cookie + "x", cookie.replace(".", "", 1), "", "v1.1.2.3", "é" * 10):
        assert not sessions.valid(bad), bad
    now[0] += 12 * 3600 - 1
    assert sessions.valid(cookie)
    now[0] += 1
    assert not sessions.valid(cookie)  # 12 hours on: log in again


# ----------------------------------------------------------------------------- records


async def save(bridge: RunningBridge, *records: CallRecord) -> None:
    store = bridge.app.state.store
    for r in records:
        await store.save(r)


async def test_past_calls_and_a_call_page_show_the_record_escaped() -> None:
    hostile = "<script>alert('owned')</script> & more"
    call = record(
        from_number="+1555<b>0001</b>",
        transcript=(
            TranscriptLine("caller", "I need help with my order"),
            TranscriptLine("assistant", "Sure, which order is it?"),
            TranscriptLine("caller", hostile),
            TranscriptLine("assistant", "Let me look that up for", cut=True),
        ),
        turns=(
            TurnTiming(1, 2100.0, 2740.0, 2860.0),
            TurnTiming(2, 6000.0, 6550.0, 6700.0, barged_in=True, truncated_at_ms=1200),
        ),
    )
    recording = Recording("twilio", "completed", "RE" + "7" * 32, "https://api.twilio.com/RE", 42)
    call = replace(call, recording=recording)
    async with (
        running_bridge(console_password=PASSWORD) as bridge,
        httpx.AsyncClient(base_url=bridge.base_url) as http,
    ):
        await save(bridge, call)
        await log_in(http)

        listing = await http.get("/console/calls")
        assert listing.status_code == 200
        assert "<b>0001</b>" not in listing.text and "&lt;b&gt;0001&lt;/b&gt;" in listing.text
        row = visible_text(listing.text)
        for shown in ("+1555<b>0001</b>", "+15550002222", "support", "inbound"):
            assert shown in row
        assert "caller_hung_up" in row and "$0.1234" in row

        found = await http.get("/console/calls", params={"q": "WHICH ORDER"})
        assert call.call_sid in found.text
        missing = await http.get("/console/calls", params={"q": "no such words"})
        assert "No calls match" in missing.text and call.call_sid not in missing.text

        page = await http.get(f"/console/calls/{call.call_sid}")
        assert page.status_code == 200
        assert "<script>alert" not in page.text
        assert "&lt;script&gt;alert(&#x27;owned&#x27;)&lt;/script&gt; &amp; more" in page.text
        text = visible_text(page.text)
        for fact in ("gpt-realtime", "completed", "$0.1234", "1 min 05 s", "Twilio: 66 s"):
            assert fact in text, fact
        assert "4650 (" in text  # model tokens in and out, transcription apart
        assert f"twilio {recording.sid}: completed, 42 s" in text
        lines = re.findall(r'<li class="(caller|assistant)[^"]*">.*?</li>', page.text)
        assert lines == ["caller", "assistant", "caller", "assistant"]
        assert text.count("cut off") == 1
        chart = page.text[page.text.index("<svg") : page.text.index("</svg>")]
        assert "sent 640 ms · heard 760 ms" in chart
        assert "sent 550 ms · heard 700 ms" in chart
        assert "barge-in, cut at 1200 ms" in chart
        assert chart.count('class="barge-in"') == 1
        # Every figure says what it measures: tooltips on the table, a legend on the chart.
        turns_head = page.text[page.text.index('<table id="turns"') : page.text.index("</thead>")]
        assert turns_head.count('class="hint"') == 3
        assert html.escape(HEARD_HINT, quote=True) in turns_head
        assert "where the session&#x27;s voice detection put the end of their speech" in (page.text)
        assert "first audio heard after" in visible_text(page.text)  # the simulator's name

        unknown = await http.get("/console/calls/CA" + "0" * 32)
        assert unknown.status_code == 404
        assert "No call with the sid" in unknown.text


async def test_past_calls_are_paged_newest_first() -> None:
    now = time.time()
    calls = [
        record(f"CA{i:032x}", from_number=f"+1666000{i:04d}", started_at=now - 1000 + i)
        for i in range(53)
    ]
    async with (
        running_bridge(console_password=PASSWORD) as bridge,
        httpx.AsyncClient(base_url=bridge.base_url) as http,
    ):
        await save(bridge, *calls)
        await log_in(http)
        first = await http.get("/console/calls")
        numbers = re.findall(r"\+1666000(\d{4})", first.text)
        assert len(numbers) == 50
        assert numbers[0] == "0052" and numbers[-1] == "0003"  # newest first
        assert 'rel="next"' in first.text
        second = await http.get("/console/calls", params={"page": "2"})
        assert re.findall(r"\+1666000(\d{4})", second.text) == ["0002", "0001", "0000"]
        assert 'rel="next"' not in second.text and 'rel="prev"' in second.text


async def test_past_calls_say_so_when_records_are_off() -> None:
    async with (
        running_bridge(console_password=PASSWORD, call_db_path="") as bridge,
        httpx.AsyncClient(base_url=bridge.base_url) as http,
    ):
        await log_in(http)
        listing = await http.get("/console/calls")
        assert listing.status_code == 200
        assert "Call records are off" in listing.text
        assert (await http.get("/console/calls/CA1")).status_code == 404


# ----------------------------------------------------------------------------- softphone


async def test_the_softphone_calls_through_the_media_stream_with_its_session() -> None:
    async with (
        running_bridge(console_password=PASSWORD) as bridge,
        httpx.AsyncClient(base_url=bridge.base_url) as http,
    ):
        cookie = await log_in(http)
        page = await http.get("/console/softphone")
        assert 'src="/console/static/softphone.js"' in page.text
        script = await http.get("/console/static/softphone.js")
        assert script.headers["content-type"].startswith("text/javascript")

        refused = await http.post("/console/api/softphone", json={"profile": "bad name!"})
        assert refused.status_code == 422
        cross_site = await http.post(
            "/console/api/softphone", headers={"Origin": "https://evil.example"}
        )
        assert cross_site.status_code == 403

        session = (await http.post("/console/api/softphone", json={"profile": "default"})).json()
        assert session["ws_url"] == bridge.stream_url
        assert re.fullmatch(r"CA[0-9a-f]{32}", session["call_sid"])
        assert re.fullmatch(r"MZ[0-9a-f]{32}", session["stream_sid"])
        parameters = session["parameters"]
        token = parameters.pop("token")
        assert len(token) == 61  # a stream token, bound to this CallSid
        assert parameters == {
            "CallSid": session["call_sid"],
            "From": "browser",
            "To": "console",
            "Profile": "default",
        }
        parameters["token"] = token

        # Only the logged-in console's own pages may open a stream with the cookie.
        headers = {"Cookie": f"{COOKIE_NAME}={cookie}"}
        for origin, extra in (
            ("https://evil.example", headers),
            (bridge.base_url, {}),
            (None, headers),
        ):
            with pytest.raises(InvalidStatus) as rejected:
                await connect(session["ws_url"], origin=origin, additional_headers=extra)
            assert rejected.value.response.status_code == 403, origin

        async with connect(
            session["ws_url"], origin=bridge.base_url, additional_headers=headers
        ) as ws:
            stream_sid = session["stream_sid"]
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1"}))
            start = {
                "accountSid": "",
                "streamSid": stream_sid,
                "callSid": session["call_sid"],
                "tracks": ["inbound"],
                "customParameters": parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            }
            await ws.send(
                json.dumps(
                    {
                        "event": "start",
                        "sequenceNumber": "1",
                        "start": start,
                        "streamSid": stream_sid,
                    }
                )
            )
            live: list[dict[str, object]] = []

            async def poll_live() -> bool:
                nonlocal live
                live = (await http.get("/console/api/live")).json()["calls"]
                return bool(live) and live[0]["phase"] == "bridging"

            deadline = time.monotonic() + 5
            while not await poll_live():
                assert time.monotonic() < deadline, f"the call never showed as live: {live}"
                await asyncio.sleep(0.02)
            assert live[0]["call_sid"] == session["call_sid"]
            assert (live[0]["from"], live[0]["to"], live[0]["profile"]) == (
                "browser",
                "console",
                "default",
            )
            # In an operator's words, and a link to the call, which is there while it lasts.
            assert live[0]["status"] == "in conversation"
            href = f"/console/calls/{session['call_sid']}"
            assert live[0]["href"] == href
            assert f'<a href="{href}">' in (await http.get("/console")).text
            in_progress = await http.get(href)
            assert in_progress.status_code == 200
            shown = visible_text(in_progress.text)
            assert "This call is in progress" in shown and "in conversation" in shown
            assert '<meta http-equiv="refresh" content="5">' in in_progress.text
            stop = {"accountSid": "", "callSid": session["call_sid"]}
            await ws.send(
                json.dumps(
                    {"event": "stop", "sequenceNumber": "2", "streamSid": stream_sid, "stop": stop}
                )
            )
        await wait_until(lambda: not bridge.app.state.calls.active, 5, "the call to end")
        stored = await stored_record(bridge, session["call_sid"])
        assert stored.direction == "browser"
        listing = await http.get("/console/calls", params={"q": "browser"})
        assert session["call_sid"] in listing.text


async def test_the_softphone_websocket_url_follows_the_public_https_url() -> None:
    async with running_bridge(console_password=PASSWORD) as bridge:
        host = urlsplit(bridge.base_url).netloc
        async with httpx.AsyncClient(base_url=bridge.base_url) as http:
            await log_in(http)
            session = await http.post(
                "/console/api/softphone",
                headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "phone.example.com"},
            )
        assert session.json()["ws_url"] == "wss://phone.example.com/media-stream"
        assert host not in session.json()["ws_url"]


async def test_calls_on_the_local_echo_agent_show_no_cost() -> None:
    echo = record("CA" + "e" * 32, model=LOCAL_AGENT_MODEL, cost_usd=0.0)
    async with (
        running_bridge(console_password=PASSWORD) as bridge,
        httpx.AsyncClient(base_url=bridge.base_url) as http,
    ):
        await save(bridge, echo, record())
        await log_in(http)
        listing = visible_text((await http.get("/console/calls")).text)
        assert "none (local echo agent)" in listing and "$0.1234" in listing
        page = visible_text((await http.get(f"/console/calls/{echo.call_sid}")).text)
    assert "Model the built-in local echo agent (no charge)" in " ".join(page.split())
    assert "Cost (estimated) none (local echo agent)" in " ".join(page.split())
    assert "$" not in page and "gpt-realtime" not in page


async def test_the_softphone_offers_the_configured_profiles(tmp_path) -> None:  # type: ignore[no-untyped-def]
    profiles = tmp_path / "profiles.toml"
    profiles.write_text('[profiles.sales]\ninstructions = "Sell."\n\n[profiles.support]\n')
    async with (
        running_bridge(console_password=PASSWORD, profiles_file=str(profiles)) as bridge,
        httpx.AsyncClient(base_url=bridge.base_url) as http,
    ):
        await log_in(http)
        page = (await http.get("/console/softphone")).text
    options = re.findall(r'<option value="([^"]+)"( selected)?>', page)
    assert options == [("default", " selected"), ("sales", ""), ("support", "")]
    assert '<select id="profile" name="profile">' in page


async def test_a_guesser_cannot_borrow_the_operators_address_through_x_forwarded_for() -> None:
    """Behind a proxy (here on loopback) that appends the client's address to
    X-Forwarded-For, what a client wrote to its left is not believed: a guesser who
    writes the operator's address there is still throttled as itself."""
    trusted = "127.0.0.1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"
    async with (
        running_bridge(console_password=PASSWORD, forwarded_allow_ips=trusted) as bridge,
        httpx.AsyncClient(base_url=bridge.base_url, timeout=30) as http,
    ):
        spoofed = {"X-Forwarded-For": "203.0.113.7, 198.51.100.66"}
        flood = [
            asyncio.ensure_future(
                http.post("/console/login", data={"password": f"guess {i}"}, headers=spoofed)
            )
            for i in range(15)
        ]
        await asyncio.sleep(0.2)
        began = time.monotonic()
        operator = await http.post(
            "/console/login",
            data={"password": PASSWORD},
            headers={"X-Forwarded-For": "203.0.113.7"},
        )
        took = time.monotonic() - began
        statuses = [(await f).status_code for f in flood]
    assert operator.status_code == 303
    assert took < bridge.app.state.console.throttle.delay_s
    assert 429 in statuses  # the guesser was throttled, as 198.51.100.66


async def test_the_timeline_tells_the_call_as_the_caller_lived_it_behind_the_login() -> None:
    async with running_bridge(console_password=PASSWORD) as bridge:
        report, record = await call_with_two_barge_ins(bridge)
        async with httpx.AsyncClient(base_url=bridge.base_url) as http:
            url = f"/console/calls/{report.call_sid}/timeline.json"
            refused = await http.get(url)
            use_cookie(http, await log_in(http))
            downloaded = await http.get(url)
            page = (await http.get(f"/console/calls/{report.call_sid}")).text

    timeline = record.timeline
    assert [e.at for e in timeline] == sorted(e.at for e in timeline)
    assert timeline[0].moment is Moment.WEBHOOK_ANSWERED and timeline[0].at < 0
    assert (timeline[1].at, timeline[1].moment) == (0.0, Moment.STREAM_STARTED)
    assert timeline[-1].moment is Moment.ENDED and timeline[-1].detail == record.end_reason
    # Every cut the caller lived through is on it, where the bridge made it.
    cuts = [
        f"{t.truncated_item_id} at {t.truncated_at_ms:.0f} ms"
        for t in report.turns
        if t.intentional_barge_in
    ]
    assert [e.detail for e in timeline if e.moment is Moment.TRUNCATE] == cuts
    clears = [e.at for e in timeline if e.moment is Moment.CLEAR]
    barged = [t for t in report.turns if t.intentional_barge_in]
    assert len(barged) == 2
    for turn, cleared_at in zip(barged, clears, strict=True):
        # The caller's barge-in speech began at speech_start_ms; the VAD is sure ~40 ms on.
        assert 0 <= cleared_at * 1000 - turn.speech_start_ms <= 500, (turn, cleared_at)
    heard = [e for e in timeline if e.moment is Moment.AUDIO_HEARD]
    assert len(heard) == 3
    for entry, turn in zip(heard, record.turns, strict=True):
        assert turn.first_audio_heard_ms is not None and turn.caller_stopped_ms is not None
        latency = turn.first_audio_heard_ms - turn.caller_stopped_ms
        # (the record's times are rounded to 0.1 ms each, the timeline's latency once)
        assert abs(float(entry.detail.removesuffix(" ms after")) - latency) <= 1, entry

    assert refused.status_code == 401
    assert downloaded.status_code == 200
    assert "attachment" in downloaded.headers["content-disposition"]
    body = downloaded.json()
    assert body["call_sid"] == report.call_sid and body["dropped"] == 0
    assert body["timeline"] == [
        {"at": e.at, "moment": e.moment.value, "detail": e.detail} for e in timeline
    ]
    assert 'id="timeline"' in page and "truncate" in visible_text(page)
