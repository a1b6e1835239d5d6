"""The connection limiter: a thread per connection, at most MAX_CONNECTIONS
at once. One more is answered 503 at once, so idle or stalled clients cannot
pile up threads."""

import sys
import threading
from http.server import ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    """The HTTP server: a thread per connection, within MAX_CONNECTIONS."""
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    MAX_CONNECTIONS = 512
    _BUSY_BODY = b'{"error":{"code":"service_unavailable","message":"Too many open connections; try again.","details":[]}}'
    BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY)

    def __init__(self, *args, **kwargs):
        self.slots = threading.BoundedSemaphore(self.MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            try:
                request.settimeout(1)
                request.sendall(self.BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)
