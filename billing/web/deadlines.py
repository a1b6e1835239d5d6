"""Deadlines on reading a request head.

A connection's thread reads the request line and headers with plain blocking
reads (C speed); a per-read socket timeout cannot stop a client that sends one
byte a second. Instead each connection in its head phase is armed here with a
deadline, and one reaper thread cuts the read side (`shutdown(SHUT_RD)`) of
those past it: the blocked read returns what arrived so far and the thread
learns from `disarm` that time ran out. Real (monotonic) time: these are
socket timeouts, not billing time.
"""

import socket
import threading
import time

TICK = 0.1  # seconds between the reaper's looks while some connection is armed


class Deadlines:
    def __init__(self):
        self._armed = {}   # socket -> monotonic deadline
        self._cut = set()  # sockets cut and not yet disarmed
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="head-deadlines", daemon=True)
        self._thread.start()

    def arm(self, sock, seconds):
        """`sock` must finish its current phase within `seconds` (replaces any earlier deadline)."""
        with self._lock:
            idle = not self._armed
            self._armed[sock] = time.monotonic() + seconds
        if idle:
            self._wake.set()

    def disarm(self, sock):
        """Stop watching `sock`; True when it was cut for being late."""
        with self._lock:
            self._armed.pop(sock, None)
            if sock in self._cut:
                self._cut.discard(sock)
                return True
            return False

    def armed(self):
        with self._lock:
            return len(self._armed)

    def stop(self):
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=5)

    def _run(self):
        while not self._stopped:
            if not self._reap():
                self._wake.wait()  # nothing armed: sleep until something is
                self._wake.clear()
            else:
                time.sleep(TICK)

    def _reap(self):
        """Cut the connections past their deadline; whether any stay armed."""
        now = time.monotonic()
        with self._lock:
            late = [sock for sock, deadline in self._armed.items() if deadline <= now]
            for sock in late:
                del self._armed[sock]
                self._cut.add(sock)
                try:
                    sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass
            return bool(self._armed)
