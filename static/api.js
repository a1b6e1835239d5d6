/* The one place that talks to the server: Bearer token from sessionStorage,
   JSON in and out, and the §2 error shape turned into a thrown ApiError. */

const TOKEN_KEY = "meterline.token";

export class ApiError extends Error {
  constructor(status, code, message, details = []) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

let signedOutHandler = () => {};

/** Called with the server's message when the stored token stops working (401). */
export function onSignedOut(handler) {
  signedOutHandler = handler;
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** `path` with the non-empty entries of `query` as a query string. */
export function withQuery(path, query = {}) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== null && value !== undefined && value !== "") params.set(name, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

// Quantities are JSON numbers written from exact decimals; a number that a
// double cannot hold exactly is kept as its source text so it displays as sent.
function exactNumbers(key, value, context) {
  if (typeof value === "number" && context && typeof context.source === "string"
      && String(value) !== context.source) {
    return context.source;
  }
  return value;
}

/**
 * Send a request; resolves to the decoded JSON body, throws ApiError.
 * `options.token` uses that token instead of the stored one (and a 401 then
 * does not sign the dashboard out).
 */
export async function request(method, path, body, options = {}) {
  const usesStored = options.token === undefined;
  const bearer = usesStored ? token() : options.token;
  const headers = { Accept: "application/json" };
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, "network_error", `Cannot reach the server (${error.message}).`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text, exactNumbers);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    const message = error.message || `The server answered ${response.status} ${response.statusText}.`;
    if (response.status === 401 && usesStored && bearer) {
      clearToken();
      signedOutHandler(message);
    }
    throw new ApiError(response.status, error.code || "http_error", message, error.details || []);
  }
  return data;
}

export const get = (path, query, options) => request("GET", withQuery(path, query), undefined, options);
export const post = (path, body = {}, options) => request("POST", path, body, options);
