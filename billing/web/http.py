"""Request/response plumbing: one handler class, one dispatch, one error path.

Handlers take `(request, **path_params)` and return data: a dict or list
(200), or a `Response` when they need another status or body type.
"""

import hashlib
import re
import socket
import time
import traceback
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from .. import errors, jsonutil
from ..api.responses import FileResponse, Response
from ..errors import ApiError
from . import bodies, head, socket_io, wire
from .bodies import MAX_BODY_BYTES, UNAUTHENTICATED_BODY, BodyStream  # noqa: F401  (the limits live there)
from .connections import Server
from .wire import SECURITY_BLOCK, SECURITY_HEADERS, SERVER_NAME  # noqa: F401

HTML_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
            "form-action 'self'")
UNAUTHENTICATED_DRAIN = UNAUTHENTICATED_BODY  # what is read and dropped of a refused upload without valid credentials
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_LITERAL_SEGMENT = re.compile(r"(?:[A-Za-z0-9_-]|\\\.)+")  # letters, digits, _ - and an escaped dot


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


def _path_key(path):
    """The first two segments of a path ('v1/events' of /v1/events/batch)."""
    return "/".join(path.split("/", 3)[1:3])


def _route_key(pattern):
    """The `_path_key` of every path the pattern matches, or None when that is
    not certain (it is then tried for every path): the first two segments
    must be plain text, followed by the end or by a `/` that is not optional,
    with no alternation anywhere."""
    segments = pattern.split("/", 3)[1:3]
    if not pattern.startswith("/") or "|" in pattern or not all(_LITERAL_SEGMENT.fullmatch(s) for s in segments):
        return None
    rest = pattern[1 + len("/".join(segments)):]
    if rest and (len(segments) < 2 or rest[0] != "/" or rest[1:2] in ("?", "*", "{", "+")):
        return None
    return "/".join(segment.replace("\\.", ".") for segment in segments)


class Router:
    """Routes tried in their order; a path is matched only against the routes
    of its first two segments and those whose first two segments are patterns
    (about 100 regular expressions a request otherwise)."""

    def __init__(self, routes):
        self.routes = [Route(*r) for r in routes]
        keys = [_route_key(route.pattern) for route in self.routes]
        self._anywhere = [route for route, key in zip(self.routes, keys) if key is None]
        self._by_key = {key: [route for route, other in zip(self.routes, keys) if other in (key, None)]
                        for key in set(keys) - {None}}

    def match(self, method, path):
        """(route, params); NotFound when no pattern matches, MethodNotAllowed when
        only the method is wrong."""
        return first_match(self._by_key.get(_path_key(path), self._anywhere), method, path)


def first_match(routes, method, path):
    """The first of `routes` matching (route, params), or the Router's errors."""
    allowed = []
    for route in routes:
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


class Request:
    def __init__(self, app, method, target, headers, body, request_id, client):
        self.app = app
        self.method = method
        parts = urlsplit(target)
        self.path = parts.path
        self.query = parse_qs(parts.query, keep_blank_values=True, errors="strict") if parts.query else {}  # bad UTF-8: 400
        self.headers = headers
        self.body = body
        self.body_stream = None  # for raw-body routes: a BodyStream
        self.request_id = request_id
        self.client = client
        self.actor = None
        self.held = bodies.Held()  # what the body holds of the server's memory budgets
        self.budget = None         # the budget decoded JSON is paid from
        self._json = None
        self._charged = False      # the body's JSON paid for (_charge_json)

    # -- body ------------------------------------------------------------
    def json(self):
        """The body as a JSON object ({} for an empty body)."""
        if self._json is None:
            if not self.body:
                self._json = {}
            else:
                self._charge_json()
                self._json = jsonutil.decode_object(self.body)
        return self._json

    def json_bytes(self):
        """The body's bytes, for a decoder in another process (an ingest
        worker, which decodes them as `json` would, with
        `jsonutil.decode_object`), under the same size rules and budget."""
        self._charge_json()
        return self.body

    def _charge_json(self):
        """The size rules and budget of decoding the body, once a request
        (json() after json_bytes(), when no worker took the body, pays nothing more)."""
        if not self._charged:
            bodies.charge_json(self.body, self.held, self.budget)
            self._charged = True

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
    timeout = None  # no Python socket timeout: `setup` sets web.socket_io's (the head has its own deadline)
    server_version = SERVER_NAME

    app = None  # set by make_server

    def version_string(self):
        return self.server_version

    def date_time_string(self, timestamp=None):
        return wire.http_date() if timestamp is None else super().date_time_string(timestamp)

    def setup(self):
        super().setup()
        self.served = 0  # requests answered on this connection
        self.body_pending = False
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        try:
            socket_io.io_timeouts(self.connection, self.server.io_timeout)
        except OSError:  # no kernel timeouts on this socket: a Python one (it polls before each read and write)
            self.connection.settimeout(self.server.io_timeout)
        self.wfile = socket_io.Writer(self.connection, self.server.io_timeout)

    def handle_one_request(self):
        """One request: a keep-alive connection waits at most `idle_timeout` for
        its first byte, then the whole head must arrive within `head_timeout`."""
        server, sock = self.server, self.connection
        try:
            if self.served:
                server.deadlines.arm(sock, server.idle_timeout)
                if not self.rfile.peek(1):  # closed by the client, or idle too long
                    self.close_connection = True
                    return
            server.deadlines.arm(sock, server.head_timeout)
            super().handle_one_request()
        finally:
            server.deadlines.disarm(sock)
            self.served += 1

    def head_late(self):
        """The head is read (or given up on): stop its clock; True when it ran out."""
        return self.server.deadlines.disarm(self.connection)

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def log_message(self, format, *args):  # the app logs one JSON line itself
        pass

    def _request_id(self):
        request_id = self.headers.get("X-Request-Id")
        return request_id if request_id and _REQUEST_ID.fullmatch(request_id) else wire.request_id()

    def _prepare(self, app, request_id):
        """The request, matched and authenticated, with its body read (or a
        stream for uploads): nothing of the body is read before the token is
        checked, and without valid credentials at most UNAUTHENTICATED_BODY."""
        self.body_pending = bodies.announced(self.headers)
        try:
            request = Request(app, self.command, self.path, self.headers, b"", request_id, self.client_address[0])
        except ValueError:
            raise errors.BadRequest("The request target is not a valid URL (a query is percent-encoded UTF-8).") from None
        self.current = request
        request.budget = self.server.decoded_budget
        route, params = app.router.match(self.command, request.path)
        self.route_pattern = route.template
        length = None
        if route.raw_body:  # 400/411/413 from its headers first, as before
            request.body_stream = bodies.body_stream(self, app.config.max_object_bytes)
            self.body_pending = False  # the stream drains or closes what it does not read
        else:
            length = bodies.body_length(self)  # 400/411 from the headers
        app.authenticate(request, route)
        if length is not None:
            limit = MAX_BODY_BYTES if request.actor is not None else UNAUTHENTICATED_BODY
            request.body = bodies.read_body(self, length, limit, request.held, self.server.raw_budget)
            self.body_pending = False
        return request, route, params

    def _dispatch(self):
        app = self.app
        started = time.perf_counter()
        request_id = self._request_id()
        self.current = self.route_pattern = None
        try:
            response = app.handle(*self._prepare(app, request_id))
        except Exception as exc:  # the one error path
            if not isinstance(exc, ApiError):
                app.log_exception(request_id, exc)
            response = _error_response(exc, request_id)
        request = self.current
        try:
            self._answer(app, request, response, request_id)
        finally:
            if request is not None:
                request.held.release()
        app.log_request(self, request, self.route_pattern, response.status,
                        (time.perf_counter() - started) * 1000, request_id)

    def _answer(self, app, request, response, request_id):
        """Send the response; what is left of the body is then drained or the connection closed."""
        if self.body_pending:
            self.close_connection = True  # refused before its body was read: the body stays unread
        stream = request.body_stream if request is not None else None
        drain_limit = None
        if stream is not None and not stream.done:
            # a refused upload: read and drop the rest of its body, so the client (still
            # sending) reads the answer instead of a reset, and the connection can be
            # reused; or close when that is not possible or not worth it
            drain_limit = app.config.max_object_bytes if request.actor is not None else UNAUTHENTICATED_DRAIN
            if not stream.can_drain(drain_limit):
                self.close_connection = True
                drain_limit = None
        self._send(response, request_id)
        if drain_limit is not None and not stream.drain(drain_limit):  # also when the client asked to close
            self.close_connection = True

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
        sent = self.wfile.send_file(response.file, response.offset, response.length)
        if sent != response.length:  # the file shrank under us (it never should): end the connection
            self.close_connection = True

    def parse_request(self):
        """The request line and headers, read by `head.parse` (not the e-mail package)
        within the head deadline."""
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
            self._send(Response(code, body), wire.request_id())
        except OSError:
            pass


def make_server(app, host, port):
    handler = type("MeterlineHandler", (Handler,), {"app": app})
    server = Server((host, port), handler)
    server.raw_budget = bodies.Budget(bodies.RAW_BUDGET, "request bodies")
    server.decoded_budget = bodies.Budget(bodies.DECODED_BUDGET, "request bodies")
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

