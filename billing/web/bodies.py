"""Request bodies: how much may be read, reading it, and what it may cost.

A body is read only after the route is matched and the caller authenticated
(web.http): without valid credentials at most UNAUTHENTICATED_BODY bytes,
with them MAX_BODY_BYTES. Reading and decoding are paid for from two budgets
per server, so many large bodies at once wait their turn instead of growing
the process: the raw bytes held (`raw`) and the estimated cost of decoded JSON
(`decoded`). A JSON body with more values than any real request needs is
refused before it is decoded.
"""

import threading
import time

from .. import errors
from ..errors import ApiError

MAX_BODY_BYTES = 10 * 1024 * 1024
UNAUTHENTICATED_BODY = 64 * 1024  # the most a request without valid credentials may send (also what is drained)
# The largest real body is an event batch: 10,000 events with about 20 properties each count ~550,000
# (commas, colons and opening brackets, each at most one decoded value).
MAX_JSON_VALUES = 600_000
VALUE_COST = 128  # bytes a decoded value may take at most (a Decimal in a list: 112; see tests/test_memory_bounds.py)
RAW_BUDGET = 48 * 1024 * 1024        # body bytes held by all requests at once
DECODED_BUDGET = 160 * 1024 * 1024   # estimated bytes of decoded JSON held by all requests at once
BUDGET_WAIT = 30                      # seconds a request waits for its share before a 503
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")


class Budget:
    """Bytes that requests take before they hold them and give back when they end."""

    def __init__(self, total, what):
        self.total = total
        self.what = what
        self.free = total
        self._cond = threading.Condition(threading.Lock())
        self._waiting = 0  # takers waiting for others to give back

    def take(self, amount, wait=BUDGET_WAIT):
        """Reserve `amount` (at most the whole budget); waits for others to give
        back, then 503 after `wait` seconds."""
        amount = min(amount, self.total)
        with self._cond:
            if self.free < amount:
                self._wait_for(amount, time.monotonic() + wait)
            self.free -= amount
        return amount

    def _wait_for(self, amount, deadline):
        self._waiting += 1
        try:
            while self.free < amount:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise errors.ServiceUnavailable(f"The server is busy with other large {self.what}; try again.",
                                                    headers={"Retry-After": "1"})
                self._cond.wait(left)
        finally:
            self._waiting -= 1

    def give(self, amount):
        with self._cond:
            self.free += amount
            if self._waiting:  # notify_all costs a walk through Python code: only when someone waits
                self._cond.notify_all()


class Held:
    """What one request holds of the budgets, given back together at its end."""

    __slots__ = ("_items",)

    def __init__(self):
        self._items = []

    def take(self, budget, amount):
        self._items.append((budget, budget.take(amount)))

    def release(self):
        items, self._items = self._items, []
        for budget, amount in items:
            budget.give(amount)


def json_values(body):
    """An upper bound on the values `body` decodes to, counted at C speed:
    every value but the first follows a comma or colon or opens a container."""
    return body.count(b",") + body.count(b":") + body.count(b"[") + body.count(b"{") + 1


def charge_json(body, held, budget):
    """The size rules of a JSON body, wherever it is decoded: 413 past
    MAX_JSON_VALUES, and what its decoding holds paid for from `budget`."""
    values = json_values(body)
    if values > MAX_JSON_VALUES:
        raise errors.PayloadTooLarge(f"The body holds more than {MAX_JSON_VALUES} JSON values; "
                                     "send smaller batches.")
    if budget is not None:
        held.take(budget, values * VALUE_COST + 2 * len(body))  # the values, the text, its strings


class BodyError(ApiError):
    status = 400
    code = "bad_request"


class BodyStream:
    """The raw body of an upload, read as it arrives: `Content-Length` bytes or
    `Transfer-Encoding: chunked`. `Expect: 100-continue` is answered only when
    the handler starts reading, so a refused upload is answered before its
    body is sent."""

    def __init__(self, handler, length, chunked, expect_continue):
        self._handler = handler
        self._rfile = handler.rfile
        self.length = length              # None when chunked
        self._remaining = length or 0
        self._chunked = chunked
        self._chunk_left = 0
        self._in_chunk = False
        self.done = not chunked and not length
        self._continue_pending = expect_continue and not self.done
        self.received = 0

    def _broken(self, message):
        self._handler.close_connection = True
        self.done = True
        raise BodyError(message)

    def read(self, n):
        """Up to `n` bytes of the body; b"" at its end."""
        if self.done:
            return b""
        if self._continue_pending:
            self._continue_pending = False
            self._handler.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            data = self._read_chunked(n) if self._chunked else self._read_plain(n)
        except (OSError, ValueError):
            self._broken("The upload was cut off.")
        self.received += len(data)
        return data

    def _read_plain(self, n):
        data = self._rfile.read(min(n, self._remaining))
        if not data:
            self._broken("The body ended before Content-Length bytes.")
        self._remaining -= len(data)
        if self._remaining == 0:
            self.done = True
        return data

    def _read_chunked(self, n):
        rfile = self._rfile
        if self._chunk_left == 0:
            if self._in_chunk and rfile.read(2) != b"\r\n":
                self._broken("Malformed chunked body: a chunk must end with CRLF.")
            self._in_chunk = False
            line = rfile.readline(1026)
            size_text = line.split(b";", 1)[0].strip()
            if not line.endswith(b"\n") or not size_text or len(size_text) > 16 or \
                    any(c not in b"0123456789abcdefABCDEF" for c in size_text):
                self._broken("Malformed chunked body: bad chunk size line.")
            size = int(size_text, 16)
            if size == 0:
                for _ in range(64):  # trailer fields, then the empty line
                    trailer = rfile.readline(8194)
                    if trailer in (b"\r\n", b"\n"):
                        self.done = True
                        return b""
                    if not trailer.endswith(b"\n"):
                        break
                self._broken("Malformed chunked body: bad trailer.")
            self._chunk_left = size
            self._in_chunk = True
        data = rfile.read(min(n, self._chunk_left))
        if not data:
            self._broken("The chunked body ended early.")
        self._chunk_left -= len(data)
        return data

    def can_drain(self, limit):
        """Whether what is left can be read and dropped so the connection is
        reusable: not when the client still waits for 100 Continue (it will
        not send the body), nor when more than `limit` bytes are announced."""
        if self.done:
            return True
        if self._continue_pending:
            return False
        if self._chunked:
            return self.received < limit
        return self._remaining <= limit

    def drain(self, limit):
        """Read and drop the rest (at most `limit` bytes); False when it could not."""
        try:
            while not self.done:
                if self.received > limit or not self.read(64 * 1024):
                    break
        except ApiError:
            return False
        return self.done


def announced(headers):
    """Whether the request says a body follows."""
    return headers.get("Transfer-Encoding") is not None or headers.get("Content-Length") not in (None, "", "0")


def _framing(handler):
    """400 for Content-Length or Transfer-Encoding given twice."""
    if handler.headers.duplicated & {"content-length", "transfer-encoding"}:
        handler.close_connection = True
        raise errors.BadRequest("Content-Length or Transfer-Encoding is given more than once.")


def _length(handler, raw_length):
    if not raw_length.isdigit() or not raw_length.isascii():
        handler.close_connection = True
        raise errors.BadRequest("Content-Length must be a non-negative integer.")
    return int(raw_length)


def body_length(handler):
    """The length of a JSON request's body, from its headers alone (nothing is
    read): 400 when repeated or malformed, 411 when transfer-encoded."""
    headers = handler.headers
    _framing(handler)
    if headers.get("Transfer-Encoding") is not None:
        handler.close_connection = True
        raise errors.LengthRequired("Chunked (or any transfer-encoded) bodies are not accepted; "
                                    "send Content-Length.")
    raw_length = headers.get("Content-Length")
    return 0 if raw_length is None or raw_length == "" else _length(handler, raw_length)


def read_body(handler, length, limit, held, budget):
    """The whole body of a JSON request: 413 over `limit` before a byte is
    read, then the bytes paid for from `budget` and read, then 415 unless it is
    JSON."""
    headers = handler.headers
    if length > limit:
        handler.close_connection = True  # the body stays unread
        if limit < MAX_BODY_BYTES:
            raise errors.PayloadTooLarge(f"Without valid credentials the body may be at most {limit} bytes.")
        raise errors.PayloadTooLarge(f"The body exceeds the {limit} byte limit.")
    if length == 0:
        return b""
    if budget is not None:
        held.take(budget, length)
    if headers.get("Expect", "").lower() == "100-continue" and handler.request_version == "HTTP/1.1":
        handler.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    try:
        body = handler.rfile.read(length) or b""  # short (or None) when a read waited io_timeout
    except OSError:  # the peer went away
        body = b""
    if len(body) != length:
        handler.close_connection = True
        raise errors.BadRequest("The body ended, or stopped arriving, before Content-Length bytes.")
    handler.body_pending = False
    if handler.command in BODY_METHODS:
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise errors.UnsupportedMediaType("Send the body as Content-Type: application/json.")
    return body


def body_stream(handler, max_bytes):
    """The body of an upload as a stream; 400/411/413 decided from the headers."""
    headers = handler.headers
    _framing(handler)
    encoding = headers.get("Transfer-Encoding")
    raw_length = headers.get("Content-Length")
    if encoding is not None:
        handler.close_connection = True  # until the body is read to its end
        if raw_length is not None:
            raise errors.BadRequest("Send Content-Length or Transfer-Encoding, not both.")
        if encoding.strip().lower() != "chunked":
            raise errors.LengthRequired("Only Transfer-Encoding: chunked is accepted; or send Content-Length.")
        handler.close_connection = headers.get("Connection", "").lower() == "close"
        length, chunked = None, True
    else:
        chunked = False
        length = 0 if raw_length is None or raw_length == "" else _length(handler, raw_length)
        if length > max_bytes:
            handler.close_connection = True  # the body stays unread
            raise errors.PayloadTooLarge(f"The object exceeds the {max_bytes} byte limit "
                                         "(BILLING_MAX_OBJECT_BYTES).")
    expect = headers.get("Expect", "").lower() == "100-continue" and handler.request_version == "HTTP/1.1"
    return BodyStream(handler, length, chunked, expect)
