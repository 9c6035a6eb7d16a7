// The "Try it" card: type a sentence (POST /api/classify), speak (ws /ingest), analyse a file (POST /api/streams).

import { ApiError, classifyText, uploadFile } from "./api.js";
import { MicStream } from "./mic.js";

const $ = (id) => document.getElementById(id);

function setStatus(el, text, kind = "") {
  el.textContent = text;
  if (kind) el.dataset.kind = kind;
  else delete el.dataset.kind;
}

function describe(err) {
  if (err instanceof ApiError) return err.message;
  return err && err.message ? err.message : String(err);
}

/**
 * ctx: { store, chip(label) -> element, select(streamId), limits() -> hello's limits }
 */
export function setupTryIt(ctx) {
  setupType(ctx);
  setupMic(ctx);
  setupUpload(ctx);
}

function setupType(ctx) {
  const form = $("type-form");
  const input = $("type-text");
  const go = $("type-go");
  const out = $("type-result");
  let pending = null;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    if (pending) pending.abort();
    const ctl = new AbortController();
    pending = ctl;
    go.disabled = true;
    out.dataset.state = "busy";
    out.replaceChildren(document.createTextNode("classifying…"));
    try {
      const res = await classifyText(text, ctl.signal);
      if (pending !== ctl) return;
      out.dataset.state = "done";
      out.dataset.label = res.label;
      const conf = document.createElement("span");
      conf.className = "conf";
      conf.textContent = `${Math.round((res.scores[res.label] || 0) * 100)}%`;
      const mini = document.createElement("span");
      mini.className = "mini";
      mini.title = ctx.store.labels.map((l) => `${l} ${Math.round((res.scores[l] || 0) * 100)}%`).join(" · ");
      for (const l of ctx.store.labels.length ? ctx.store.labels : Object.keys(res.scores)) {
        const bar = document.createElement("span");
        bar.style.height = `${Math.max(2, (res.scores[l] || 0) * 22)}px`;
        bar.style.background = ctx.store.color(l);
        bar.dataset.label = l;
        mini.append(bar);
      }
      const said = document.createElement("span");
      said.className = "said";
      said.textContent = `“${res.text ?? text}” · ${(res.modalities || []).join(" + ")}`;
      out.replaceChildren(ctx.chip(res.label), conf, mini, said);
    } catch (err) {
      if (err.name === "AbortError") return;
      out.dataset.state = "error";
      delete out.dataset.label;
      out.replaceChildren(document.createTextNode(describe(err)));
    } finally {
      if (pending === ctl) {
        pending = null;
        go.disabled = false;
      }
    }
  });
}

function setupMic(ctx) {
  const btn = $("mic-btn");
  const level = $("mic-level");
  const status = $("mic-status");
  const mic = new MicStream({
    onLevel(peak) {
      level.style.width = `${Math.round(Math.min(1, peak) * 100)}%`;
      // Audio the page could not send in time (the server pushed back): say so rather than hide it.
      if (mic.dropped >= 0.1 && mic.streamId) {
        setStatus(status, `live as stream ${mic.streamId} · ${mic.dropped.toFixed(1)} s dropped (the server is behind)`);
      }
    },
    onState({ state, message, stream }) {
      btn.dataset.state = state;
      const on = state === "live" || state === "starting";
      btn.setAttribute("aria-pressed", String(on));
      btn.textContent = on ? "Stop" : "Speak";
      setStatus(status, message || "", state === "error" ? "error" : "");
      if (state === "live" && stream) ctx.select(stream);
    },
  });
  btn.addEventListener("click", () => {
    if (mic.active) mic.stop();
    else mic.start("browser-mic");
  });
  // Closing the tab closes the socket; the server ends the stream cleanly. Say so explicitly when we can.
  window.addEventListener("pagehide", () => {
    if (mic.active) mic.stop();
  });
  ctx.mic = mic;
}

function setupUpload(ctx) {
  const drop = $("drop");
  const pick = $("file-pick");
  const status = $("upload-status");
  let busy = false;

  async function send(file) {
    if (!file) return;
    if (busy) {
      setStatus(status, "an upload is in progress; wait for it to finish", "error");
      return;
    }
    const limit = ctx.limits().max_upload_bytes;
    if (limit && file.size > limit) {
      setStatus(status, `${file.name} is ${(file.size / 1048576).toFixed(1)} MB; this server takes at most ${(limit / 1048576).toFixed(0)} MB (server.max_upload_mb)`, "error");
      return;
    }
    if (file.size === 0) {
      setStatus(status, `${file.name} is empty`, "error");
      return;
    }
    busy = true;
    drop.setAttribute("aria-busy", "true");
    setStatus(status, `uploading ${file.name} (${(file.size / 1048576).toFixed(1)} MB)…`);
    const name = file.name.replace(/\.[^.]+$/, "") || "upload";
    try {
      const mb = (file.size / 1048576).toFixed(1);
      const res = await uploadFile(file, name, {
        onProgress: (f) => setStatus(status, f < 1 ? `uploading ${file.name}: ${Math.round(f * 100)}% of ${mb} MB…` : `checking ${file.name}…`),
      });
      setStatus(status, `${file.name} is playing as stream ${res.stream}`);
      ctx.select(res.stream);
    } catch (err) {
      setStatus(status, describe(err), "error");
    } finally {
      busy = false;
      drop.removeAttribute("aria-busy");
      pick.value = "";
    }
  }

  pick.addEventListener("change", () => send(pick.files[0]));
  drop.addEventListener("click", (ev) => {
    if (ev.target === drop) pick.click();
  });
  drop.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" || ev.key === " ") {
      ev.preventDefault();
      pick.click();
    }
  });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (ev) => {
      ev.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    send(ev.dataTransfer.files[0]);
  });
  // Dropping a file elsewhere on the page must not navigate away from the dashboard.
  window.addEventListener("dragover", (ev) => ev.preventDefault());
  window.addEventListener("drop", (ev) => ev.preventDefault());
}
