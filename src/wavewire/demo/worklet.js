// The demo's audio processors, run on the browser's audio thread (AudioWorkletGlobalScope,
// where `sampleRate` is the AudioContext's rate).
"use strict";

// Linear-interpolation resampling, streaming: keeps the position and the last sample between
// calls so consecutive chunks join without a click. Enough for a speech demo.
class LinearResampler {
  constructor(fromRate, toRate) {
    this.step = fromRate / toRate; // input samples per output sample
    this.pos = 0; // position of the next output sample, relative to `input[0]`
    this.last = 0; // the previous chunk's last sample (position -1)
  }

  process(input) {
    const out = [];
    const sampleAt = (i) => (i < 0 ? this.last : input[i]);
    while (this.pos <= input.length - 1) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      const a = sampleAt(i);
      const b = i + 1 < input.length ? input[i + 1] : a;
      out.push(a + (b - a) * frac);
      this.pos += this.step;
    }
    this.pos -= input.length;
    if (input.length) this.last = input[input.length - 1];
    return Float32Array.from(out);
  }
}

// Microphone -> PCM16 frames of `frameSamples` at `wireRate`, posted to the page.
class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { wireRate, frameMs } = options.processorOptions;
    this.resampler = new LinearResampler(sampleRate, wireRate);
    this.frameSamples = Math.round((wireRate * frameMs) / 1000);
    this.frame = new Int16Array(this.frameSamples);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    for (const sample of this.resampler.process(channel)) {
      const clipped = Math.max(-1, Math.min(1, sample));
      this.frame[this.filled++] = clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff;
      if (this.filled === this.frameSamples) {
        this.port.postMessage(this.frame.buffer, [this.frame.buffer]); // detaches this.frame
        this.frame = new Int16Array(this.frameSamples);
        this.filled = 0;
      }
    }
    return true;
  }
}

// Received audio -> speakers, through a small jitter buffer: playback starts (and restarts
// after running dry) once `targetMs` are queued; past `maxMs` the oldest audio is dropped so
// the delay cannot grow. {type: "flush"} drops everything at once (an interruption).
class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetMs, maxMs } = options.processorOptions;
    this.target = Math.round((sampleRate * targetMs) / 1000);
    this.max = Math.round((sampleRate * maxMs) / 1000);
    this.queue = []; // Float32Arrays at `sampleRate`
    this.offset = 0; // samples of queue[0] already played
    this.queued = 0; // samples queued, minus `offset`
    this.playing = false;
    this.played = 0;
    this.resamplers = new Map(); // by input rate
    this.quanta = 0;
    this.port.onmessage = (event) => this.receive(event.data);
  }

  receive(message) {
    if (message.type === "audio") {
      let resampler = this.resamplers.get(message.rate);
      if (!resampler) {
        resampler = new LinearResampler(message.rate, sampleRate);
        this.resamplers.set(message.rate, resampler);
      }
      const pcm = new Int16Array(message.pcm);
      const floats = new Float32Array(pcm.length);
      for (let i = 0; i < pcm.length; i++) floats[i] = pcm[i] / 0x8000;
      const samples = resampler.process(floats);
      this.queue.push(samples);
      this.queued += samples.length;
      while (this.queued > this.max && this.queue.length > 1) this.dropFirst();
    } else if (message.type === "flush") {
      const flushed = this.queued;
      this.queue = [];
      this.offset = 0;
      this.queued = 0;
      this.playing = false;
      this.port.postMessage({ type: "flushed", ms: (flushed * 1000) / sampleRate });
      this.report();
    }
  }

  dropFirst() {
    this.queued -= this.queue[0].length - this.offset;
    this.queue.shift();
    this.offset = 0;
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    if (!this.playing && this.queued >= this.target) this.playing = true;
    let written = 0;
    while (this.playing && written < out.length && this.queue.length) {
      const head = this.queue[0];
      const n = Math.min(out.length - written, head.length - this.offset);
      out.set(head.subarray(this.offset, this.offset + n), written);
      written += n;
      this.offset += n;
      this.queued -= n;
      if (this.offset === head.length) {
        this.queue.shift();
        this.offset = 0;
      }
    }
    this.played += written;
    if (this.playing && this.queued === 0) this.playing = false; // ran dry: buffer again
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    if (++this.quanta % 16 === 0) this.report();
    return true;
  }

  report() {
    this.port.postMessage({
      type: "stats",
      bufferedMs: (this.queued * 1000) / sampleRate,
      playedMs: (this.played * 1000) / sampleRate,
    });
  }
}

registerProcessor("wavewire-capture", CaptureProcessor);
registerProcessor("wavewire-playback", PlaybackProcessor);
