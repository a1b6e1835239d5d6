"""How long a connection's reads and writes may wait.

A Python socket timeout polls before every `recv` and `send`: a second
system call, and a second wait for the interpreter lock, on every read and
write of every request. Connections are instead left in blocking mode with
the kernel keeping the limit of each call (`io_timeouts`), and `Writer`
bounds a whole write, as a Python timeout bounds `sendall`.
"""

import io
import os
import socket
import struct
import sys
import time


def io_timeouts(sock, seconds):
    """Let each read and write on `sock` wait at most `seconds`, kept by the
    kernel (SO_RCVTIMEO, SO_SNDTIMEO, a struct timeval as Linux takes it;
    OSError elsewhere, and the caller sets a Python timeout instead). A read
    that waited that long returns what arrived (b"" when nothing did); a
    write raises BlockingIOError."""
    if not sys.platform.startswith("linux"):
        raise OSError("kernel socket timeouts are set only on Linux here")
    value = struct.pack("ll", int(seconds), int(seconds % 1 * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


FILE_STEP = 128 * 1024  # bytes of a file sent by one call


class Writer(io.BufferedIOBase):
    """A connection's write side, unbuffered like socketserver's: `write`
    sends all of the bytes, `send_file` part of a file. Each send waits as
    the socket lets it (see `io_timeouts`); a client that reads, but so
    slowly that the rest has not gone out `seconds` after the first send, is
    let go (TimeoutError): a write takes at most about twice `seconds`."""

    def __init__(self, sock, seconds):
        self._sock = sock
        self._seconds = seconds

    def writable(self):
        return True

    def write(self, data):
        total = len(data)
        sent = self._sock.send(data)  # the whole of it, almost always: one system call
        if sent < total:
            self._send_rest(memoryview(data)[sent:])
        return total

    def _send_rest(self, rest):
        deadline = time.monotonic() + self._seconds
        while rest:
            _check(deadline, self._seconds)
            rest = rest[self._sock.send(rest):]

    def send_file(self, file, offset, length):
        """Send `length` bytes of `file` from `offset`, zero-copy (os.sendfile
        on the blocking socket, each call bounded by the kernel's timeout);
        returns the bytes sent (fewer if the file ended early). A socket
        with a Python timeout (no kernel one) goes through socket.sendfile,
        whose waits are bounded one by one. At most FILE_STEP bytes a call:
        one call for a whole file would go on as long as the client keeps
        reading a little (the kernel's timeout bounds each of its waits)."""
        if self._sock.gettimeout() is not None:
            return self._sock.sendfile(file, offset, length)
        out, source, left, deadline = self._sock.fileno(), file.fileno(), length, None
        while left:
            sent = os.sendfile(out, source, offset, min(left, FILE_STEP))
            if not sent:
                break  # the file ended
            offset, left = offset + sent, left - sent
            if left:
                deadline = deadline or time.monotonic() + self._seconds
                _check(deadline, self._seconds)
        return length - left

    def fileno(self):
        return self._sock.fileno()


def _check(deadline, seconds):
    if time.monotonic() > deadline:
        raise TimeoutError(f"the client read too slowly: the answer was not sent {seconds} s after it began")
