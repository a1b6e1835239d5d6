"""The connection limiter: a thread per connection, at most MAX_CONNECTIONS
at once and MAX_PER_CLIENT from one client address. One more is answered 503
at once, so idle or stalled clients cannot pile up threads; and the head
deadlines (web.deadlines) close connections that hold a thread without
sending their request head in time, or stay idle between requests."""

import sys
import threading
from http.server import ThreadingHTTPServer

from . import wire
from .deadlines import Deadlines

HEAD_TIMEOUT = 10      # seconds for the whole request head (request line and headers)
IDLE_TIMEOUT = 15      # seconds a keep-alive connection may wait for the first byte of its next request
IO_TIMEOUT = 60        # seconds one read or write of a body may wait (web.http sets it on the socket)
MAX_CONNECTIONS = 512  # open connections, all clients together
MAX_PER_CLIENT = 64    # open connections from one client address


class Server(ThreadingHTTPServer):
    """The HTTP server: a thread per connection, within the limits above
    (instance attributes, so a test may lower them on its own server)."""
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, *args, **kwargs):
        self.head_timeout = HEAD_TIMEOUT
        self.idle_timeout = IDLE_TIMEOUT
        self.io_timeout = IO_TIMEOUT
        self.max_per_client = MAX_PER_CLIENT
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._per_client = {}  # client address -> open connections
        self._per_client_lock = threading.Lock()
        self.deadlines = Deadlines()
        try:
            super().__init__(*args, **kwargs)
        except BaseException:
            self.deadlines.stop()
            raise

    def process_request(self, request, client_address):
        refusal = self._admit(client_address[0])
        if refusal is not None:
            try:
                request.settimeout(1)
                request.sendall(wire.error_answer(503, "Service Unavailable", "service_unavailable", refusal,
                                                  {"Retry-After": "1"}))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._leave(client_address[0])
            raise

    def _admit(self, address):
        """Take a slot for a connection from `address`; the reason it is refused, or None."""
        with self._per_client_lock:
            if self._per_client.get(address, 0) >= self.max_per_client:
                return "Too many open connections from your address; try again."
            if not self.slots.acquire(blocking=False):
                return "Too many open connections; try again."
            self._per_client[address] = self._per_client.get(address, 0) + 1
        return None

    def _leave(self, address):
        with self._per_client_lock:
            left = self._per_client.get(address, 1) - 1
            if left:
                self._per_client[address] = left
            else:
                self._per_client.pop(address, None)
            self.slots.release()

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._leave(client_address[0])

    def server_close(self):
        super().server_close()
        self.deadlines.stop()

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, BlockingIOError)):
            return  # the client left, or a write waited io_timeout (BlockingIOError: see web.socket_io)
        super().handle_error(request, client_address)
