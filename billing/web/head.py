"""The request head: the request line and the headers, read into a plain dict.

BaseHTTPRequestHandler parses headers with the e-mail package, which costs
more than the rest of a small request; `parse` reads them itself and answers
a malformed head with the handler's `send_error` (400, 431 or 505), and a head
the connection's deadline cut short (web.deadlines) with 408.
"""

MAX_HEADERS = 100
MAX_LINE = 65536


class Headers:
    """Request headers: case-insensitive `get`; repeated names keep the last
    value and are listed in `duplicated` (framing headers must not repeat)."""

    __slots__ = ("_items", "duplicated")

    def __init__(self):
        self._items = {}
        self.duplicated = set()

    def add(self, name, value):
        key = name.lower()
        if key in self._items:
            self.duplicated.add(key)
        self._items[key] = value

    def get(self, name, default=None):
        return self._items.get(name.lower(), default)

    def __getitem__(self, name):
        return self._items.get(name.lower())

    def __contains__(self, name):
        return name.lower() in self._items

    def items(self):
        return self._items.items()


def parse(handler):
    """Read the request line and headers into `handler` (command, path,
    request_version, headers, close_connection); False after an error answer
    (408 when the head deadline cut it short: `handler.head_late()`)."""
    handler.command = None
    handler.request_version = "HTTP/0.9"
    handler.close_connection = True
    headers, problem = None, _request_line(handler)
    if problem is None:
        headers, problem = _headers(handler)
    if handler.head_late():
        problem = (408, f"The request head must arrive within {handler.server.head_timeout} s.")
    if problem is not None:
        handler.send_error(*problem)
        return False
    handler.headers = headers
    connection = headers.get("Connection", "").lower()
    if handler.request_version == "HTTP/1.1":
        handler.close_connection = connection == "close"
    else:
        handler.close_connection = connection != "keep-alive"
    return True


def _request_line(handler):
    """None, or the (status, message) that refuses the request line."""
    line = str(handler.raw_requestline, "iso-8859-1").rstrip("\r\n")
    handler.requestline = line
    words = line.split()
    if len(words) != 3:
        return 400, "Bad request line"
    command, path, version = words
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        return 505, "HTTP version not supported"
    handler.command, handler.path, handler.request_version = command, path, version
    if path.startswith("//"):
        handler.path = "/" + path.lstrip("/")
    return None


def _headers(handler):
    """(Headers, None), or (None, the (status, message) that refuses them)."""
    headers = Headers()
    for _ in range(MAX_HEADERS + 1):
        raw = handler.rfile.readline(MAX_LINE + 1)
        if len(raw) > MAX_LINE:
            return None, (431, "Header line too long")
        if raw in (b"\r\n", b"\n", b""):
            return headers, None
        if not raw.endswith(b"\r\n"):
            return None, (400, "Header lines must end with CRLF")
        name, sep, value = str(raw, "iso-8859-1").partition(":")
        if not sep or not name or name != name.strip() or " " in name or "\t" in name:
            return None, (400, "Malformed header line")
        headers.add(name, value.strip())
    return None, (431, "Too many headers")
