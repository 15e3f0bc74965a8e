// The wavewire echo demo: microphone -> WebSocket -> speakers, in the server's wire format.
// No dependencies: the few Pipecat frames.proto messages used are encoded by hand below.
"use strict";

(() => {
  const config = JSON.parse(document.querySelector('meta[name="wavewire-config"]').content);
  const WIRE_RATE = config.sampleRate; // what the server takes and sends (mono PCM16)
  const FRAME_MS = 20; // microphone audio per message
  const PING_MS = 1000; // round-trip probes
  const $ = (id) => document.getElementById(id);

  // Everything the page shows, also read by the end-to-end test.
  const stats = {
    state: "idle",
    format: config.serializer,
    framesSent: 0,
    framesReceived: 0,
    messagesReceived: 0,
    rttMs: null,
    bufferedMs: 0,
    playedMs: 0,
    interruptions: 0,
    flushes: 0,
    flushedMs: 0,
    closeCode: null,
    closeReason: null,
    error: "",
  };
  window.wavewireDemo = { stats, config };

  // --- protobuf: Pipecat's frames.proto, the messages this page needs --------------------
  // Frame { oneof frame { TextFrame text = 1; AudioRawFrame audio = 2; ...; MessageFrame
  // message = 4; InterruptionFrame interruption = 5; } }
  // AudioRawFrame { bytes audio = 3; uint32 sample_rate = 4; uint32 num_channels = 5; }
  // MessageFrame { string data = 1; }  TextFrame { string text = 3; }

  class Writer {
    constructor() {
      this.bytes = [];
    }
    varint(n) {
      while (n > 0x7f) {
        this.bytes.push((n & 0x7f) | 0x80);
        n = Math.floor(n / 128);
      }
      this.bytes.push(n);
      return this;
    }
    tag(field, wireType) {
      return this.varint(field * 8 + wireType);
    }
    uint(field, n) {
      return this.tag(field, 0).varint(n);
    }
    lengthDelimited(field, data) {
      this.tag(field, 2).varint(data.length);
      for (let i = 0; i < data.length; i++) this.bytes.push(data[i]);
      return this;
    }
    finish() {
      return Uint8Array.from(this.bytes);
    }
  }

  function encodeAudio(pcm, sampleRate, numChannels) {
    const audio = new Writer()
      .lengthDelimited(3, pcm)
      .uint(4, sampleRate)
      .uint(5, numChannels)
      .finish();
    return new Writer().lengthDelimited(2, audio).finish();
  }

  function encodeMessage(value) {
    const data = new TextEncoder().encode(JSON.stringify(value));
    const message = new Writer().lengthDelimited(1, data).finish();
    return new Writer().lengthDelimited(4, message).finish();
  }

  // The fields of one message: Map field -> last value (Uint8Array or number).
  function fields(bytes) {
    const found = new Map();
    let pos = 0;
    const varint = () => {
      let value = 0;
      let scale = 1;
      for (;;) {
        if (pos >= bytes.length) throw new Error("truncated varint");
        const b = bytes[pos++];
        value += (b & 0x7f) * scale;
        if (b < 0x80) return value;
        scale *= 128;
      }
    };
    while (pos < bytes.length) {
      const key = varint();
      const field = Math.floor(key / 8);
      const wireType = key & 7;
      if (wireType === 0) found.set(field, varint());
      else if (wireType === 2) {
        const length = varint();
        if (pos + length > bytes.length) throw new Error("truncated field");
        found.set(field, bytes.subarray(pos, pos + length));
        pos += length;
      } else if (wireType === 1) pos += 8;
      else if (wireType === 5) pos += 4;
      else throw new Error(`wire type ${wireType}`);
    }
    return found;
  }

  const utf8 = new TextDecoder();

  function decodeProtobuf(buffer) {
    const frame = fields(new Uint8Array(buffer));
    if (frame.has(2)) {
      const audio = fields(frame.get(2));
      return {
        kind: "audio",
        pcm: audio.get(3) || new Uint8Array(0),
        sampleRate: audio.get(4) || WIRE_RATE,
        numChannels: audio.get(5) || 1,
      };
    }
    if (frame.has(4)) {
      const data = fields(frame.get(4)).get(1);
      return { kind: "message", message: JSON.parse(utf8.decode(data || new Uint8Array(0))) };
    }
    if (frame.has(5)) return { kind: "interruption" };
    if (frame.has(1)) return { kind: "text", text: utf8.decode(fields(frame.get(1)).get(3)) };
    return null;
  }

  // --- the wire format in use: protobuf (Pipecat's) or raw (PCM16 binary, JSON text) ----
  const wire =
    config.serializer === "raw"
      ? {
          audio: (pcm) => pcm,
          message: (value) => JSON.stringify(value),
          decode: (data) =>
            typeof data === "string"
              ? { kind: "message", message: JSON.parse(data) }
              : { kind: "audio", pcm: new Uint8Array(data), sampleRate: WIRE_RATE, numChannels: 1 },
          // The raw format has no interruption message: the page stops its own playback.
          interruptsLocally: true,
        }
      : {
          audio: (pcm) => encodeAudio(pcm, WIRE_RATE, 1),
          message: encodeMessage,
          decode: (data) => (typeof data === "string" ? null : decodeProtobuf(data)),
          interruptsLocally: false,
        };

  // --- the session -----------------------------------------------------------------------
  let socket = null;
  let audio = null; // { context, stream, capture, playback }
  let pinger = null;

  function render() {
    $("state").textContent = stats.state;
    $("format").textContent = `${stats.format}, ${WIRE_RATE} Hz mono`;
    $("frames-sent").textContent = stats.framesSent;
    $("frames-received").textContent = stats.framesReceived;
    $("rtt").textContent = stats.rttMs === null ? "–" : `${stats.rttMs.toFixed(1)} ms`;
    $("buffered").textContent = `${Math.round(stats.bufferedMs)} ms`;
    $("played").textContent = `${Math.round(stats.playedMs)} ms`;
    $("interruptions").textContent = stats.interruptions;
    $("flushed").textContent = `${Math.round(stats.flushedMs)} ms`;
    $("close-code").textContent = stats.closeCode === null ? "–" : stats.closeCode;
    $("close-reason").textContent = stats.closeReason === null ? "–" : stats.closeReason || "(none)";
    $("error").textContent = stats.error;
    const open = stats.state === "open";
    const busy = open || stats.state === "connecting";
    $("connect").disabled = busy;
    $("disconnect").disabled = !busy;
    $("interrupt").disabled = !open;
  }

  function fail(text) {
    stats.error = text;
    render();
  }

  async function startAudio() {
    const context = new AudioContext({ latencyHint: "interactive" });
    await context.audioWorklet.addModule(new URL("worklet.js", document.baseURI));
    const stream = await navigator.mediaDevices.getUserMedia({
      // The browser's echo canceller keeps the played echo out of the microphone.
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false },
    });
    // One (silent) output, connected: a node nothing pulls from is not run by every browser.
    const capture = new AudioWorkletNode(context, "wavewire-capture", {
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { wireRate: WIRE_RATE, frameMs: FRAME_MS },
    });
    const playback = new AudioWorkletNode(context, "wavewire-playback", {
      numberOfInputs: 0,
      outputChannelCount: [1],
      processorOptions: { targetMs: 60, maxMs: 1000 },
    });
    capture.onprocessorerror = () => fail("the capture processor failed");
    playback.onprocessorerror = () => fail("the playback processor failed");
    const source = context.createMediaStreamSource(stream);
    source.connect(capture);
    capture.connect(context.destination);
    playback.connect(context.destination);
    capture.port.onmessage = (event) => send(new Uint8Array(event.data));
    playback.port.onmessage = (event) => {
      const message = event.data;
      if (message.type === "stats") {
        stats.bufferedMs = message.bufferedMs;
        stats.playedMs = message.playedMs;
      } else if (message.type === "flushed") {
        stats.flushes++;
        stats.flushedMs = message.ms;
      }
      render();
    };
    await context.resume();
    return { context, stream, source, capture, playback };
  }

  function stopAudio() {
    if (!audio) return;
    // Stats the worklets posted before the close may still be queued: drop them, or a late
    // one would show audio buffered after the session ended.
    audio.playback.port.onmessage = null;
    audio.capture.port.onmessage = null;
    for (const track of audio.stream.getTracks()) track.stop();
    audio.context.close();
    audio = null;
    stats.bufferedMs = 0;
  }

  function send(pcm) {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(wire.audio(pcm));
    stats.framesSent++;
  }

  function sendMessage(value) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(wire.message(value));
  }

  function interrupted() {
    stats.interruptions++;
    if (audio) audio.playback.port.postMessage({ type: "flush" });
    render();
  }

  function receive(data) {
    let frame;
    try {
      frame = wire.decode(data);
    } catch (error) {
      fail(`undecodable message: ${error.message}`);
      return;
    }
    if (!frame) return;
    if (frame.kind === "audio") {
      stats.framesReceived++;
      if (audio && frame.numChannels === 1) {
        const { buffer, byteOffset, byteLength } = frame.pcm;
        const pcm = buffer.slice(byteOffset, byteOffset + byteLength - (byteLength % 2));
        audio.playback.port.postMessage({ type: "audio", pcm, rate: frame.sampleRate }, [pcm]);
      }
    } else if (frame.kind === "interruption") {
      interrupted();
    } else if (frame.kind === "message") {
      stats.messagesReceived++;
      const message = frame.message;
      if (message && message.type === "ping" && typeof message.t === "number") {
        stats.rttMs = performance.now() - message.t;
      }
    }
    render();
  }

  async function connect(url) {
    stats.state = "connecting";
    stats.error = "";
    stats.closeCode = null;
    stats.closeReason = null;
    render();
    try {
      audio = await startAudio();
    } catch (error) {
      stats.state = "idle";
      fail(`microphone: ${error.message || error}`);
      return;
    }
    try {
      socket = new WebSocket(url);
    } catch (error) {
      stopAudio();
      stats.state = "idle";
      fail(`bad server URL: ${error.message}`);
      return;
    }
    socket.binaryType = "arraybuffer";
    socket.onopen = () => {
      stats.state = "open";
      render();
      pinger = setInterval(() => sendMessage({ type: "ping", t: performance.now() }), PING_MS);
    };
    socket.onmessage = (event) => receive(event.data);
    socket.onerror = () => {
      // The browser gives no detail (a refused handshake, e.g. an origin not allowed, looks
      // like a lost connection): the close event that follows has the code.
      stats.error = "the connection failed (is the server running, and is this page's origin allowed?)";
    };
    socket.onclose = (event) => {
      clearInterval(pinger);
      stats.state = "closed";
      stats.closeCode = event.code;
      stats.closeReason = event.reason;
      if (event.code === 1000 || event.code === 1001) stats.error = "";
      socket = null;
      stopAudio();
      render();
    };
  }

  function defaultServer() {
    const given = new URLSearchParams(location.search).get("server");
    if (given) return given;
    return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`;
  }

  $("server").value = defaultServer();
  $("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    connect($("server").value.trim());
  });
  $("disconnect").addEventListener("click", () => {
    if (socket) socket.close(1000, "disconnected by the user");
  });
  $("interrupt").addEventListener("click", () => {
    sendMessage({ type: "interrupt" });
    if (wire.interruptsLocally) interrupted();
  });
  render();
})();
