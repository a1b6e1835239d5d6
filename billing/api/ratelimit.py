"""The request rate limit of customer credentials (§9): each customer-scoped
API key and each `customer` user may make BILLING_RATE_LIMIT requests per
second, in bursts of up to twice that; more is a 429 `rate_limited` with
`Retry-After`. Staff credentials are not limited.

A token bucket per credential (its actor label): it refills at the rate per
second up to the burst, and each request takes one token. Time comes from
`billing.clock`, so tests pin it instead of waiting.
"""

import math
import threading
from collections import OrderedDict

from .. import clock
from ..errors import RateLimited

MAX_BUCKETS = 100_000


def _seconds():
    return clock.now().timestamp()


class RateLimiter:
    def __init__(self, rate, now=_seconds, max_buckets=MAX_BUCKETS):
        self.rate = rate
        self.capacity = 2 * rate
        self.refill_seconds = self.capacity / rate  # an idle bucket is full again after this
        self.now = now
        self.max_buckets = max_buckets
        self._buckets = OrderedDict()  # label -> (tokens, last use), least recently used first
        self._lock = threading.Lock()

    def __len__(self):
        return len(self._buckets)

    def check(self, actor):
        """Take one token from a customer credential's bucket; RateLimited
        when it is empty. Staff actors (no customer) pass untouched."""
        if actor is None or actor.customer_id is None:
            return
        now = self.now()
        with self._lock:
            wait = self._take(actor.label, now)
            self._prune(now)
        if wait:
            raise RateLimited(f"More than {self.rate} requests per second with this credential; slow down.",
                              max(1, math.ceil(wait)))

    def _take(self, label, now):
        """Seconds until a token is there (0: one was taken)."""
        bucket = self._buckets.pop(label, None)
        if bucket is None:
            tokens = self.capacity
        else:
            tokens = min(self.capacity, bucket[0] + max(0, now - bucket[1]) * self.rate)
        wait = 0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[label] = (tokens, now)  # to the back: the most recently used
        return wait

    def _prune(self, now):
        """Forget buckets idle long enough to be full again (a missing bucket
        starts full, so nothing changes), from the front: amortised O(1).
        The cap only bites with more credentials busy within two seconds."""
        buckets = self._buckets
        while buckets:
            _tokens, last = buckets[next(iter(buckets))]
            if now - last < self.refill_seconds:
                break
            buckets.popitem(last=False)
        while len(buckets) > self.max_buckets:
            buckets.popitem(last=False)
