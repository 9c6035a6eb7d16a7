// The event protocol, mirrored from stream/protocol.py (the one source of truth).
// tests/web/protocol_golden.json pins both sides: change the three together.
//
// Labels and colours are deliberately NOT listed here: the page takes them from the `hello` event,
// so a checkpoint trained on other labels needs no change to the dashboard.

export const PROTOCOL_VERSION = 2;

// Events about the whole service rather than one source use this stream id.
export const SERVICE_STREAM = "_service";

// Events only this connection sees (hello, lagged, pong, error replies). Never logged or replayed;
// their seq is a watermark (the last seq assigned when they were made), not an id: do not use it
// for resume or de-duplication.
export const CONNECTION_STREAM = "_connection";

export const EVENT_TYPES = Object.freeze([
  "hello", "speech", "transcript", "emotion", "stats", "error", "end", "lagged", "pong", "speaker",
]);

export const CLIENT_TYPES = Object.freeze(["subscribe", "resume", "ping", "name_speaker"]);

export const MAX_SPEAKER_NAME_CHARS = 64;

export const ERROR_CODES = Object.freeze([
  "bad_message", "bad_request", "resume_unavailable", "source_failed", "device_lost", "stage_failed", "internal",
]);

export const MAX_STREAM_FILTER = 256;
export const MAX_STREAM_ID_CHARS = 128;

export const ENVELOPE_KEYS = Object.freeze(["v", "type", "seq", "stream", "ts", "data"]);

export class ProtocolError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "ProtocolError";
    this.code = code;
  }
}

/** Parse one websocket text frame into an event; throws ProtocolError when it is not one. */
export function parseEvent(text) {
  let obj;
  try {
    obj = JSON.parse(text);
  } catch (err) {
    throw new ProtocolError("bad_message", `event is not valid JSON: ${err.message}`);
  }
  return checkEvent(obj);
}

/** Check an already-decoded event object (same rules as stream.protocol.Event.from_dict). */
export function checkEvent(obj) {
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
    throw new ProtocolError("bad_message", "event must be a JSON object");
  }
  if (obj.v !== PROTOCOL_VERSION) {
    throw new ProtocolError("bad_message", `unsupported protocol version ${JSON.stringify(obj.v)}`);
  }
  for (const key of ENVELOPE_KEYS) {
    if (!(key in obj)) throw new ProtocolError("bad_message", `event lacks '${key}'`);
  }
  if (!Number.isInteger(obj.seq) || obj.seq < 0) {
    throw new ProtocolError("bad_message", `seq must be a non-negative integer, got ${JSON.stringify(obj.seq)}`);
  }
  if (typeof obj.type !== "string" || typeof obj.stream !== "string"
      || obj.data === null || typeof obj.data !== "object" || Array.isArray(obj.data)) {
    throw new ProtocolError("bad_message", "type and stream must be strings and data an object");
  }
  if (typeof obj.ts !== "number" || !Number.isFinite(obj.ts)) {
    throw new ProtocolError("bad_message", `ts must be a finite number, got ${JSON.stringify(obj.ts)}`);
  }
  return { type: obj.type, seq: obj.seq, stream: obj.stream, ts: obj.ts, data: obj.data };
}

/** True for events of this connection only (never logged; their seq is not an event id). */
export function isConnectionEvent(event) {
  return event.stream === CONNECTION_STREAM;
}

/** `{"type": "subscribe", "streams": [...]}`; null = every stream. */
export function subscribeMessage(streams) {
  return JSON.stringify({ type: "subscribe", streams: streams === null ? null : [...streams] });
}

/** `{"type": "resume", "after_seq": N}`: every logged event after N, then live, each once. */
export function resumeMessage(afterSeq) {
  if (!Number.isInteger(afterSeq) || afterSeq < -1) throw new RangeError(`after_seq must be an integer >= -1`);
  return JSON.stringify({ type: "resume", after_seq: afterSeq });
}

/** `{"type": "ping"}`: answered by a `pong` after every earlier message has been handled. */
export function pingMessage() {
  return JSON.stringify({ type: "ping" });
}

/** `{"type": "name_speaker", ...}`: call a stream's speaker label (S1, ...) by a name, for every client. */
export function nameSpeakerMessage(stream, speaker, name) {
  const clean = String(name).split(/\s+/).filter(Boolean).join(" ");
  if (!/^S[1-9][0-9]{0,3}$/.test(speaker)) throw new RangeError(`speaker must be a label like S1`);
  if (!clean || clean.length > MAX_SPEAKER_NAME_CHARS) {
    throw new RangeError(`name must have 1-${MAX_SPEAKER_NAME_CHARS} visible characters`);
  }
  return JSON.stringify({ type: "name_speaker", stream, speaker, name: clean });
}
