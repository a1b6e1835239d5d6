"""Sending the outbox to the server in batches, with retries and loud drops."""

import threading
import time

from .answers import error_text, failed_indexes, missing_meters_message, unknown_meters
from .api import Fatal, Unreachable, check_server
from .constants import PROG


class Delivery:
    """Sends the outbox oldest first in batches of at most MAX_BATCH events.
    Unreachable, 5xx or 429: keep everything and retry later. Other 4xx: say
    so loudly on stderr and drop the refused events (the rest of the batch is
    sent again). 401/403 and unknown meters are fatal (the spool is kept)."""

    def __init__(self, api, outbox, customer, url, interval, err, checked):
        self.api = api
        self.outbox = outbox
        self.customer = customer
        self.url = url
        self.interval = interval
        self.err = err
        self.checked = checked
        self.down_since = None
        self.delivered_since_down = 0
        self.fatal = None
        self.lock = threading.Lock()

    def _went_down(self, reason):
        if self.down_since is None:
            self.down_since = time.time()
            self.delivered_since_down = 0
            print(f"{PROG}: server unreachable ({reason}); keeping {len(self.outbox)} events in memory and in "
                  f"{self.outbox.spool.path}, retrying every {self.interval} s", file=self.err, flush=True)

    def _came_back(self):
        if self.down_since is not None:
            print(f"{PROG}: server reachable again after {time.time() - self.down_since:.0f} s; delivered "
                  f"{self.delivered_since_down} held-back events", file=self.err, flush=True)
            self.down_since = None

    def deliver(self, timeout=None):
        """Send what is waiting. Returns "ok" (outbox empty), "retry" or "fatal"."""
        if not self.lock.acquire(timeout=-1 if timeout is None else timeout):
            return "retry"
        try:
            return self._deliver()
        finally:
            try:
                self.outbox.persist()
            finally:
                self.lock.release()

    def _deliver(self):
        if self.fatal:
            return "fatal"
        while True:
            batch = self.outbox.front()
            if not batch:
                return "ok"
            try:
                if not self.checked:
                    check_server(self.api, self.customer)
                    self.checked = True
                body = {"events": batch}
                if isinstance(self.customer, int):
                    body = {"customer_id": self.customer, "events": batch}
                status, answer = self.api.request("POST", "/v1/events/batch", body)
            except Unreachable as exc:
                self._went_down(exc)
                return "retry"
            except Fatal as exc:
                self.fatal = str(exc)
                return "fatal"
            if status == 200:
                self.outbox.replace_front(len(batch), [])
                if self.down_since is not None:
                    self.delivered_since_down += len(batch)
                    if len(self.outbox) == 0:
                        self._came_back()
                continue
            if status == 429 or status >= 500:
                self._went_down(error_text(status, answer))
                return "retry"
            if status == 401:
                self.fatal = f"the server refused the API key ({error_text(status, answer)}); check --key"
                return "fatal"
            if status == 403:
                self.fatal = f"this API key may not post these events ({error_text(status, answer)})"
                return "fatal"
            missing = unknown_meters(answer) if status == 400 else set()
            if missing:
                self.fatal = missing_meters_message(missing, self.url)
                return "fatal"
            bad = failed_indexes(answer, len(batch)) if status == 400 else None
            if bad is None:
                bad = set(range(len(batch)))
            print(f"{PROG}: ERROR: the server refused {len(bad)} of {len(batch)} events and they are DROPPED: "
                  f"{error_text(status, answer)}", file=self.err, flush=True)
            self.outbox.replace_front(len(batch), [e for i, e in enumerate(batch) if i not in bad])
