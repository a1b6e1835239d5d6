"""The request head: the request line and the headers, read into a plain dict.

BaseHTTPRequestHandler parses headers with the e-mail package, which costs
more than the rest of a small request; `parse` reads them itself and answers
a malformed head with the handler's `send_error` (400, 431 or 505).
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
    request_version, headers, close_connection); False after an error answer."""
    handler.command = None
    handler.request_version = "HTTP/0.9"
    handler.close_connection = True
    if not _request_line(handler):
        return False
    headers = _headers(handler)
    if headers is None:
        return False
    handler.headers = headers
    connection = headers.get("Connection", "").lower()
    if handler.request_version == "HTTP/1.1":
        handler.close_connection = connection == "close"
    else:
        handler.close_connection = connection != "keep-alive"
    return True


def _request_line(handler):
    line = str(handler.raw_requestline, "iso-8859-1").rstrip("\r\n")
    handler.requestline = line
    words = line.split()
    if len(words) != 3:
        handler.send_error(400, "Bad request line")
        return False
    command, path, version = words
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        handler.send_error(505, "HTTP version not supported")
        return False
    handler.command, handler.path, handler.request_version = command, path, version
    if path.startswith("//"):
        handler.path = "/" + path.lstrip("/")
    return True


def _headers(handler):
    """The Headers of the request, or None after an error answer."""
    headers = Headers()
    for _ in range(MAX_HEADERS + 1):
        raw = handler.rfile.readline(MAX_LINE + 1)
        if len(raw) > MAX_LINE:
            handler.send_error(431, "Header line too long")
            return None
        if raw in (b"\r\n", b"\n", b""):
            return headers
        if not raw.endswith(b"\r\n"):
            handler.send_error(400, "Header lines must end with CRLF")
            return None
        name, sep, value = str(raw, "iso-8859-1").partition(":")
        if not sep or not name or name != name.strip() or " " in name or "\t" in name:
            handler.send_error(400, "Malformed header line")
            return None
        headers.add(name, value.strip())
    handler.send_error(431, "Too many headers")
    return None
