/* The live stream (§11): one `GET /v1/stream` per page load, shared by every
   page. EventSource cannot send the Bearer header, so the stream is read with
   fetch() and a body reader, and the Server-Sent Events are parsed here.

   Pages subscribe(type, fn) to event types ("session.started", "stats", or
   "*" for all) and get an unsubscribe function back. When the stream cannot
   be opened (the server is busy: 503, or unreachable) or drops, it reconnects
   with a growing delay, and `connected` is false meanwhile: pages then poll
   every 5 s (see fallback()). The top bar shows which: "live" or "polling". */

import * as api from "./api.js";

export const POLL_MS = 5000;
const BACKOFF_MS = [1000, 2000, 4000, 8000, 15000]; // then 15 s each, with ±20% jitter
const STALE_MS = 10_000; // `stats` arrives every second: this much silence means a dead stream
const LABELS = {
  off: ["offline", "Not signed in."],
  connecting: ["connecting", "Opening the live stream…"],
  live: ["live", "Live: pages update as things happen."],
  polling: ["polling", "The live stream is unavailable: pages refresh every 5 seconds."],
};

/** Whether the stream is open now (a `hello` arrived and it has not dropped). */
export let connected = false;
/** "off" (signed out), "connecting" (first attempt), "live" or "polling". */
export let state = "off";
/** Why the stream is not open (the last failure), for the indicator's tooltip. */
export let reason = "";

const handlers = new Map(); // event type → Set of functions
const stateHandlers = new Set();
let running = false;
let controller = null; // the AbortController of the current attempt
let retryTimer = null;
let watchdog = null;
let attempt = 0;
let lastData = 0;

/** Call `fn(data, type)` for each event of `type` ("*": every event); returns the unsubscribe function. */
export function subscribe(type, fn) {
  if (!handlers.has(type)) handlers.set(type, new Set());
  handlers.get(type).add(fn);
  return () => handlers.get(type)?.delete(fn);
}

/** Call `fn({ connected, state, reason }, before)` whenever the state changes; returns the unsubscribe function. */
export function onState(fn) {
  stateHandlers.add(fn);
  return () => stateHandlers.delete(fn);
}

/**
 * The polling fallback of a live view: run `refresh` every `ms` while the
 * stream is not connected, and once each time it connects (events may have
 * been missed meanwhile). Returns the function that stops both.
 */
export function fallback(refresh, ms = POLL_MS) {
  const timer = setInterval(() => {
    if (!connected) refresh();
  }, ms);
  const off = onState((now, before) => {
    if (now.connected && !before.connected) refresh();
  });
  return () => {
    clearInterval(timer);
    off();
  };
}

/** Open the stream (after sign-in); calling it again while running does nothing. */
export function start() {
  if (running) return;
  running = true;
  attempt = 0;
  setState("connecting", false, "");
  connect();
}

/** Close the stream and stop reconnecting (sign-out). */
export function stop() {
  running = false;
  clearTimeout(retryTimer);
  retryTimer = null;
  const current = controller;
  controller = null;
  stopWatchdog();
  if (current) current.abort();
  setState("off", false, "");
}

/** Keep `element` (the top bar's indicator) showing the state. */
export function bindIndicator(element) {
  const show = () => {
    const [label, title] = LABELS[state] || LABELS.off;
    element.dataset.state = state;
    element.title = reason && state === "polling" ? `${title} (${reason})` : title;
    element.querySelector(".live-label").textContent = label;
    element.hidden = state === "off";
  };
  show();
  return onState(show);
}

function setState(next, isConnected, why) {
  const before = { connected, state, reason };
  connected = isConnected;
  state = next;
  reason = why;
  if (before.state === state && before.connected === connected && before.reason === reason) return;
  const now = { connected, state, reason };
  for (const fn of [...stateHandlers]) safely(fn, now, before);
}

function safely(fn, ...args) {
  try {
    fn(...args);
  } catch (error) {
    // A page's handler failing must not end the stream for the others; still report it.
    reportError(error);
  }
}

function dispatch(type, text) {
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    return; // not JSON: not one of ours
  }
  if (type === "hello") {
    attempt = 0;
    setState("live", true, "");
  }
  for (const key of [type, "*"]) {
    for (const fn of [...(handlers.get(key) || [])]) safely(fn, data, type);
  }
}

async function connect() {
  retryTimer = null;
  const bearer = api.token();
  if (!running) return;
  if (!bearer) {
    stop();
    return;
  }
  const mine = new AbortController();
  controller = mine;
  let response;
  try {
    response = await fetch("/v1/stream", {
      headers: { Authorization: `Bearer ${bearer}`, Accept: "text/event-stream" },
      cache: "no-store", signal: mine.signal,
    });
  } catch {
    retry(mine, "cannot reach the server");
    return;
  }
  if (!response.ok) {
    response.body?.cancel().catch(() => {});
    // 401/403: this token may not read the stream; polling is all there is until the next sign-in.
    retry(mine, `the server answered ${response.status}`, response.status === 401 || response.status === 403);
    return;
  }
  lastData = Date.now();
  startWatchdog(mine);
  try {
    await read(response.body.getReader(), mine);
    retry(mine, "the stream ended");
  } catch {
    retry(mine, "the stream broke");
  }
}

/** Read the body as Server-Sent Events until it ends (or this attempt is aborted). */
async function read(reader, mine) {
  const decoder = new TextDecoder();
  let buffer = "";
  let type = "";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done || controller !== mine) return;
    lastData = Date.now();
    buffer += decoder.decode(value, { stream: true });
    // Lines end with CRLF, LF or CR; a CR at the very end may be half of a CRLF.
    let match;
    while ((match = /\r\n|\n|\r(?!$)/.exec(buffer)) !== null) {
      const line = buffer.slice(0, match.index);
      buffer = buffer.slice(match.index + match[0].length);
      if (line === "") {
        if (data.length) dispatch(type || "message", data.join("\n"));
        type = "";
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue; // a comment (keep-alive)
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      let field = colon < 0 ? "" : line.slice(colon + 1);
      if (field.startsWith(" ")) field = field.slice(1);
      if (name === "event") type = field;
      else if (name === "data") data.push(field);
      // "id" and "retry" need nothing here: the reconnect delay is ours, and a new stream starts afresh.
    }
  }
}

function retry(mine, why, giveUp = false) {
  if (controller !== mine) return; // stopped, or a newer attempt took over
  controller = null;
  stopWatchdog();
  mine.abort();
  if (!running) return;
  setState("polling", false, why);
  if (giveUp) return;
  const base = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)];
  attempt += 1;
  retryTimer = setTimeout(connect, Math.round(base * (0.8 + Math.random() * 0.4)));
}

function startWatchdog(mine) {
  stopWatchdog();
  watchdog = setInterval(() => {
    if (Date.now() - lastData > STALE_MS) retry(mine, "the stream went silent");
  }, 2000);
}

function stopWatchdog() {
  clearInterval(watchdog);
  watchdog = null;
}
