// Talking to the server: JSON requests on this origin, with the session cookie (sent by the
// browser, HttpOnly: this code never sees the token) and the CSRF header on every request that
// changes something; Server-Sent Events through EventSource.

let csrf = "";

export function setCsrf(value) {
  csrf = value || "";
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function unauthorized() {
  window.dispatchEvent(new CustomEvent("hodei:unauthorized"));
}

async function errorOf(response) {
  let code = "http_" + response.status;
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error) {
      code = String(body.error.code || code);
      message = String(body.error.message || message);
    } else if (body && body.detail) {
      message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, code, message);
}

/**
 * fetch() on this origin. `options.json` is sent as a JSON body; POST, PUT and DELETE carry
 * X-Hodei-CSRF. A 401 tells the page to show the sign-in screen (unless options.quiet401).
 */
export async function request(method, path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  const init = { method, headers, credentials: "same-origin", signal: options.signal, cache: "no-store" };
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.json);
  }
  if (method !== "GET" && method !== "HEAD" && csrf) headers["X-Hodei-CSRF"] = csrf;
  const response = await fetch(path, init);
  if (response.status === 401 && !options.quiet401) unauthorized();
  return response;
}

export async function json(method, path, options = {}) {
  const response = await request(method, path, options);
  if (!response.ok) throw await errorOf(response);
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path, options) => json("GET", path, options);
export const post = (path, body, options = {}) => json("POST", path, { ...options, json: body ?? {} });
export const del = (path, options) => json("DELETE", path, options);

/** A query string from an object (empty values left out; arrays repeat the key). */
export function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === "") continue;
    if (Array.isArray(value)) value.forEach((v) => v !== "" && q.append(key, v));
    else q.append(key, String(value));
  }
  const text = q.toString();
  return text ? "?" + text : "";
}

export function jobPath(id) {
  return `/api/v1/jobs/${encodeURIComponent(id)}`;
}

export function runPath(id) {
  return `/api/v1/pipelines/${encodeURIComponent(id)}`;
}

/**
 * Follow a Server-Sent Events stream. `handlers` maps event names to functions of the parsed
 * data (JSON when it parses, else the raw text) and the MessageEvent; `onstate` hears
 * "open", "retrying" and "closed". Returns a function that closes the stream.
 * EventSource reconnects by itself after a dropped connection (sending Last-Event-ID); when the
 * server refuses the stream (an HTTP error), it stops and the session is checked again.
 */
export function events(path, handlers, onstate = () => {}) {
  const source = new EventSource(path, { withCredentials: true });
  let closed = false;
  for (const [name, fn] of Object.entries(handlers)) {
    source.addEventListener(name, (event) => {
      if (closed) return;
      let data = event.data;
      try {
        data = JSON.parse(event.data);
      } catch {
        // a text event
      }
      fn(data, event);
    });
  }
  source.onopen = () => !closed && onstate("open");
  source.onerror = () => {
    if (closed) return;
    if (source.readyState === EventSource.CLOSED) {
      onstate("closed");
      // Refused (not a dropped connection): perhaps the session ended.
      request("GET", "/api/v1/session", { quiet401: true })
        .then((r) => r.status === 401 && unauthorized())
        .catch(() => {});
    } else {
      onstate("retrying");
    }
  };
  return () => {
    closed = true;
    source.close();
  };
}
