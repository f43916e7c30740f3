// The console's softphone: the browser plays Twilio's part of a call.
//
// It captures the microphone, filters and decimates it to 8 kHz, encodes G.711 mu-law in
// 20 ms frames, and speaks the Twilio Media Streams protocol to the bridge's /media-stream
// (connected, start, media, dtmf, stop). The bridge's audio is played gap-free through
// WebAudio, and marks and clears are honoured exactly as Twilio does: a mark is echoed when
// the audio queued before it has played (at once when nothing is queued), and a clear stops
// the audio at once and echoes every pending mark. The bridge's barge-in accounting depends
// on that timing, so the softphone exercises the same path a phone call does.
//
// Counters are kept on `window.softphone` for the page and for tests.
"use strict";

(function () {
  const OUT_RATE = 8000;
  const FRAME_BYTES = 160; // 20 ms of 8 kHz mu-law, what Twilio sends
  const FRAME_MS = 20;
  // Audio arriving into an empty queue starts this far ahead, so that the next chunk, if it
  // is a little late, still joins without a gap.
  const PLAYBACK_LEAD_S = 0.05;
  const MARK_POLL_MS = 10;
  const STOP_GRACE_MS = 2000; // after our `stop`, how long the bridge has to close the socket

  const counters = {
    state: "idle",
    framesSent: 0,
    mediaReceived: 0,
    bytesReceived: 0,
    marksReceived: 0,
    marksEchoed: 0,
    clears: 0,
    dtmfSent: 0,
    inputPeak: 0,
    sampleRate: null,
    capture: null,
    callSid: null,
    streamSid: null,
    closeCode: null,
    error: null,
  };
  window.softphone = counters;

  // ---------------------------------------------------------------- G.711 mu-law

  const MULAW_BIAS = 0x84;
  const MULAW_CLIP = 32635;

  function linearToMulaw(sample) {
    // The standard (Sun / ITU-T G.711) encoder: bias, find the segment, 4 mantissa bits.
    let sign = 0;
    if (sample < 0) {
      sign = 0x80;
      sample = -sample;
    }
    if (sample > MULAW_CLIP) sample = MULAW_CLIP;
    sample += MULAW_BIAS;
    let exponent = 7;
    for (let mask = 0x4000; (sample & mask) === 0 && exponent > 0; mask >>= 1) exponent--;
    const mantissa = (sample >> (exponent + 3)) & 0x0f;
    return ~(sign | (exponent << 4) | mantissa) & 0xff;
  }

  const MULAW_TO_FLOAT = new Float32Array(256);
  for (let i = 0; i < 256; i++) {
    const u = ~i & 0xff;
    const exponent = (u >> 4) & 0x07;
    const magnitude = ((((u & 0x0f) << 3) + MULAW_BIAS) << exponent) - MULAW_BIAS;
    MULAW_TO_FLOAT[i] = ((u & 0x80) ? -magnitude : magnitude) / 32768;
  }

  function base64FromBytes(bytes) {
    let text = "";
    for (let i = 0; i < bytes.length; i++) text += String.fromCharCode(bytes[i]);
    return btoa(text);
  }

  function bytesFromBase64(b64) {
    const text = atob(b64);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    return bytes;
  }

  // ---------------------------------------------------------------- 8 kHz downsampler

  // A Blackman-windowed sinc low-pass evaluated only where an 8 kHz output sample falls,
  // with linear interpolation between two filtered points when the rate ratio is not whole
  // (44.1 kHz). The cutoff sits below 4 kHz so that what lies above the new Nyquist
  // frequency does not fold back into the phone band.
  class Downsampler {
    constructor(inRate) {
      this.step = inRate / OUT_RATE;
      this.whole = Number.isInteger(this.step);
      this.half = Math.ceil(this.step * 16);
      const taps = 2 * this.half + 1;
      const fc = 3600 / inRate; // 6 dB point, in cycles per input sample
      this.kernel = new Float32Array(taps);
      let sum = 0;
      for (let k = 0; k < taps; k++) {
        const n = k - this.half;
        const sinc = n === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * n) / (Math.PI * n);
        const w =
          0.42 - 0.5 * Math.cos((2 * Math.PI * k) / (taps - 1)) +
          0.08 * Math.cos((4 * Math.PI * k) / (taps - 1));
        this.kernel[k] = sinc * w;
        sum += sinc * w;
      }
      for (let k = 0; k < taps; k++) this.kernel[k] /= sum; // unity gain at DC
      // Zeros before the first sample, so the first output has a full filter's history.
      this.buffer = new Float32Array(this.half);
      this.position = this.half; // input index of the next output sample
    }

    filterAt(n) {
      const kernel = this.kernel;
      const buffer = this.buffer;
      const start = n - this.half;
      let acc = 0;
      for (let k = 0; k < kernel.length; k++) acc += kernel[k] * buffer[start + k];
      return acc;
    }

    process(input) {
      const joined = new Float32Array(this.buffer.length + input.length);
      joined.set(this.buffer);
      joined.set(input, this.buffer.length);
      this.buffer = joined;
      const out = [];
      for (;;) {
        const n = Math.floor(this.position);
        if (n + 1 + this.half >= joined.length) break;
        const frac = this.position - n;
        let y = this.filterAt(n);
        if (!this.whole && frac > 0) y += frac * (this.filterAt(n + 1) - y);
        out.push(y);
        this.position += this.step;
      }
      // Keep only what later outputs still need.
      const drop = Math.max(0, Math.floor(this.position) - this.half);
      this.buffer = joined.slice(drop);
      this.position -= drop;
      return out;
    }
  }

  // ---------------------------------------------------------------- the call

  let call = null; // the call in progress, or null

  const $ = (id) => document.getElementById(id);

  function setStatus(text) {
    $("status").textContent = text;
  }

  function show() {
    for (const key of ["state", "framesSent", "mediaReceived", "marksEchoed", "clears"]) {
      const el = $("sp-" + key);
      if (el) el.textContent = String(counters[key]);
    }
    const meter = $("mic-level");
    if (meter) meter.value = counters.inputPeak;
  }

  function setButtons(inCall) {
    $("call").disabled = inCall;
    $("hangup").disabled = !inCall;
    $("profile").disabled = inCall;
    for (const key of document.querySelectorAll("#keypad .key")) key.disabled = !inCall;
  }

  class Call {
    constructor(session, context) {
      this.session = session;
      this.context = context;
      this.streamSid = session.stream_sid;
      this.sequence = 0;
      this.chunk = 0;
      this.frame = new Uint8Array(FRAME_BYTES);
      this.filled = 0;
      this.started = false; // `start` sent and the call not over: media may follow
      this.answered = false; // `start` was sent at some point (for the closing message)
      this.ended = false;
      this.playhead = 0; // AudioContext time when the queued audio runs out
      this.sources = new Set();
      this.pendingMarks = []; // {name, at}: echoed when playback reaches `at`
      this.stopTimer = null;
    }

    async open(stream) {
      this.stream = stream;
      if (this.context.state !== "running") await this.context.resume();
      counters.sampleRate = this.context.sampleRate;
      this.downsampler = new Downsampler(this.context.sampleRate);
      this.source = this.context.createMediaStreamSource(this.stream);
      // Capture nodes are only pulled when they lead to the destination: through a muted
      // gain, so the caller does not hear themselves.
      this.mute = this.context.createGain();
      this.mute.gain.value = 0;
      this.mute.connect(this.context.destination);
      if (this.context.audioWorklet) {
        await this.context.audioWorklet.addModule("/console/static/capture-worklet.js");
        this.capture = new AudioWorkletNode(this.context, "phone-bridge-capture", {
          numberOfInputs: 1,
          numberOfOutputs: 1,
          channelCount: 1,
          channelCountMode: "explicit",
        });
        this.capture.port.onmessage = (event) => this.captured(event.data);
        counters.capture = "audioworklet";
      } else {
        // Older browsers: deprecated, on the main thread, but it works everywhere.
        this.capture = this.context.createScriptProcessor(2048, 1, 1);
        this.capture.onaudioprocess = (event) =>
          this.captured(new Float32Array(event.inputBuffer.getChannelData(0)));
        counters.capture = "scriptprocessor";
      }
      this.source.connect(this.capture);
      this.capture.connect(this.mute);

      this.socket = new WebSocket(this.session.ws_url);
      this.socket.onopen = () => this.opened();
      this.socket.onmessage = (event) => this.received(event.data);
      this.socket.onclose = (event) => this.closed(event);
      this.socket.onerror = () => {
        counters.error = "the media stream failed";
      };
      this.markTimer = setInterval(() => this.echoPlayedMarks(), MARK_POLL_MS);
    }

    send(message) {
      if (this.socket && this.socket.readyState === WebSocket.OPEN) {
        this.socket.send(JSON.stringify(message));
      }
    }

    nextSequence() {
      this.sequence += 1;
      return String(this.sequence);
    }

    opened() {
      this.send({ event: "connected", protocol: "Call", version: "1.0.0" });
      this.send({
        event: "start",
        sequenceNumber: this.nextSequence(),
        start: {
          // Empty: there is no Twilio account behind this call, so the bridge never tries
          // to hang it up or transfer it through Twilio's REST API.
          accountSid: "",
          streamSid: this.streamSid,
          callSid: this.session.call_sid,
          tracks: ["inbound"],
          customParameters: this.session.parameters,
          mediaFormat: { encoding: "audio/x-mulaw", sampleRate: OUT_RATE, channels: 1 },
        },
        streamSid: this.streamSid,
      });
      this.started = true;
      this.answered = true;
      counters.state = "in call";
      setStatus("In call. Speak, and the agent answers.");
      setButtons(true);
      show();
    }

    captured(samples) {
      if (this.ended) return;
      let peak = 0;
      for (let i = 0; i < samples.length; i++) {
        const a = Math.abs(samples[i]);
        if (a > peak) peak = a;
      }
      counters.inputPeak = peak;
      const out = this.downsampler.process(samples);
      for (const y of out) {
        const s = Math.max(-32768, Math.min(32767, Math.round(y * 32767)));
        this.frame[this.filled++] = linearToMulaw(s);
        if (this.filled === FRAME_BYTES) {
          this.sendFrame(this.frame);
          this.filled = 0;
        }
      }
    }

    sendFrame(frame) {
      if (!this.started) return; // nothing may precede `start`; early audio is dropped
      this.chunk += 1;
      this.send({
        event: "media",
        sequenceNumber: this.nextSequence(),
        media: {
          track: "inbound",
          chunk: String(this.chunk),
          timestamp: String((this.chunk - 1) * FRAME_MS),
          payload: base64FromBytes(frame),
        },
        streamSid: this.streamSid,
      });
      counters.framesSent += 1;
      if (counters.framesSent % 10 === 0) show();
    }

    sendDigit(digit) {
      this.send({
        event: "dtmf",
        sequenceNumber: this.nextSequence(),
        streamSid: this.streamSid,
        dtmf: { track: "inbound_track", digit: digit },
      });
      counters.dtmfSent += 1;
    }

    received(text) {
      let message;
      try {
        message = JSON.parse(text);
      } catch (err) {
        return; // not ours to judge: Twilio ignores what it cannot read
      }
      if (message.event === "media" && message.media && message.media.payload) {
        this.play(bytesFromBase64(message.media.payload));
      } else if (message.event === "mark" && message.mark) {
        this.queueMark(String(message.mark.name));
      } else if (message.event === "clear") {
        this.clear();
      }
      show();
    }

    play(bytes) {
      counters.mediaReceived += 1;
      counters.bytesReceived += bytes.length;
      if (bytes.length === 0 || this.ended) return;
      const ctx = this.context;
      // An 8 kHz buffer: the AudioContext resamples it to the device rate.
      const buffer = ctx.createBuffer(1, bytes.length, OUT_RATE);
      const data = buffer.getChannelData(0);
      for (let i = 0; i < bytes.length; i++) data[i] = MULAW_TO_FLOAT[bytes[i]];
      const node = ctx.createBufferSource();
      node.buffer = buffer;
      node.connect(ctx.destination);
      const now = ctx.currentTime;
      if (this.playhead < now) this.playhead = now + PLAYBACK_LEAD_S;
      node.start(this.playhead);
      this.playhead += buffer.duration;
      this.sources.add(node);
      node.onended = () => this.sources.delete(node);
    }

    queueMark(name) {
      counters.marksReceived += 1;
      if (this.playhead <= this.heardUntil() && this.pendingMarks.length === 0) {
        this.echoMark(name); // nothing queued: Twilio echoes at once
      } else {
        this.pendingMarks.push({ name: name, at: this.playhead });
      }
    }

    heardUntil() {
      // What has left the speaker, not just the audio graph: a Bluetooth headset can lag
      // 200 ms, and a mark echoed early would overstate what the caller heard.
      const ctx = this.context;
      return ctx.currentTime - (ctx.outputLatency || ctx.baseLatency || 0);
    }

    echoPlayedMarks() {
      if (!this.context || this.ended) return;
      const now = this.heardUntil();
      let echoed = false;
      while (this.pendingMarks.length > 0 && this.pendingMarks[0].at <= now) {
        this.echoMark(this.pendingMarks.shift().name);
        echoed = true;
      }
      if (echoed) show();
    }

    echoMark(name) {
      this.send({
        event: "mark",
        sequenceNumber: this.nextSequence(),
        streamSid: this.streamSid,
        mark: { name: name },
      });
      counters.marksEchoed += 1;
    }

    clear() {
      counters.clears += 1;
      for (const node of this.sources) {
        try {
          node.stop();
        } catch (err) {
          // never started, or already stopped: silent either way
        }
        node.disconnect();
      }
      this.sources.clear();
      this.playhead = this.context ? this.context.currentTime : 0;
      const pending = this.pendingMarks;
      this.pendingMarks = [];
      for (const mark of pending) this.echoMark(mark.name);
    }

    hangUp() {
      if (this.ended) return;
      this.send({
        event: "stop",
        sequenceNumber: this.nextSequence(),
        streamSid: this.streamSid,
        stop: { accountSid: "", callSid: this.session.call_sid },
      });
      this.release();
      counters.state = "hanging up";
      setStatus("Hanging up...");
      show();
      // The bridge closes the stream on `stop`; if it does not, close it from here.
      this.stopTimer = setTimeout(() => {
        if (this.socket.readyState !== WebSocket.CLOSED) this.socket.close(1000, "hung up");
      }, STOP_GRACE_MS);
    }

    closed(event) {
      counters.closeCode = event.code;
      this.release();
      if (this.stopTimer) clearTimeout(this.stopTimer);
      counters.state = "ended";
      const why = event.code === 1000 || event.code === 1005 ? "" : ` (code ${event.code})`;
      setStatus(this.answered ? `Call ended${why}.` : `The bridge refused the call${why}.`);
      setButtons(false);
      show();
      if (call === this) call = null;
    }

    // Stops the microphone (the browser's recording indicator goes off) and all playback.
    release() {
      if (this.ended) return;
      this.ended = true;
      this.started = false;
      this.pendingMarks = []; // the call is over: Twilio echoes nothing after the end
      clearInterval(this.markTimer);
      if (this.stream) for (const track of this.stream.getTracks()) track.stop();
      if (this.capture) {
        if (this.capture.port) this.capture.port.onmessage = null;
        this.capture.disconnect();
      }
      if (this.source) this.source.disconnect();
      if (this.context) this.context.close();
    }
  }

  async function requestSession(profile) {
    const response = await fetch("/console/api/softphone", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(profile ? { profile: profile } : {}),
    });
    if (response.status === 401) {
      window.location.assign("/console/login?next=" + encodeURIComponent("/console/softphone"));
      throw new Error("logged out");
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error || `the bridge answered ${response.status}`);
    return data;
  }

  async function placeCall() {
    if (call) return;
    for (const key of ["framesSent", "mediaReceived", "bytesReceived", "marksReceived",
      "marksEchoed", "clears", "dtmfSent"]) counters[key] = 0;
    counters.error = null;
    counters.closeCode = null;
    counters.state = "connecting";
    setButtons(true);
    setStatus("Connecting...");
    show();
    // Made here, in the click itself: browsers let audio start only from a user gesture,
    // and the awaits below (the bridge, the microphone prompt) can outlast it.
    const context = new AudioContext();
    let microphone = null;
    try {
      // The microphone first: a refused prompt must not hold a line at the bridge.
      microphone = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, channelCount: 1 },
      });
      const session = await requestSession($("profile").value.trim());
      counters.callSid = session.call_sid;
      counters.streamSid = session.stream_sid;
      call = new Call(session, context);
      await call.open(microphone);
    } catch (err) {
      if (call) call.release();
      else {
        context.close();
        if (microphone) microphone.getTracks().forEach((track) => track.stop());
      }
      call = null;
      counters.state = "idle";
      counters.error = String(err && err.message ? err.message : err);
      const what = err && err.name === "NotAllowedError" ? "The microphone was refused" : "Could not call";
      setStatus(`${what}: ${counters.error}`);
      setButtons(false);
      show();
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("softphone").addEventListener("submit", (event) => {
      event.preventDefault();
      placeCall();
    });
    $("hangup").addEventListener("click", () => {
      if (call) call.hangUp();
    });
    for (const key of document.querySelectorAll("#keypad .key")) {
      key.addEventListener("click", () => {
        if (call && call.started) call.sendDigit(key.dataset.digit);
      });
    }
    if (!window.isSecureContext) {
      setStatus("The microphone needs https (or localhost): set PUBLIC_URL to an https URL.");
    }
    show();
  });
})();
