// Runs on the audio thread: hands the microphone's samples to the page in ~20 ms batches.
// The filtering and encoding happen on the page (shared with the ScriptProcessor fallback);
// batching keeps that to ~50 messages a second instead of one per 128-sample block.
"use strict";

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.size = Math.max(128, Math.round(sampleRate / 50));
    this.batch = new Float32Array(this.size);
    this.filled = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (input && input.length > 0) {
      const samples = input[0];
      let i = 0;
      while (i < samples.length) {
        const n = Math.min(samples.length - i, this.size - this.filled);
        this.batch.set(samples.subarray(i, i + n), this.filled);
        this.filled += n;
        i += n;
        if (this.filled === this.size) {
          // Transferred, not copied: the sent array is detached (length 0) from here on.
          this.port.postMessage(this.batch, [this.batch.buffer]);
          this.batch = new Float32Array(this.size);
          this.filled = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("phone-bridge-capture", CaptureProcessor);
