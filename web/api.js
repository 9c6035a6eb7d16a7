// Talking to the server beyond the event stream: the access token, URLs, and the HTTP API.
//
// A server bound to a network address needs its token on every request. The page is opened once as
// `/?token=…`: the token is kept in sessionStorage (this tab only), removed from the address bar, and
// sent with every websocket (query) and API call (Authorization header). The server also leaves an
// HttpOnly cookie so that the page's own scripts load.

const TOKEN_KEY = "emostream.token";

export function accessToken() {
  const params = new URLSearchParams(location.search);
  const fromUrl = params.get("token");
  if (fromUrl) {
    try {
      sessionStorage.setItem(TOKEN_KEY, fromUrl);
    } catch {
      // storage disabled: the cookie still carries it
    }
    params.delete("token");
    const query = params.toString();
    history.replaceState(null, "", `${location.pathname}${query ? `?${query}` : ""}${location.hash}`);
    return fromUrl;
  }
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

const token = accessToken();

/** ws:// (or wss://) URL of a websocket path on this server, with the token when there is one. */
export function wsUrl(path) {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  return `${proto}//${location.host}${path}${query}`;
}

/** An API error with the server's message (`{"error": {"code", "message"}}`) or the HTTP status. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

async function call(path, { method = "POST", body, type, signal } = {}) {
  const headers = {};
  if (type) headers["Content-Type"] = type;
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(path, { method, body, headers, signal, cache: "no-store" });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network", `cannot reach the server: ${err.message}`);
  }
  const text = await res.text();
  let obj = null;
  try {
    obj = text ? JSON.parse(text) : null;
  } catch {
    obj = null;
  }
  if (!res.ok) {
    const err = obj && obj.error;
    throw new ApiError(res.status, err?.code || `http_${res.status}`, err?.message || text.trim() || res.statusText);
  }
  return obj;
}

/** POST /api/classify: `{label, scores, modalities}` for a sentence (the text branch). */
export function classifyText(text, signal) {
  return call("/api/classify", { body: JSON.stringify({ text }), type: "application/json", signal });
}

/**
 * POST /api/streams?name=NAME with a file's bytes: `{stream, name, kind, bytes}` of the new stream.
 * XMLHttpRequest rather than fetch: it reports upload progress (`onProgress(fraction)`).
 */
export function uploadFile(file, name, { onProgress, signal } = {}) {
  const query = new URLSearchParams({ name });
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/api/streams?${query}`);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.responseType = "text";
    if (onProgress) xhr.upload.onprogress = (ev) => ev.lengthComputable && onProgress(ev.loaded / ev.total);
    xhr.onerror = () => reject(new ApiError(0, "network", "the upload failed: the server closed the connection"));
    xhr.onabort = () => reject(new DOMException("aborted", "AbortError"));
    xhr.onload = () => {
      let obj = null;
      try {
        obj = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        obj = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(obj);
      else {
        const err = obj && obj.error;
        reject(new ApiError(xhr.status, err?.code || `http_${xhr.status}`, err?.message || xhr.statusText));
      }
    };
    if (signal) signal.addEventListener("abort", () => xhr.abort());
    xhr.send(file);
  });
}
