// Prints what web/protocol.js says about the golden file's cases, for tests/web/test_protocol_golden.py.
import { readFileSync } from "node:fs";

const [protocolPath, goldenPath] = process.argv.slice(2);
const p = await import(protocolPath);
const golden = JSON.parse(readFileSync(goldenPath, "utf8"));

const accepts = (obj) => {
  try {
    p.checkEvent(obj);
    return true;
  } catch (err) {
    if (!(err instanceof p.ProtocolError) || !p.ERROR_CODES.includes(err.code)) throw err;
    return false;
  }
};

console.log(JSON.stringify({
  constants: {
    version: p.PROTOCOL_VERSION, event_types: p.EVENT_TYPES, client_types: p.CLIENT_TYPES, error_codes: p.ERROR_CODES,
    service_stream: p.SERVICE_STREAM, connection_stream: p.CONNECTION_STREAM, max_stream_filter: p.MAX_STREAM_FILTER,
    max_stream_id_chars: p.MAX_STREAM_ID_CHARS, envelope_keys: p.ENVELOPE_KEYS,
  },
  valid: golden.events.valid.map(accepts),
  invalid: golden.events.invalid.map(accepts),
  parsed_text: p.parseEvent(JSON.stringify(golden.events.valid[0])),
  bad_json: (() => { try { p.parseEvent("{nope"); return "accepted"; } catch (e) { return e.code; } })(),
  client_messages: {
    subscribe_some: JSON.parse(p.subscribeMessage(["mic", "ep1"])),
    subscribe_all: JSON.parse(p.subscribeMessage(null)),
    resume_all: JSON.parse(p.resumeMessage(-1)),
    resume_41: JSON.parse(p.resumeMessage(41)),
    ping: JSON.parse(p.pingMessage()),
    name_speaker: JSON.parse(p.nameSpeakerMessage("ep1", "S1", "  Ross ")),
  },
}));
