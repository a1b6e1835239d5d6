"""The events not yet delivered: the spool file and the in-memory outbox."""

import fcntl
import os
import tempfile
import threading
import time

from .constants import MAX_BATCH, PROG
from .quantities import decode_json, encode_json


class Spool:
    """The events not yet delivered, as one JSON file replaced atomically
    (written to a temporary file in the same folder, fsynced, renamed).
    An empty outbox removes the file. A lock file keeps a second collector
    off the same spool."""

    FORMAT = "meterline-collect-spool"

    def __init__(self, path):
        self.path = os.path.abspath(os.path.expanduser(path))
        self._lock_file = None

    def lock(self):
        folder = os.path.dirname(self.path)
        os.makedirs(folder, exist_ok=True)
        handle = open(self.path + ".lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._lock_file = handle
        return True

    def load(self, err):
        try:
            text = _read_utf8(self.path)
        except FileNotFoundError:
            return []
        try:
            data = decode_json(text)
            events = data["events"]
            if data.get("format") != self.FORMAT or not isinstance(events, list):
                raise ValueError("not a collector spool")
            return events
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            aside = f"{self.path}.unreadable-{int(time.time())}"
            os.replace(self.path, aside)
            print(f"{PROG}: WARNING: spool {self.path} is unreadable ({exc}); moved aside to {aside}", file=err)
            return []

    def save(self, events):
        if not events:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            return
        folder = os.path.dirname(self.path)
        text = encode_json({"format": self.FORMAT, "version": 1, "events": events})
        fd, temp = tempfile.mkstemp(prefix=os.path.basename(self.path) + ".", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, self.path)
        except BaseException:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise
        try:
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass


def _read_utf8(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


class Outbox:
    """Events waiting for the server, oldest first, in memory; the spool holds
    a copy whenever a delivery did not get everything through. The sampling
    loop appends (memory only, so a slow disk never delays a sample); one
    delivery at a time removes from the front and then writes the spool."""

    def __init__(self, spool, events):
        self.spool = spool
        self.events = list(events)
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()

    def add(self, events):
        with self.lock:
            self.events.extend(events)

    def front(self, n=MAX_BATCH):
        with self.lock:
            return list(self.events[:n])

    def replace_front(self, n, keep):
        with self.lock:
            self.events[:n] = keep

    def persist(self):
        """Write what is waiting to the spool (remove it when nothing is)."""
        with self.write_lock:
            with self.lock:
                events = list(self.events)
            self.spool.save(events)

    def __len__(self):
        with self.lock:
            return len(self.events)
