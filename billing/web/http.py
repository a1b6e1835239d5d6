"""Request/response plumbing: one handler class, one dispatch, one error path.

Handlers take `(request, **path_params)` and return data: a dict or list
(200), or a `Response` when they need another status or body type.
"""

import hashlib
import re
import socket
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from .. import errors, jsonutil
from ..api.responses import FileResponse, Response
from ..errors import ApiError
from . import head
from .connections import Server

MAX_BODY_BYTES = 10 * 1024 * 1024
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
HTML_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
            "form-action 'self'")


SECURITY_BLOCK = "\r\n".join(f"{k}: {v}" for k, v in SECURITY_HEADERS.items())


BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")


UNAUTHENTICATED_DRAIN = 64 * 1024  # what is read and dropped of a refused upload without valid credentials


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


def streaming(handler):
    """Mark a route's handler as reading its raw body itself (uploads)."""
    handler.streams_body = True
    return handler


class Route:
    __slots__ = ("method", "pattern", "template", "regex", "handler", "roles", "raw_body")

    def __init__(self, method, pattern, handler, roles):
        self.raw_body = getattr(handler, "streams_body", False)  # it reads request.body_stream itself
        self.method = method
        self.pattern = pattern
        self.template = re.sub(r"\\(.)", r"\1", re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern))
        self.regex = re.compile("^" + pattern + "$")
        self.handler = handler
        self.roles = frozenset(roles) if roles is not None else None  # None: public


class Router:
    def __init__(self, routes):
        self.routes = [Route(*r) for r in routes]

    def match(self, method, path):
        """(route, params); NotFound when no pattern matches, MethodNotAllowed when
        only the method is wrong."""
        allowed = []
        for route in self.routes:
            m = route.regex.match(path)
            if not m:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, m.groupdict()
            allowed.append(route.method)
        if allowed:
            if "GET" in allowed:
                allowed.append("HEAD")
            raise errors.MethodNotAllowed(sorted(set(allowed)))
        raise errors.NotFound(f"No route for {path}.")

    def raw_body_route(self, method, path):
        """True when `method path` goes to a handler that streams its body."""
        for route in self.routes:
            if route.raw_body and route.method == method and route.regex.match(path):
                return True
        return False


class Request:
    def __init__(self, app, method, target, headers, body, request_id, client):
        self.app = app
        self.method = method
        parts = urlsplit(target)
        self.path = parts.path
        self.query = parse_qs(parts.query, keep_blank_values=True)
        self.headers = headers
        self.body = body
        self.body_stream = None  # for raw-body routes: a BodyStream
        self.request_id = request_id
        self.client = client
        self.actor = None
        self._json = None

    # -- body ------------------------------------------------------------
    def json(self):
        """The body as a JSON object ({} for an empty body)."""
        if self._json is None:
            if not self.body:
                self._json = {}
            else:
                try:
                    self._json = jsonutil.decode(self.body.decode("utf-8"))  # strict: no UTF-16, no lone surrogates
                except jsonutil.JSONDecodeError as exc:
                    raise errors.BadRequest(f"Malformed JSON body: {exc}") from None
                except UnicodeDecodeError:
                    raise errors.BadRequest("The body is not valid UTF-8.") from None
            if not isinstance(self._json, dict):
                raise errors.ValidationError([{"field": None, "message": "the body must be a JSON object"}])
        return self._json

    # -- query -----------------------------------------------------------
    def arg(self, name, default=None):
        values = self.query.get(name)
        if not values:
            return default
        return values[-1]

    # -- scope -----------------------------------------------------------
    @property
    def customer_scope(self):
        """The customer a customer-scoped key is limited to, else None."""
        return self.actor.customer_id if self.actor else None

    def customer_filter(self, customer_id):
        """The customer a list or report is narrowed to: a customer-scoped
        caller's own (404 when it names another), else `customer_id` (or None)."""
        scope = self.customer_scope
        if scope is None:
            return customer_id
        if customer_id not in (None, scope):
            raise errors.NotFound("Customer not found.")
        return scope

    def check_customer(self, customer_id):
        """404 for a customer-scoped key asking about anyone but its customer."""
        scope = self.customer_scope
        if scope is not None and int(customer_id) != scope:
            raise errors.NotFound("Customer not found.")


def _error_response(exc, request_id):
    if isinstance(exc, ApiError):
        body = exc.body()
        return Response(exc.status, body, headers=exc.headers)
    body = {"error": {"code": "internal_error",
                      "message": f"Internal server error (request {request_id}).",
                      "details": [], "request_id": request_id}}
    return Response(500, body)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # seconds a stalled or idle connection may hold its thread
    server_version = "Meterline"

    def version_string(self):
        return self.server_version
    app = None  # set by make_server

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def log_message(self, format, *args):  # the app logs one JSON line itself
        pass

    def _read_body(self):
        """Read the body of any request, so no byte of it is left on the wire to
        be taken for a next request; decide 411/413/400 from the headers first."""
        headers = self.headers
        if headers.duplicated & {"content-length", "transfer-encoding"}:
            self.close_connection = True
            raise errors.BadRequest("Content-Length or Transfer-Encoding is given more than once.")
        if headers.get("Transfer-Encoding") is not None:
            self.close_connection = True
            raise errors.LengthRequired("Chunked (or any transfer-encoded) bodies are not accepted; "
                                        "send Content-Length.")
        raw_length = headers.get("Content-Length")
        if raw_length is None or raw_length == "":
            return b""
        if not raw_length.isdigit() or not raw_length.isascii():
            self.close_connection = True
            raise errors.BadRequest("Content-Length must be a non-negative integer.")
        length = int(raw_length)
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the body stays unread
            raise errors.PayloadTooLarge(f"The body exceeds the {MAX_BODY_BYTES} byte limit.")
        if length == 0:
            return b""
        if headers.get("Expect", "").lower() == "100-continue" and self.request_version == "HTTP/1.1":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            body = self.rfile.read(length)
        except OSError:  # the body stopped arriving (timeout) or the peer went away
            self.close_connection = True
            raise errors.BadRequest("The body did not arrive in time.") from None
        if len(body) != length:
            self.close_connection = True
            raise errors.BadRequest("The body ended before Content-Length bytes.")
        if self.command in BODY_METHODS:
            content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if content_type != "application/json":
                raise errors.UnsupportedMediaType("Send the body as Content-Type: application/json.")
        return body

    def _streams_body(self, app):
        try:
            path = urlsplit(self.path).path
        except ValueError:
            return False
        return app.router.raw_body_route(self.command, path)

    def _body_stream(self, max_bytes):
        """The body of an upload as a stream; 400/411/413 decided from the headers."""
        headers = self.headers
        if headers.duplicated & {"content-length", "transfer-encoding"}:
            self.close_connection = True
            raise errors.BadRequest("Content-Length or Transfer-Encoding is given more than once.")
        encoding = headers.get("Transfer-Encoding")
        raw_length = headers.get("Content-Length")
        if encoding is not None:
            self.close_connection = True  # until the body is read to its end
            if raw_length is not None:
                raise errors.BadRequest("Send Content-Length or Transfer-Encoding, not both.")
            if encoding.strip().lower() != "chunked":
                raise errors.LengthRequired("Only Transfer-Encoding: chunked is accepted; or send Content-Length.")
            self.close_connection = headers.get("Connection", "").lower() == "close"
            length, chunked = None, True
        else:
            chunked = False
            if raw_length is None or raw_length == "":
                length = 0
            elif not raw_length.isdigit() or not raw_length.isascii():
                self.close_connection = True
                raise errors.BadRequest("Content-Length must be a non-negative integer.")
            else:
                length = int(raw_length)
            if length > max_bytes:
                self.close_connection = True  # the body stays unread
                raise errors.PayloadTooLarge(f"The object exceeds the {max_bytes} byte limit "
                                             "(BILLING_MAX_OBJECT_BYTES).")
        expect = headers.get("Expect", "").lower() == "100-continue" and self.request_version == "HTTP/1.1"
        return BodyStream(self, length, chunked, expect)

    def _dispatch(self):
        app = self.app
        started = time.perf_counter()
        request_id = self.headers.get("X-Request-Id") or uuid.uuid4().hex
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", request_id):
            request_id = uuid.uuid4().hex
        request = None
        route_pattern = None
        stream = None
        try:
            if self._streams_body(app):
                stream = self._body_stream(app.config.max_object_bytes)
                body = b""
            else:
                body = self._read_body()  # first, whatever the route: the wire is then clean
            try:
                request = Request(app, self.command, self.path, self.headers, body, request_id,
                                  self.client_address[0])
            except ValueError:
                raise errors.BadRequest("The request target is not a valid URL.") from None
            request.body_stream = stream
            route, params = app.router.match(self.command, request.path)
            route_pattern = route.template
            response = app.handle(request, route, params)
        except Exception as exc:  # the one error path
            if not isinstance(exc, ApiError):
                app.log_exception(request_id, exc)
            response = _error_response(exc, request_id)
        drain_limit = None
        if stream is not None and not stream.done:
            # a refused upload: read and drop the rest of its body, so the client (still
            # sending) reads the answer instead of a reset, and the connection can be
            # reused; or close when that is not possible or not worth it
            signed_in = request is not None and request.actor is not None
            drain_limit = app.config.max_object_bytes if signed_in else UNAUTHENTICATED_DRAIN
            if not stream.can_drain(drain_limit):
                self.close_connection = True
                drain_limit = None
        self._send(response, request_id)
        if drain_limit is not None and not stream.drain(drain_limit):  # also when the client asked to close
            self.close_connection = True
        app.log_request(self, request, route_pattern, response.status,
                        (time.perf_counter() - started) * 1000, request_id)

    def _send(self, response, request_id):
        """Write the status line, headers and body in one write (one syscall)."""
        if not isinstance(response, Response):
            response = Response(200, response)
        if isinstance(response, FileResponse):
            try:
                self._send_file(response, request_id)
            finally:
                response.close()
            return
        stream = getattr(response, "stream", None)
        if stream:
            self.close_connection = True  # no length: the stream ends with the connection
        payload = b"" if stream else response.payload()
        head = self._head(response, request_id, None if stream else len(payload))
        self.wfile.write(head if stream or self.command == "HEAD" else head + payload)
        if stream and self.command != "HEAD":
            stream(self)

    def _head(self, response, request_id, length):
        """The status line and headers (`length` None: no Content-Length)."""
        reason = self.responses.get(response.status, ("",))[0]
        lines = [f"HTTP/1.1 {response.status} {reason}", f"Server: {self.server_version}",
                 f"Date: {self.date_time_string()}", SECURITY_BLOCK,
                 f"X-Request-Id: {request_id}", f"Content-Type: {response.content_type}"]
        if response.content_type.startswith("text/html") and "Content-Security-Policy" not in response.headers:
            lines.append(f"Content-Security-Policy: {HTML_CSP}")
        if length is not None:
            lines.append(f"Content-Length: {length}")
        if "Cache-Control" not in response.headers:
            lines.append("Cache-Control: no-store")
        for name, value in response.headers.items():
            if "\r" in str(value) or "\n" in str(value):
                raise ValueError("header values must not contain line breaks")
            lines.append(f"{name}: {value}")
        if self.close_connection:
            lines.append("Connection: close")
        elif self.request_version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send_file(self, response, request_id):
        self.wfile.write(self._head(response, request_id, response.length))
        if self.command == "HEAD" or not response.length:
            return
        sent = self.connection.sendfile(response.file, response.offset, response.length)
        if sent != response.length:  # the file shrank under us (it never should): end the connection
            self.close_connection = True

    def parse_request(self):
        """The request line and headers, read by `head.parse` (not the e-mail package)."""
        return head.parse(self)

    def send_error(self, code, message=None, explain=None):
        """Errors found while parsing the request line or headers, in the one
        JSON error shape (with the request id and security headers)."""
        self.close_connection = True
        if self.command is None:
            self.command = "GET"
        codes = {400: "bad_request", 431: "request_header_fields_too_large", 505: "http_version_not_supported",
                 501: "not_implemented", 408: "request_timeout", 414: "uri_too_long"}
        body = {"error": {"code": codes.get(code, "bad_request"), "message": message or self.responses.get(
            code, ("Error",))[0], "details": []}}
        try:
            self._send(Response(code, body), uuid.uuid4().hex)
        except OSError:
            pass


def make_server(app, host, port):
    handler = type("MeterlineHandler", (Handler,), {"app": app})
    server = Server((host, port), handler)
    return server


def request_hash(request):
    digest = hashlib.sha256()
    digest.update(request.method.encode())
    digest.update(b"\0")
    digest.update(request.path.encode())
    digest.update(b"\0")
    digest.update(request.body or b"")
    return digest.hexdigest()


def format_exception(exc):
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))

