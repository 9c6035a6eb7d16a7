// The websocket connection: connect, resume from the last seq held, reconnect with backoff.

import { parseEvent, pingMessage, resumeMessage } from "./protocol.js";

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10000;
const PING_EVERY_MS = 15000;
const SILENCE_LIMIT_MS = 45000; // nothing at all for this long (not even a pong): reconnect

export class Connection {
  /**
   * @param {string} url  ws:// URL of /ws
   * @param {object} hooks
   *   onHello(data) -> number   the seq to resume after (-1: the whole run)
   *   onEvent(event)            every event after hello
   *   onState({state, detail, retryAt})  "connecting" | "live" | "reconnecting"
   */
  constructor(url, hooks) {
    this.url = url;
    this.hooks = hooks;
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.pinger = null;
    this.lastHeard = 0;
    this.stopped = false;
    this.received = 0;
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.pinger);
    if (this.ws) this.ws.close(1000, "page closed");
  }

  send(text) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(text);
  }

  open() {
    this.hooks.onState({ state: "connecting", detail: this.url });
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this.retry(`cannot connect: ${err.message}`);
      return;
    }
    this.ws = ws;
    let helloSeen = false;
    ws.onmessage = (msg) => {
      this.lastHeard = Date.now();
      let event;
      try {
        event = parseEvent(msg.data);
      } catch (err) {
        console.warn("emostream: ignoring a bad event:", err.message);
        return;
      }
      this.received += 1;
      if (!helloSeen && event.type === "hello") {
        helloSeen = true;
        this.attempt = 0;
        const after = this.hooks.onHello(event.data, event);
        // Ask for everything after what we hold: the server replays its log, then goes live,
        // each event once.
        this.send(resumeMessage(after));
        this.hooks.onState({ state: "live", detail: `run ${event.data.run_id ?? "?"}` });
        return;
      }
      if (event.type === "lagged") {
        // We read too slowly and lost events: fetch them again from the server's log.
        this.send(resumeMessage(this.hooks.resumeSeq()));
      }
      this.hooks.onEvent(event);
    };
    ws.onopen = () => {
      this.lastHeard = Date.now();
      clearInterval(this.pinger);
      this.pinger = setInterval(() => this.heartbeat(), PING_EVERY_MS);
    };
    ws.onclose = (ev) => {
      clearInterval(this.pinger);
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      const why = ev.reason ? `${ev.reason} (${ev.code})` : `connection closed (${ev.code})`;
      this.retry(why);
    };
    ws.onerror = () => {
      // onclose follows with the details
    };
  }

  heartbeat() {
    if (!this.ws) return;
    if (Date.now() - this.lastHeard > SILENCE_LIMIT_MS) {
      this.ws.close(4000, "no reply from the server");
      return;
    }
    this.send(pingMessage());
  }

  retry(detail) {
    this.attempt += 1;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (this.attempt - 1));
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    this.hooks.onState({ state: "reconnecting", detail, retryAt: Date.now() + delay });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), delay);
  }
}
