/* The one place that talks to the server: Bearer token from sessionStorage,
   JSON in and out, and the §2 error shape turned into a thrown ApiError. */

const TOKEN_KEY = "meterline.token";

export class ApiError extends Error {
  constructor(status, code, message, details = [], body = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
    this.body = body; // the whole error object, for fields beyond the §2 three (quota_bytes, active, ...)
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
  for (const [name, value] of Object.entries(query || {})) {
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
  const data = decode(text);
  if (!response.ok) throw failure(response.status, response.statusText, data, usesStored ? bearer : null);
  return data;
}

function decode(text) {
  if (!text) return null;
  try {
    return JSON.parse(text, exactNumbers);
  } catch {
    return null;
  }
}

/**
 * The ApiError of a failed response. A 401 signs the dashboard out only when
 * `bearer` (the stored token the request carried) is still the stored one: an
 * answer that arrives after a sign-out, or after signing in again, changes nothing.
 */
function failure(status, statusText, data, bearer) {
  const error = (data && data.error) || {};
  const message = error.message || `The server answered ${[status, statusText].filter(Boolean).join(" ")}.`;
  if (status === 401 && bearer && bearer === token()) {
    clearToken();
    signedOutHandler(message);
  }
  return new ApiError(status, error.code || "http_error", message, error.details || [], error);
}

/** The file name of a Content-Disposition header ("attachment; filename=..."), or `fallback`. */
export function attachmentName(header, fallback) {
  const text = header || "";
  const extended = text.match(/filename\*\s*=\s*UTF-8''([^;]+)/i);
  if (extended) {
    try {
      return decodeURIComponent(extended[1].trim());
    } catch {
      // fall through to the plain parameter
    }
  }
  const plain = text.match(/filename\s*=\s*"([^"]*)"|filename\s*=\s*([^;]+)/i);
  const name = plain ? (plain[1] ?? plain[2]).trim() : "";
  return name || fallback;
}

/**
 * GET a file (PDF, CSV) with the Bearer header; resolves to
 * `{ blob, filename, type }`, throws ApiError like `request`. The token is a
 * header, so downloads cannot be plain links: they go fetch → Blob.
 */
export async function fetchFile(path, query, fallbackName = "download") {
  const bearer = token();
  const headers = { Accept: "*/*" };
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const url = withQuery(path, query);
  let response;
  try {
    response = await fetch(url, { headers });
  } catch (error) {
    throw new ApiError(0, "network_error", `Cannot reach the server (${error.message}).`);
  }
  if (!response.ok) throw failure(response.status, response.statusText, decode(await response.text()), bearer);
  const blob = await response.blob();
  const filename = attachmentName(response.headers.get("Content-Disposition"), fallbackName);
  return { blob, filename, type: blob.type };
}

/**
 * PUT `body` (a File or Blob, sent as it is, not as JSON) to `path` with
 * XMLHttpRequest, whose upload events fetch() does not offer.
 * `onProgress(loaded, total)` follows the bytes sent. Returns
 * `{ done, abort }`: `done` resolves to `{ status, data }` (201 new, 200
 * replaced) and rejects with an ApiError like `request` (code "aborted" when
 * abort() was called, "network_error" when the connection broke).
 */
export function upload(path, body, { contentType, onProgress } = {}) {
  const xhr = new XMLHttpRequest();
  const bearer = token();
  const done = new Promise((resolve, reject) => {
    xhr.open("PUT", path);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("Content-Type", contentType || "application/octet-stream");
    if (bearer) xhr.setRequestHeader("Authorization", `Bearer ${bearer}`);
    // Listeners go on before send(): only then does the browser report upload progress.
    xhr.upload.addEventListener("progress", (event) => {
      if (onProgress) onProgress(event.loaded, event.lengthComputable ? event.total : body.size);
    });
    xhr.addEventListener("load", () => {
      const data = decode(xhr.responseText);
      if (xhr.status >= 200 && xhr.status < 300) resolve({ status: xhr.status, data });
      else reject(failure(xhr.status, xhr.statusText, data, bearer));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "network_error",
      "The connection closed before the server answered (the file may be larger than the server accepts).")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "aborted", "The upload was canceled.")));
    xhr.send(body);
  });
  return { done, abort: () => xhr.abort() };
}

export const get = (path, query, options) => request("GET", withQuery(path, query), undefined, options);
export const post = (path, body = {}, options) => request("POST", path, body, options);
export const del = (path, options) => request("DELETE", path, undefined, options);
