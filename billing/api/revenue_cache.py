"""Revenue answers kept per bucket, exact.

A 12-month revenue view by customer over 10,000 customers is 120,000 groups
(about 6 MB of JSON): summing and encoding it all again for each view costs
seconds. So each bucket's encoded part (its totals and groups) is kept with
the `revenue_version` it was computed at. A trigger moves that counter
whenever an invoice enters or leaves the issued and paid set, and logs the
invoice's `issued_at` and `period_start_date` under the new version in
`revenue_touched` (the last TOUCHED_KEPT versions). A kept bucket stays valid
at a later version when no logged change in between falls inside it; only the
buckets a change touched (after an invoice run: this month) are summed again.
When the log no longer reaches back to a bucket's version, it is recomputed.
"""

import threading
from collections import OrderedDict, namedtuple

from ..store.db import scalar

MAX_BYTES = 64 * 1024 * 1024  # encoded buckets kept, least recently used dropped first

# One kept bucket: the version it is valid at, its totals {currency: minor
# units} (to sum the range's totals) and its encoded JSON object. A whole
# answer is kept the same way (no totals, its encoded bytes), valid only at
# the version it was made at.
Part = namedtuple("Part", "version totals encoded")


class BucketCache:
    def __init__(self, max_bytes=MAX_BYTES):
        self.max_bytes = max_bytes
        self._parts = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self):
        return len(self._parts)

    def get(self, key):
        with self._lock:
            part = self._parts.get(key)
            if part is not None:
                self._parts.move_to_end(key)
            return part

    def put(self, key, part):
        with self._lock:
            old = self._parts.pop(key, None)
            if old is not None:
                self._bytes -= len(old.encoded)  # str or bytes: about a byte a character either way
            self._parts[key] = part
            self._bytes += len(part.encoded)
            while self._bytes > self.max_bytes and len(self._parts) > 1:
                _, dropped = self._parts.popitem(last=False)
                self._bytes -= len(dropped.encoded)


def current_version(conn):
    return scalar(conn, "SELECT value FROM counters WHERE name = 'revenue_version'")


def still_valid(conn, parts, version, position):
    """Which of `parts` ({index: Part}) hold at `version`: those computed at
    it, and older ones that no logged change since falls into.
    `position(index)` gives a bucket's (low, high, basis column) bounds."""
    stale = {n: part for n, part in parts.items() if part.version != version}
    valid = {n: part for n, part in parts.items() if part.version == version}
    if not stale:
        return valid
    oldest = min(part.version for part in stale.values())
    changes = conn.execute("SELECT version, issued_at, period_start_date FROM revenue_touched"
                           " WHERE version > ? AND version <= ?", (oldest, version)).fetchall()
    logged = [change_version for change_version, _, _ in changes]
    for n, part in stale.items():
        if sum(1 for v in logged if part.version < v <= version) != version - part.version:
            continue  # the log no longer reaches back this far
        low, high, column = position(n)
        touched = (issued if column == "issued_at" else period
                   for change_version, issued, period in changes if change_version > part.version)
        if not any(value is not None and low <= value < high for value in touched):
            valid[n] = part._replace(version=version)
    return valid
