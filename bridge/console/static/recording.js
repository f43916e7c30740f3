// A call's recording on its page: the waveform of both channels with the call's moments
// marked, a playhead that follows the player, and seeking from the picture or from a
// transcript line's time.
//
// The picture's data comes from waveform.json (peaks per bucket, markers on the call's
// clock: the recording's time 0 is the stream's start). Its colours are the legend's
// swatches' (console.css), so the key and the picture cannot disagree. Labels from the
// call (tool names) only ever reach the page as text.
"use strict";

(function () {
  const player = document.getElementById("recording");
  const canvas = document.getElementById("waveform");
  const legend = document.getElementById("waveform-legend");
  const status = document.getElementById("waveform-status");
  const transcript = document.getElementById("transcript");
  if (!player) return;

  const SEEK_STEP_S = 5; // an arrow key on the picture
  const LANE_LABEL_PX = 11;

  function clock(seconds) {
    // mm:ss.s, as the page's transcript shows times (pages.fmt_clock).
    let tenths = Math.round(Math.max(0, seconds) * 10);
    const hours = Math.floor(tenths / 36000);
    tenths -= hours * 36000;
    const minutes = Math.floor(tenths / 600);
    tenths -= minutes * 600;
    const text =
      String(minutes).padStart(2, "0") + ":" +
      String(Math.floor(tenths / 10)).padStart(2, "0") + "." + (tenths % 10);
    return hours ? hours + ":" + text : text;
  }

  function playFrom(seconds) {
    const end = Number.isFinite(player.duration) ? player.duration : seconds;
    player.currentTime = Math.min(Math.max(0, seconds), end);
    const playing = player.play();
    if (playing) playing.catch(() => {}); // (a browser that refuses autoplay: it is seeked)
  }

  // ------------------------------------------------------------------ the transcript

  const lines = transcript ? [...transcript.querySelectorAll("button.at[data-at]")] : [];
  for (const button of lines) {
    button.addEventListener("click", () => playFrom(Number(button.dataset.at)));
  }

  function markCurrentLine() {
    // The line being played: the last one that began at or before the playhead.
    let current = null;
    for (const button of lines) {
      if (Number(button.dataset.at) <= player.currentTime + 0.05) current = button;
    }
    for (const button of lines) {
      const item = button.closest("li");
      if (button === current) item.setAttribute("aria-current", "true");
      else item.removeAttribute("aria-current");
    }
  }

  // ------------------------------------------------------------------ the picture

  if (!canvas) {
    player.addEventListener("timeupdate", markCurrentLine);
    return;
  }

  let data = null; // waveform.json
  let picture = null; // the drawn waveform and markers, without the playhead
  const colours = {};

  // A swatch's colour ("wave-caller", "mk-tool", ...): the legend shows a swatch for each
  // lane and each kind of mark the call has.
  function colour(name) {
    if (!(name in colours)) {
      const swatch = legend && legend.querySelector(".swatch." + name);
      colours[name] = swatch ? getComputedStyle(swatch).backgroundColor : "#888";
    }
    return colours[name];
  }

  function duration() {
    if (data && data.duration_s > 0) return data.duration_s;
    return Number.isFinite(player.duration) ? player.duration : 0;
  }

  // Where each kind of mark goes: the caller's in their lane, answers heard in the
  // assistant's, the rest across both. Spans are bands under the waveform, instants lines
  // over it.
  const LANES = { caller: "top", heard: "bottom" };

  function rows(marker, lane, height) {
    const where = LANES[marker.kind];
    if (where === "top") return [0, lane];
    if (where === "bottom") return [lane, height];
    return [0, height];
  }

  function draw() {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    canvas.width = width;
    canvas.height = height;
    picture = document.createElement("canvas");
    picture.width = width;
    picture.height = height;
    const g = picture.getContext("2d");
    const lane = Math.floor(height / 2);
    const total = duration();
    if (!(total > 0)) {
      status.textContent = "The recording is empty: nothing to draw.";
      return;
    }
    const x = (seconds) => Math.round((Math.min(Math.max(seconds, 0), total) / total) * width);
    const style = getComputedStyle(canvas);
    g.fillStyle = style.backgroundColor;
    g.fillRect(0, 0, width, height);

    let drawn = 0;
    for (const marker of data.markers) {
      if (marker.end <= marker.start) continue;
      const [top, bottom] = rows(marker, lane, height);
      const left = x(marker.start);
      g.fillStyle = colour("mk-" + marker.kind);
      g.fillRect(left, top, Math.max(1, x(marker.end) - left), bottom - top);
      drawn++;
    }

    // Each lane's peaks, mirrored about its middle, one column a device pixel, scaled to
    // the loudest of the call (a quiet line still shows its shape).
    const names = ["caller", "assistant"];
    const loudest = Math.max(
      1,
      ...names.map((name) => Math.max(0, ...(data.channels[name] || []))),
    );
    const pictured = Math.min(1, data.pictured_s / total);
    names.forEach((name, index) => {
      const peaks = data.channels[name] || [];
      if (!peaks.length) return;
      const middle = index * lane + lane / 2;
      const reach = lane / 2 - 2;
      g.fillStyle = colour("wave-" + name);
      const columns = Math.max(1, Math.round(width * pictured));
      for (let column = 0; column < columns; column++) {
        const from = Math.floor((column * peaks.length) / columns);
        const to = Math.max(from + 1, Math.floor(((column + 1) * peaks.length) / columns));
        let peak = 0;
        for (let k = from; k < to && k < peaks.length; k++) peak = Math.max(peak, peaks[k]);
        const half = Math.round((peak / loudest) * reach);
        if (half > 0) g.fillRect(column, Math.round(middle - half), 1, 2 * half);
      }
    });

    for (const marker of data.markers) {
      if (marker.end > marker.start) continue;
      const [top, bottom] = rows(marker, lane, height);
      g.fillStyle = colour("mk-" + marker.kind);
      g.fillRect(Math.min(x(marker.start), width - 2 * ratio), top, 2 * ratio, bottom - top);
      drawn++;
    }

    g.fillStyle = style.borderTopColor;
    g.fillRect(0, lane, width, 1);
    g.fillStyle = style.color;
    g.font = Math.round(LANE_LABEL_PX * ratio) + "px system-ui, sans-serif";
    g.textBaseline = "top";
    g.fillText("Caller", 4 * ratio, 3 * ratio);
    g.fillText("Assistant", 4 * ratio, lane + 3 * ratio);

    canvas.dataset.markersDrawn = String(drawn);
    canvas.setAttribute("aria-valuemax", total.toFixed(1));
    showPlayhead();
  }

  function showPlayhead() {
    if (!picture) return;
    const g = canvas.getContext("2d");
    g.drawImage(picture, 0, 0);
    const total = duration();
    const at = player.currentTime || 0;
    if (total > 0) {
      const ratio = window.devicePixelRatio || 1;
      const left = Math.min(Math.round((at / total) * canvas.width), canvas.width - 2 * ratio);
      g.fillStyle = colour("playhead");
      g.fillRect(left, 0, 2 * ratio, canvas.height);
    }
    canvas.setAttribute("aria-valuenow", at.toFixed(1));
    canvas.setAttribute("aria-valuetext", clock(at) + " of " + clock(total));
  }

  // The playhead moves every frame while it plays (timeupdate comes only a few times a
  // second): one loop, however often it is started.
  let following = false;

  function follow() {
    if (following) return;
    following = true;
    const frame = () => {
      showPlayhead();
      if (player.paused) following = false;
      else requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
  }

  // The mark under the pointer, said as the picture's tooltip.
  function markerAt(seconds, top) {
    const slack = (duration() / canvas.clientWidth) * 3; // a few px either side of a line
    const inLane = (marker) => {
      const where = LANES[marker.kind];
      return !where || (where === "top") === top;
    };
    return data.markers.find(
      (m) => inLane(m) && seconds >= m.start - slack && seconds <= m.end + slack,
    );
  }

  function secondsAt(event) {
    const box = canvas.getBoundingClientRect();
    return ((event.clientX - box.left) / box.width) * duration();
  }

  async function load() {
    let response;
    try {
      response = await fetch(canvas.dataset.src, { credentials: "same-origin" });
    } catch (err) {
      status.textContent = "Cannot reach the bridge for the waveform.";
      return;
    }
    if (response.status === 401) {
      window.location.assign("/console/login?next=" + encodeURIComponent(location.pathname));
      return;
    }
    if (!response.ok) {
      status.textContent = "No waveform: the bridge answered " + response.status + ".";
      return;
    }
    try {
      data = await response.json();
    } catch (err) {
      status.textContent = "The waveform could not be read.";
      return;
    }
    draw();
    canvas.classList.add("drawn");
  }

  canvas.addEventListener("click", (event) => {
    if (data) playFrom(secondsAt(event));
  });
  canvas.addEventListener("mousemove", (event) => {
    if (!data) return;
    const seconds = secondsAt(event);
    const box = canvas.getBoundingClientRect();
    const marker = markerAt(seconds, event.clientY - box.top < box.height / 2);
    canvas.title = clock(seconds) + (marker ? ": " + marker.label : "");
  });
  canvas.addEventListener("keydown", (event) => {
    const at = player.currentTime || 0;
    const moves = {
      ArrowLeft: at - SEEK_STEP_S,
      ArrowRight: at + SEEK_STEP_S,
      Home: 0,
      End: duration(),
    };
    if (event.key in moves) {
      player.currentTime = Math.min(Math.max(0, moves[event.key]), duration());
    } else if (event.key === " " || event.key === "Enter") {
      if (player.paused) playFrom(at);
      else player.pause();
    } else {
      return;
    }
    event.preventDefault();
  });
  player.addEventListener("play", follow);
  player.addEventListener("seeked", () => {
    showPlayhead();
    markCurrentLine();
  });
  player.addEventListener("timeupdate", () => {
    showPlayhead();
    markCurrentLine();
  });
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => data && draw(), 100);
  });

  load();
})();
