// The browser's microphone as a new stream: getUserMedia (raw signal) -> AudioWorklet -> ws /ingest.
//
// Protocol (docs/protocol.md, "Browser ingest"): a first text frame
// {"type": "start", "stream": NAME, "sample_rate_hz": R}, the server's {"type": "started", "stream": ID},
// then binary frames of little-endian int16 mono PCM at R Hz; {"type": "stop"} (or closing) ends it.
// Back-pressure: while the socket has more than MAX_BUFFERED_S of audio unsent, new blocks are dropped
// here (counted) rather than queued without bound.

import { wsUrl } from "./api.js";

const MAX_BUFFERED_S = 2.0;

export class MicStream {
  /** hooks: onLevel(peak 0..1), onState({state, message, stream}), "idle"|"starting"|"live"|"error" */
  constructor(hooks) {
    this.hooks = hooks;
    this.ctx = null;
    this.media = null;
    this.node = null;
    this.ws = null;
    this.streamId = null;
    this.dropped = 0;
    this.sent = 0;
    this.stopping = false;
  }

  get active() {
    return this.ctx !== null;
  }

  async start(name) {
    if (this.active) return;
    this.stopping = false;
    this.dropped = 0;
    this.sent = 0;
    this.hooks.onState({ state: "starting", message: "asking for the microphone…" });
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      this.fail("this browser offers no microphone here: open the page on http://localhost or https");
      return;
    }
    try {
      // The raw signal: Chromium's gain control would lift quiet speech to full scale and reshape the
      // loudness contour the audio branch reads.
      this.media = await navigator.mediaDevices.getUserMedia({
        audio: { autoGainControl: false, noiseSuppression: false, echoCancellation: false, channelCount: 1 },
        video: false,
      });
    } catch (err) {
      this.fail(micError(err));
      return;
    }
    try {
      this.ctx = new AudioContext();
      await this.ctx.audioWorklet.addModule("mic-worklet.js");
      const source = this.ctx.createMediaStreamSource(this.media);
      this.node = new AudioWorkletNode(this.ctx, "ingest-capture", { numberOfInputs: 1, numberOfOutputs: 0, channelCount: 1, channelCountMode: "explicit" });
      source.connect(this.node);
      await this.ctx.resume();
    } catch (err) {
      this.fail(`cannot capture audio: ${err.message || err}`);
      return;
    }
    const rate = this.ctx.sampleRate;
    const track = this.media.getAudioTracks()[0];
    if (track) track.addEventListener("ended", () => this.fail("the microphone was disconnected"));
    this.ws = new WebSocket(wsUrl("/ingest"));
    this.ws.binaryType = "arraybuffer";
    const ws = this.ws;
    ws.onopen = () => ws.send(JSON.stringify({ type: "start", stream: name, sample_rate_hz: rate }));
    ws.onmessage = (msg) => {
      if (typeof msg.data !== "string") return;
      let reply;
      try {
        reply = JSON.parse(msg.data);
      } catch {
        return;
      }
      if (reply.type === "started") {
        this.streamId = reply.stream;
        this.hooks.onState({ state: "live", stream: reply.stream, message: `live as stream ${reply.stream} (${Math.round(rate / 100) / 10} kHz)` });
      } else if (reply.type === "error") {
        this.fail(reply.message || reply.code || "the server refused the stream");
      }
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopping) return;
      this.fail(ev.reason ? `the server ended the stream: ${ev.reason}` : `connection closed (${ev.code})`);
    };
    const maxBuffered = MAX_BUFFERED_S * rate * 2;
    this.node.port.onmessage = ({ data }) => {
      this.hooks.onLevel(data.peak);
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN || this.streamId === null) return;
      if (this.ws.bufferedAmount > maxBuffered) {
        this.dropped += data.pcm.byteLength / 2 / rate;
        return;
      }
      this.ws.send(data.pcm);
      this.sent += data.pcm.byteLength / 2 / rate;
    };
  }

  /** Stop capturing; the server flushes the last utterance and ends the stream (`end`). */
  stop() {
    this.stopping = true;
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ type: "stop" }));
      ws.close(1000, "stopped");
    } else if (ws) {
      ws.close();
    }
    this.release();
    this.hooks.onLevel(0);
    this.hooks.onState({ state: "idle", stream: this.streamId, message: this.streamId ? `stream ${this.streamId} ended` : "" });
    this.streamId = null;
  }

  release() {
    if (this.node) this.node.port.onmessage = null;
    if (this.media) for (const t of this.media.getTracks()) t.stop();
    if (this.ctx) this.ctx.close().catch(() => {});
    this.node = null;
    this.media = null;
    this.ctx = null;
  }

  fail(message) {
    this.stopping = true;
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, "page error");
    this.release();
    this.hooks.onLevel(0);
    this.hooks.onState({ state: "error", message });
    this.streamId = null;
  }
}

function micError(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "microphone permission denied: allow it for this page (the icon in the address bar), then try again";
    case "NotFoundError":
    case "OverconstrainedError":
      return "no microphone found: connect one, then try again";
    case "NotReadableError":
    case "AbortError":
      return "the microphone is busy or failed (another application may hold it)";
    default:
      return `cannot open the microphone: ${err && err.message ? err.message : err}`;
  }
}
