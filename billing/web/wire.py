"""What every answer carries on the wire: the server name, the security
headers, and a complete JSON error answer written without a handler (the
connection limiter answers 503 before any thread is started)."""

import email.utils
import itertools
import json
import os
import time

SERVER_NAME = "Meterline"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
SECURITY_BLOCK = "\r\n".join(f"{k}: {v}" for k, v in SECURITY_HEADERS.items())
JSON_TYPE = "application/json; charset=utf-8"


# request ids: a random prefix drawn when the process starts and a counter, 32
# hex digits like a uuid4's; unique within a run and, by the prefix, across
# runs. No system call per request (uuid4 reads os.urandom, which gives up the
# interpreter lock on every request).
_PREFIX = os.urandom(8).hex()
_COUNTER = itertools.count(1)


def request_id():
    return f"{_PREFIX}{next(_COUNTER):016x}"


_date = (0, "")  # (whole second, its Date header value): formatted once a second, not per answer
wall_clock = time.time  # the Date header's clock: wall time, not the billing clock (tests replace it)


def http_date():
    """The Date header's value now (RFC 9110 IMF-fixdate)."""
    global _date
    now = int(wall_clock())
    second, text = _date
    if second != now:
        text = email.utils.formatdate(now, usegmt=True)
        _date = (now, text)
    return text


def error_answer(status, reason, code, message, headers=None):
    """The bytes of a whole `status` answer in the one error shape, ending the
    connection: Server, Date, the security headers, X-Request-Id, then
    `headers`."""
    rid = request_id()
    body = json.dumps({"error": {"code": code, "message": message, "details": []}},
                      separators=(",", ":")).encode()
    lines = [f"HTTP/1.1 {status} {reason}", f"Server: {SERVER_NAME}",
             f"Date: {http_date()}", SECURITY_BLOCK, f"X-Request-Id: {rid}",
             f"Content-Type: {JSON_TYPE}", f"Content-Length: {len(body)}", "Cache-Control: no-store"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
