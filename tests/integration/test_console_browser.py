"""The console and its softphone in a real headless Chromium.

Chromium's fake microphone plays a WAV of synthetic speech; the softphone encodes it to
mu-law and speaks Twilio's Media Streams protocol to the real bridge, which is backed by
the shipped local echo agent, so the agent's answer is the caller's own speech played back.
The test logs in through the form, places the call, waits until the answer was received and
played (its marks echoed), hangs up, and reads the call and its transcript in the console.
Screenshots of each step are kept (SCREENSHOT_DIR, or .artifacts/screenshots/).
"""

from __future__ import annotations

import asyncio
import os
import re
import struct
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from bridge.audio import float_to_pcm16, synthetic_speech
from bridge.console.auth import COOKIE_NAME
from bridge.console.pages import fmt_clock
from tests.helpers.object_storage import RecordingsBucket
from tests.helpers.running_bridge import running_bridge, stored_record
from tests.helpers.twilio_side import call_with_two_barge_ins

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
        "apt-get install chromium chromium-driver",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402 - only once the browser is known to be there
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

pytestmark = pytest.mark.integration

PASSWORD = "browser-test-password"
REPO = Path(__file__).resolve().parents[2]
WAV_RATE = 48_000
SPEECH_MS = 1500
# The caller speaks again this long after their first turn ends: the agent's echo of it
# (2.3 s: the speech plus VAD padding) has started playing by then, and is still playing.
PAUSE_MS = 1300
INTERRUPTION_MS = 1200
PHONE_WIDTH = 390  # CSS px: a phone's screen, where no page may scroll sideways


def screenshot_dir() -> Path:
    path = Path(os.environ.get("SCREENSHOT_DIR") or REPO / ".artifacts" / "screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_speech_wav(path: Path) -> None:
    """1 s of silence, 1.5 s of speech, a pause, then 1.2 s of speech that talks over the
    agent's answer, then silence."""

    def silence(ms: int) -> np.ndarray:
        return np.zeros(WAV_RATE * ms // 1000)

    samples = np.concatenate(
        [
            silence(1000),
            synthetic_speech(SPEECH_MS, seed=7, rate=WAV_RATE),
            silence(PAUSE_MS),
            synthetic_speech(INTERRUPTION_MS, seed=8, rate=WAV_RATE),
            silence(6000),
        ]
    )
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(WAV_RATE)
        wav.writeframes(float_to_pcm16(samples))


def start_chromium(wav: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--use-fake-ui-for-media-stream",  # grant the microphone without a prompt
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(argument)
    # The system chromedriver: Selenium Manager must not try to download one.
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


class Browser:
    """The blocking WebDriver, driven from a thread so the bridge (on this event loop)
    keeps serving the page while the test waits on it."""

    def __init__(self, driver: webdriver.Chrome, shots: Path) -> None:
        self.driver = driver
        self.shots = shots
        self.saved: list[Path] = []

    async def do(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def open(self, url: str) -> None:
        await self.do(self.driver.get, url)

    async def click(self, css: str) -> None:
        element = await self.do(self.driver.find_element, By.CSS_SELECTOR, css)
        await self.do(element.click)

    async def text(self, css: str) -> str:
        element = await self.do(self.driver.find_element, By.CSS_SELECTOR, css)
        return await self.do(lambda: element.text)

    async def until_at(self, url: str, timeout: float = 5) -> None:
        """A click that submits a form or follows a link returns before the next page has
        loaded: wait for it."""
        deadline = time.monotonic() + timeout
        while await self.do(lambda: self.driver.current_url) != url:
            if time.monotonic() > deadline:
                raise AssertionError(f"still at {self.driver.current_url}, not {url}")
            await asyncio.sleep(0.02)
        await self.do(
            self.driver.execute_script, "return document.readyState;"
        )  # a script runs only once the new document is in place

    async def softphone(self) -> dict[str, Any]:
        return await self.do(self.driver.execute_script, "return {...window.softphone};")

    async def until_softphone(
        self, condition: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            state = await self.softphone()
            if condition(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}: {state}")
            await asyncio.sleep(0.05)

    async def until_true(self, script: str, timeout: float, what: str) -> Any:
        """Run `script` (an expression, or a body that returns) until its value is truthy;
        that value."""
        body = script if "return" in script else f"return {script};"
        deadline = time.monotonic() + timeout
        while not (value := await self.do(self.driver.execute_script, body)):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            await asyncio.sleep(0.05)
        return value

    async def screenshot(self, name: str) -> None:
        path = self.shots / name
        assert await self.do(self.driver.save_screenshot, str(path)), path
        self.saved.append(path)


# The waveform's data, as the page fetched it.
FETCH_WAVEFORM = """
const done = arguments[arguments.length - 1];
fetch(document.getElementById('waveform').dataset.src).then(r => r.json()).then(done);
"""
# What the picture holds: pixels of each lane's colour and each mark's, per lane (the
# colours are the legend's swatches'), the marks it drew, and the legend's counts.
WAVEFORM_PIXELS = """
const canvas = document.getElementById('waveform');
const { width, height } = canvas;
const pixels = canvas.getContext('2d').getImageData(0, 0, width, height).data;
const colours = {};
for (const swatch of document.querySelectorAll('#waveform-legend .swatch')) {
  const rgb = getComputedStyle(swatch).backgroundColor.match(/\\d+/g).slice(0, 3).join(',');
  const name = [...swatch.classList].find(c => c !== 'swatch').replace('wave-', '');
  colours[rgb] = name;
}
const lanes = {};
for (const name of Object.values(colours)) lanes[name] = { top: 0, bottom: 0 };
for (let y = 0; y < height; y++) {
  const lane = y < Math.floor(height / 2) ? 'top' : 'bottom';
  for (let x = 0; x < width; x++) {
    const i = (y * width + x) * 4;
    const name = colours[pixels[i] + ',' + pixels[i + 1] + ',' + pixels[i + 2]];
    if (name) lanes[name][lane]++;
  }
}
const legend = {};
for (const item of document.querySelectorAll('#waveform-legend [data-kind]')) {
  legend[item.dataset.kind] = Number(item.dataset.count);
}
return { lanes, legend, markersDrawn: Number(canvas.dataset.markersDrawn) };
"""
# Where the player's next seek lands, as the browser reports it (its `seeked` event).
WATCH_SEEKS = """
const player = document.getElementById('recording');
window.seekedTo = null;
player.addEventListener('seeked', () => { window.seekedTo = player.currentTime; }, { once: true });
"""
SEEKED = "return window.seekedTo === null ? null : [window.seekedTo];"


def caller_seconds(text: str) -> float:
    match = re.fullmatch(r"\((\d+\.\d\d) s of caller audio\)", text)
    assert match is not None, text
    return float(match[1])


def assert_real_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert width >= PHONE_WIDTH and height >= 600, (path, width, height)
    assert len(data) > 10_000, f"{path} is suspiciously small ({len(data)} bytes)"


async def test_a_softphone_call_from_headless_chromium(tmp_path: Path) -> None:
    wav = tmp_path / "caller.wav"
    write_speech_wav(wav)
    # No backend configured: the app runs its built-in echo agent, as `serve` does.
    async with running_bridge(
        console_password=PASSWORD,
        realtime_url=None,
        recording="bridge",
        recordings_dir=str(tmp_path / "recordings"),
    ) as bridge:
        driver = await asyncio.to_thread(start_chromium, wav)
        browser = Browser(driver, screenshot_dir())
        try:
            # Log in through the form; it sends us on to the page we asked for.
            await browser.open(bridge.base_url + "/console/softphone")
            assert "/console/login" in driver.current_url
            await browser.screenshot("01-login.png")
            field = await browser.do(driver.find_element, By.ID, "password")
            await browser.do(field.send_keys, PASSWORD)
            await browser.click("#login")
            await browser.until_at(bridge.base_url + "/console/softphone")
            assert (await browser.do(driver.get_cookie, COOKIE_NAME))["httpOnly"] is True

            # The profile is picked from the configured ones, not typed.
            profiles = await browser.do(
                driver.execute_script,
                "return [...document.querySelectorAll('#profile option')].map(o => o.value);",
            )
            assert profiles == ["default"], profiles
            await browser.click("#call")
            state = await browser.until_softphone(
                lambda s: s["state"] == "in call" and s["framesSent"] > 0, 10, "the call"
            )

            # The echo agent answers with the caller's own speech, and the caller talks
            # over it: the bridge clears the audio queued in the browser, which stops it and
            # hands back every pending mark at once, as Twilio does.
            state = await browser.until_softphone(
                lambda s: s["clears"] > 0, 15, "the barge-in to clear the answer"
            )
            assert state["mediaReceived"] > 0 and state["marksEchoed"] > 0
            cleared_at_bytes = state["bytesReceived"]
            # Then the answer to the interruption, received and played out to the end
            # (every mark echoed back as playback passed it).
            state = await browser.until_softphone(
                lambda s: (
                    s["bytesReceived"] >= cleared_at_bytes + INTERRUPTION_MS * 8
                    and s["marksEchoed"] == s["marksReceived"]
                ),
                15,
                "the second answer to be heard",
            )
            assert state["clears"] == 1
            assert state["capture"] == "audioworklet"
            assert state["error"] is None
            assert "In call" in await browser.text("#status")
            await browser.screenshot("02-softphone-in-call.png")

            # Meanwhile, in another tab: the call among the live calls, kept current.
            softphone_tab = driver.current_window_handle
            await browser.do(driver.switch_to.new_window, "tab")
            await browser.open(bridge.base_url + "/console")
            row = await browser.text("#live-calls tbody tr")
            assert row.split()[:3] == [state["callSid"], "browser", "console"], row
            deadline = time.monotonic() + 5
            while not (await browser.text("#live-updated")).startswith("Updated"):
                assert time.monotonic() < deadline, "the live calls never refreshed"
                await asyncio.sleep(0.05)
            assert state["callSid"] in await browser.text("#live-calls")
            # Its status in an operator's words, and a link to the call.
            assert "in conversation" in await browser.text("#live-calls tbody tr")
            await browser.screenshot("03-live.png")
            await browser.click(f'#live-calls a[href="/console/calls/{state["callSid"]}"]')
            await browser.until_at(f"{bridge.base_url}/console/calls/{state['callSid']}")
            assert "This call is in progress" in await browser.text("#in-progress")
            assert "in conversation" in await browser.text("#facts")
            await browser.screenshot("04-call-in-progress.png")
            await browser.do(driver.close)
            await browser.do(driver.switch_to.window, softphone_tab)

            await browser.click("#hangup")
            await browser.until_softphone(lambda s: s["state"] == "ended", 5, "the hang-up")
            assert (await browser.text("#status")).startswith("Call ended")
            call_sid = state["callSid"]

            await stored_record(bridge, call_sid)

            # The call in the list of past calls, then its own page.
            await browser.open(bridge.base_url + "/console/calls")
            link = f'a[href="/console/calls/{call_sid}"]'
            row = await browser.do(
                driver.find_element, By.XPATH, f"//a[@href='/console/calls/{call_sid}']/../.."
            )
            cells = (await browser.do(lambda: row.text)).split()
            assert "browser" in cells and "console" in cells
            assert "none (local echo agent)" in await browser.do(lambda: row.text)
            await browser.screenshot("05-calls.png")
            # On a phone's width the past calls fit without sideways scrolling.
            await browser.do(driver.set_window_size, PHONE_WIDTH, 900)
            await browser.open(bridge.base_url + "/console/calls")
            inner, scrolled = await browser.do(
                driver.execute_script,
                "return [window.innerWidth, document.documentElement.scrollWidth];",
            )
            assert inner <= PHONE_WIDTH + 20 and scrolled <= inner, (inner, scrolled)
            await browser.screenshot("06-calls-phone.png")
            await browser.do(driver.set_window_size, 1280, 1000)

            await browser.click(link)
            await browser.until_at(f"{bridge.base_url}/console/calls/{call_sid}")
            facts = await browser.text("#facts")
            assert "browser" in facts and "console" in facts
            lines = await browser.do(
                driver.execute_script,
                "return [...document.querySelectorAll('#transcript li')].map(li => ["
                " li.querySelector('.who').textContent, li.querySelector('.text').textContent,"
                " li.classList.contains('cut-line')]);",
            )
            assert [(who, cut) for who, _, cut in lines] == [
                ("Caller", False),
                ("Assistant", True),  # interrupted: only what the caller heard of it
                ("Caller", False),
                ("Assistant", False),
            ], lines
            # The local agent's stand-in transcription says how much caller audio it heard
            # (the speech plus VAD padding); its answer echoes all of it.
            first = caller_seconds(lines[0][1])
            assert SPEECH_MS / 1000 <= first <= SPEECH_MS / 1000 + 1.5, lines
            assert lines[1][1].startswith("(echo") and lines[1][1].endswith("…"), lines
            second = caller_seconds(lines[2][1])
            assert INTERRUPTION_MS / 1000 <= second <= INTERRUPTION_MS / 1000 + 1.5, lines
            assert lines[3][1] == f"(echo of {second:.2f} s of your speech)", lines

            chart = await browser.text("#latency-chart")
            assert "Turn 1" in chart and "Turn 2" in chart, chart
            assert len(re.findall(r"heard \d+ ms", chart)) == 2, chart
            cut_at = re.findall(r"barge-in, cut at (\d+) ms", chart)
            assert len(cut_at) == 1 and 0 < int(cut_at[0]) < first * 1000, chart
            facts = await browser.text("#facts")
            assert "Barge-ins\n1" in facts
            # The echo agent is nobody's paid model.
            assert "Model\nthe built-in local echo agent (no charge)" in facts, facts
            assert "Cost (estimated)\nnone (local echo agent)" in facts, facts
            # Each figure says what it measures: a legend, and tooltips on the columns.
            legend = await browser.text("#latency-legend")
            assert "where the caller stopped speaking" in legend, legend
            assert "first audio heard after" in legend, legend
            hints = await browser.do(
                driver.execute_script,
                "return [...document.querySelectorAll('#turns th.hint')].map(th => th.title);",
            )
            assert len(hints) == 3 and all(len(h) > 60 for h in hints), hints
            # The recording plays in the page, and seeks (range requests, under its CSP).
            player = "const a = document.getElementById('recording');"
            duration = 0.0
            for _ in range(100):  # up to 5 s for its metadata
                duration = await browser.do(
                    driver.execute_script,
                    player + "return a.readyState >= 1 ? a.duration : 0;",
                )
                if duration:
                    break
                await asyncio.sleep(0.05)
            assert duration > SPEECH_MS / 1000, duration
            await browser.do(driver.execute_script, player + "a.currentTime = 1.5;")
            position = 0.0
            for _ in range(100):
                position = await browser.do(
                    driver.execute_script, player + "return a.seeking ? -1 : a.currentTime;"
                )
                if position >= 0:
                    break
                await asyncio.sleep(0.05)
            assert abs(position - 1.5) < 0.1, position

            # The recording's picture: both sides drawn in their lanes, every moment of
            # the call marked and counted in the legend.
            await browser.until_true(
                "document.getElementById('waveform').dataset.markersDrawn", 5, "the waveform"
            )
            picture = await browser.do(driver.execute_async_script, FETCH_WAVEFORM)
            markers = picture["markers"]
            kinds = [m["kind"] for m in markers]
            assert kinds.count("caller") == 2 and kinds.count("barge_in") == 1, markers
            assert kinds.count("heard") == 2, markers
            drawn = await browser.do(driver.execute_script, WAVEFORM_PIXELS)
            assert drawn["markersDrawn"] == len(markers), (drawn, markers)
            assert drawn["legend"] == {kind: kinds.count(kind) for kind in set(kinds)}, drawn
            lanes = drawn["lanes"]
            # Each side in its own lane, and only there; the barge-in across both.
            assert lanes["caller"]["top"] > 200 and lanes["caller"]["bottom"] == 0, lanes
            assert lanes["assistant"]["bottom"] > 200 and lanes["assistant"]["top"] == 0, lanes
            assert lanes["mk-barge_in"]["top"] > 0 and lanes["mk-barge_in"]["bottom"] > 0
            assert lanes["mk-caller"]["top"] > 0 and lanes["mk-caller"]["bottom"] == 0, lanes
            label = await browser.do(
                driver.execute_script,
                "return document.getElementById('waveform').getAttribute('aria-label');",
            )
            assert "2 caller turns" in label and "1 barge-in" in label, label

            # A transcript line's time plays the recording from there.
            times = await browser.do(
                driver.execute_script,
                "return [...document.querySelectorAll('#transcript button.at')]"
                ".map(b => [Number(b.dataset.at), b.textContent]);",
            )
            assert [at for at, _ in times] == sorted(at for at, _ in times), times
            assert len(times) == len(lines), times
            answer_at, shown = times[1]
            assert shown == fmt_clock(answer_at), times
            await browser.do(driver.execute_script, WATCH_SEEKS)
            await browser.click("#transcript li:nth-child(2) button.at")
            [seeked] = await browser.until_true(SEEKED, 5, "the seek")
            assert abs(seeked - answer_at) < 0.1, (seeked, answer_at)
            await browser.until_true(
                f"const a = document.getElementById('recording');"
                f"return !a.paused && a.currentTime > {answer_at + 0.2};",
                5,
                "the recording to play from the line",
            )
            # The playhead follows it, and the line being played is marked.
            await browser.until_true(
                "const a = document.getElementById('recording');"
                "const w = document.getElementById('waveform');"
                "return Math.abs(Number(w.getAttribute('aria-valuenow')) - a.currentTime) < 0.5;",
                5,
                "the playhead to follow",
            )
            current = await browser.do(
                driver.execute_script,
                "return document.querySelector('#transcript li[aria-current=true] .who')"
                ".textContent;",
            )
            assert current == "Assistant", current

            # Clicking the picture plays from where it was clicked.
            await browser.do(driver.execute_script, WATCH_SEEKS)
            canvas = await browser.do(driver.find_element, By.ID, "waveform")
            width = await browser.do(lambda: canvas.size["width"])
            offset = round(width * 0.25)  # from its centre: three quarters along
            await browser.do(
                ActionChains(driver).move_to_element_with_offset(canvas, offset, 0).click().perform
            )
            [seeked] = await browser.until_true(SEEKED, 5, "the seek")
            expected = (width / 2 + offset) / width * picture["duration_s"]
            assert abs(seeked - expected) < 0.1 + picture["duration_s"] / width, (seeked, expected)
            # From the keyboard too: the picture takes the focus, an arrow steps 5 s.
            paused_at = await browser.do(
                driver.execute_script,
                "const a = document.getElementById('recording'); a.pause(); return a.currentTime;",
            )
            await browser.do(driver.execute_script, WATCH_SEEKS)
            await browser.do(canvas.send_keys, Keys.ARROW_LEFT)
            [stepped] = await browser.until_true(SEEKED, 5, "the step back")
            assert abs(stepped - (paused_at - 5)) < 0.1, (stepped, paused_at)
            await browser.do(driver.set_window_size, 1280, 1500)
            await browser.screenshot("07-call.png")

            # On a phone's width the call's page, its picture included, fits too.
            await browser.do(driver.set_window_size, PHONE_WIDTH, 900)
            await browser.do(driver.refresh)
            await browser.until_true(
                "document.getElementById('waveform').dataset.markersDrawn", 5, "the waveform"
            )
            inner, scrolled, pictured = await browser.do(
                driver.execute_script,
                "return [window.innerWidth, document.documentElement.scrollWidth,"
                " document.getElementById('waveform').getBoundingClientRect().right];",
            )
            assert inner <= PHONE_WIDTH + 20 and scrolled <= inner, (inner, scrolled)
            assert pictured <= inner, (pictured, inner)
            await browser.do(
                driver.execute_script,
                "document.getElementById('recording').scrollIntoView({block: 'start'});",
            )
            await browser.screenshot("08-call-phone.png")
        finally:
            await asyncio.to_thread(driver.quit)
    assert [p.name for p in browser.saved] == [
        "01-login.png",
        "02-softphone-in-call.png",
        "03-live.png",
        "04-call-in-progress.png",
        "05-calls.png",
        "06-calls-phone.png",
        "07-call.png",
        "08-call-phone.png",
    ]
    for path in browser.saved:
        assert_real_png(path)


@pytest.mark.parametrize("recording_format", ["wav", "flac"])
async def test_a_recording_in_object_storage_plays_and_seeks_in_chromium(
    tmp_path: Path, s3_bucket: RecordingsBucket, recording_format: str
) -> None:
    """Streamed from the bucket through the bridge (range requests under the console's
    CSP): Chromium knows its length from the header the close wrote, seeks in it, plays
    from there, and draws its waveform."""
    wav = tmp_path / "caller.wav"
    write_speech_wav(wav)  # (the fake microphone's; this call is the simulator's)
    async with running_bridge(
        console_password=PASSWORD,
        recording="bridge",
        recording_format=recording_format,
        recordings_dir=str(tmp_path / "spool"),
        **s3_bucket.settings,
    ) as bridge:
        report, record = await call_with_two_barge_ins(bridge)
        assert record.recording is not None and record.recording.url.startswith("s3://")
        with s3_bucket.bucket().reader(f"{report.call_sid}.{recording_format}") as stored:
            length_s = soundfile.info(stored).duration
        driver = await asyncio.to_thread(start_chromium, wav)
        browser = Browser(driver, screenshot_dir())
        try:
            await browser.open(bridge.base_url + f"/console/calls/{report.call_sid}")
            field = await browser.do(driver.find_element, By.ID, "password")
            await browser.do(field.send_keys, PASSWORD)
            await browser.click("#login")
            await browser.until_at(bridge.base_url + f"/console/calls/{report.call_sid}")
            player = "const a = document.getElementById('recording');"
            duration = await browser.until_true(
                player + "return a.readyState >= 1 && a.duration;", 5, "its metadata"
            )
            assert abs(duration - length_s) < 0.05, (duration, length_s)
            await browser.do(driver.execute_script, WATCH_SEEKS)
            await browser.do(driver.execute_script, player + "a.currentTime = 2.5; a.play();")
            [seeked] = await browser.until_true(SEEKED, 5, "the seek")
            assert abs(seeked - 2.5) < 0.1, seeked
            await browser.until_true(
                player + "return !a.paused && a.currentTime > 2.8;", 5, "it to play from there"
            )
            await browser.until_true(
                "document.getElementById('waveform').dataset.markersDrawn", 5, "the waveform"
            )
            drawn = await browser.do(driver.execute_script, WAVEFORM_PIXELS)
            assert drawn["lanes"]["caller"]["top"] > 200, drawn
            assert drawn["lanes"]["assistant"]["bottom"] > 200, drawn
        finally:
            await asyncio.to_thread(driver.quit)
