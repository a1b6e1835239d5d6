"""A small Chrome DevTools Protocol client on the standard library.

Starts headless Chromium with a throw-away profile, finds the DevTools port in
the profile's `DevToolsActivePort` file, attaches to the page target over a
minimal RFC 6455 websocket, and offers the few calls the browser tests need.
"""

import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
from urllib.parse import urlsplit

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--disable-extensions", "--hide-scrollbars",
         "--window-size=1280,900", "--remote-debugging-port=0")
START_TIMEOUT = 30


class CDPError(Exception):
    pass


def find_chromium():
    """Path of a Chromium/Chrome binary (env CHROMIUM wins), or None."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit if os.path.exists(explicit) else shutil.which(explicit)
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


# -- websocket (client side of RFC 6455, text frames only) --------------------

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class WebSocket:
    def __init__(self, url, timeout=30):
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
        self.sock.settimeout(None)  # the reader thread blocks until frames or close
        self._send_lock = threading.Lock()
        self._buffer = b""
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        request = (f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        head = self._read_until(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise CDPError(f"websocket handshake failed: {head[:200]!r}")

    def _read_until(self, marker):
        while marker not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("websocket closed during handshake")
            self._buffer += chunk
        head, _, self._buffer = self._buffer.partition(marker)
        return head

    def _read_exactly(self, count):
        while len(self._buffer) < count:
            chunk = self.sock.recv(max(65536, count - len(self._buffer)))
            if not chunk:
                raise ConnectionError("websocket closed")
            self._buffer += chunk
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def _send_frame(self, opcode, payload):
        header = bytes([0x80 | opcode])
        length = len(payload)
        if length < 126:
            header += bytes([0x80 | length])
        elif length < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", length)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", length)
        mask = os.urandom(4)  # clients must mask every frame
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        with self._send_lock:
            self.sock.sendall(header + mask + masked)

    def send_text(self, text):
        self._send_frame(OP_TEXT, text.encode("utf-8"))

    def receive_text(self):
        """The next complete text message; None once the peer closes."""
        message = b""
        while True:
            first, second = self._read_exactly(2)
            final, opcode = first & 0x80, first & 0x0F
            length = second & 0x7F
            if length == 126:
                length = struct.unpack("!H", self._read_exactly(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self._read_exactly(8))[0]
            mask = self._read_exactly(4) if second & 0x80 else None
            payload = self._read_exactly(length)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == OP_PING:
                self._send_frame(OP_PONG, payload)
                continue
            if opcode == OP_CLOSE:
                return None
            if opcode in (OP_TEXT, OP_BINARY, OP_CONTINUATION):
                message += payload
                if final:
                    return message.decode("utf-8")

    def close(self):
        try:
            self._send_frame(OP_CLOSE, struct.pack("!H", 1000))
        except OSError:
            pass
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


# -- the browser --------------------------------------------------------------

class Browser:
    """One headless Chromium with one page; call close() to end it."""

    def __init__(self, binary=None, timeout=START_TIMEOUT):
        self.binary = binary or find_chromium()
        if not self.binary:
            raise CDPError("no Chromium binary found")
        self.profile = tempfile.mkdtemp(prefix="meterline-chromium-")
        self.process = subprocess.Popen(
            [self.binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)  # its own process group: close() ends renderers too
        self.events = []           # every CDP event received, in order
        self._results = {}
        self._next_id = 0
        self._condition = threading.Condition()
        self._closed = False
        try:
            self.port = self._devtools_port(timeout)
            self.ws = WebSocket(self._page_url(timeout))
        except Exception:
            self.close()
            raise
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    def _devtools_port(self, timeout):
        path = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CDPError(f"chromium exited with code {self.process.returncode}")
            try:
                with open(path) as handle:
                    first = handle.readline().strip()
                if first:
                    return int(first)
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.05)
        raise CDPError("chromium did not write DevToolsActivePort in time")

    def _page_url(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json", timeout=5) as reply:
                targets = json.load(reply)
            for target in targets:
                if target.get("type") == "page" and target.get("webSocketDebuggerUrl"):
                    return target["webSocketDebuggerUrl"]
            time.sleep(0.1)
        raise CDPError("no page target appeared")

    def _read_loop(self):
        try:
            while True:
                text = self.ws.receive_text()
                if text is None:
                    break
                message = json.loads(text)
                with self._condition:
                    if "id" in message:
                        self._results[message["id"]] = message
                    else:
                        self.events.append(message)
                    self._condition.notify_all()
        except (OSError, ConnectionError, ValueError):
            pass
        finally:
            with self._condition:
                self._closed = True
                self._condition.notify_all()

    # -- protocol calls --------------------------------------------------------
    def send(self, method, params=None, timeout=30):
        """Call a CDP method and return its result (raises CDPError on error)."""
        with self._condition:
            self._next_id += 1
            message_id = self._next_id
        self.ws.send_text(json.dumps({"id": message_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        with self._condition:
            while message_id not in self._results:
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    raise CDPError(f"{method}: no answer ({'closed' if self._closed else 'timeout'})")
                self._condition.wait(remaining)
            reply = self._results.pop(message_id)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error'].get('message')} {reply['error'].get('data', '')}")
        return reply.get("result", {})

    def evaluate(self, expression, timeout=30):
        """The value of a JavaScript expression (promises are awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True, "userGesture": True}, timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            description = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"JavaScript error: {description}")
        return result.get("result", {}).get("value")

    def navigate(self, url, timeout=30):
        """Go to `url` and wait until the document has loaded."""
        self.send("Page.navigate", {"url": url}, timeout)
        self.wait_for("document.readyState === 'complete'", timeout)

    def wait_for(self, condition, timeout=10, interval=0.1):
        """Poll a JavaScript condition until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        last_error = None
        while True:
            try:
                value = self.evaluate(condition)
                if value:
                    return value
            except CDPError as exc:
                last_error = exc
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out waiting for: {condition}"
                                   + (f" (last error: {last_error})" if last_error else ""))
            time.sleep(interval)

    def screenshot(self, path, full_page=True):
        """A PNG of the whole page (or just the viewport) written to `path`."""
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": full_page})["data"]
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(base64.b64decode(data))
        return path

    def events_named(self, method):
        with self._condition:
            return [event["params"] for event in self.events if event.get("method") == method]

    def _signal_group(self, number):
        try:
            os.killpg(self.process.pid, number)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self):
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait(timeout=10)
        self._signal_group(signal.SIGKILL)  # any helper process left behind
        shutil.rmtree(self.profile, ignore_errors=True)
