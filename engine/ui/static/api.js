// The dashboard's client of the REST API: the token, JSON calls and event streams.

const KEY = "joblog-ui-token";

// The token comes in the URL's fragment (#token=...), printed by `joblog ui`; it is kept in
// this tab's session storage and the fragment is cleared.
export function token() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    sessionStorage.setItem(KEY, decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + "#/jobs");
  }
  return sessionStorage.getItem(KEY) || "";
}

export function setToken(value) {
  sessionStorage.setItem(KEY, value);
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

// One call: JSON in, JSON out; a 4xx/5xx throws ApiError, except the answers of commands
// (200, 201, 202, 409), which all carry the scheduler's decision.
export async function call(method, path, body, { decision = false } = {}) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: text }; }
  if (decision && [200, 201, 202, 409].includes(response.status) && data && "decided" in data) {
    return data;
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path) => call("GET", path);

export function query(params) {
  const out = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === "") continue;
    if (Array.isArray(value)) value.forEach((v) => out.append(key, v));
    else out.append(key, value);
  }
  const text = out.toString();
  return text ? `?${text}` : "";
}

// A server-sent event stream; `handlers` maps event names to functions of the JSON data.
// EventSource cannot send headers, so the token goes as ?access_token=.
export function stream(path, handlers) {
  const sep = path.includes("?") ? "&" : "?";
  const source = new EventSource(`${path}${sep}access_token=${encodeURIComponent(token())}`);
  for (const [name, handler] of Object.entries(handlers)) {
    source.addEventListener(name, (message) => handler(JSON.parse(message.data)));
  }
  return source;
}
