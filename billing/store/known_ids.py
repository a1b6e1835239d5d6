"""Which ids may be stored: an in-memory filter in front of the dedup index.

A batch of new events asks the dedup index (billing/store/event_ids.py)
whether any of its ids is stored; with random ids that is a random B-tree
page per id, 2–7 µs an id under the writer's lock, and almost always the
answer is no. This filter answers "surely not stored" for most ids in a
fraction of a microsecond, so only the others are looked up in SQLite.

It is a Bloom filter over the 64-bit `id_hash` of every entry of the dedup
index: each hash sets two bits (its low and high 32 bits, masked), and a hash
with either bit unset was never added. It only ever gains bits: a deleted
entry (a retraction, a forgotten archived id) leaves its bits, which can make
an id look possibly stored — a lookup in SQLite then answers — but never the
other way round. So the filter must hold every hash the index holds:

- the writer connection adds the hashes of the events it stores (which
  join the index's tail) and of the entries it adds, in the transaction
  that writes them (a rolled-back one leaves harmless bits);
- `build` fills a fresh filter from the index in the background, made while
  no write transaction is under way and then read part by part (the tail,
  then the runs a range at a time), each part in its own short read
  transaction; the writer adds to the fresh filter meanwhile: every entry
  is either read where it was or where it moved to (entries only move from
  the tail to a new run, or from a run to a higher one), or added by the
  writer after the fresh filter was made;
- another connection's commit (another process restoring an archive, a
  tool) is caught by `PRAGMA data_version` inside the writer's transaction:
  the filter is set aside (every id is looked up again) until a build that
  began after it is done.

Size: 16 bits an id (so 1–1.5 % of new ids are looked up anyway), from
1 MiB up to 32 MiB, which holds 16.7 M ids at that rate; past it the rate
grows (about 10 % at 50 M ids) but no answer is ever wrong. When the ids
outgrow the filter, a larger one is built in the background while this one
keeps answering.
"""

import threading

BITS_PER_ID = 16
MIN_BITS_LOG2 = 23   # 1 MiB
MAX_BITS_LOG2 = 28   # 32 MiB
BUILD_CHUNK = 20_000  # run entries a build reads per read transaction (the tail comes first, in one)


def bits_log2(ids):
    """The filter's size (log2 of its bits) for `ids` ids."""
    return max(MIN_BITS_LOG2, min(MAX_BITS_LOG2, (max(ids, 1) * BITS_PER_ID - 1).bit_length()))


class _Bits:
    """One Bloom filter: a bytearray of 2**log2 bits."""
    __slots__ = ("array", "mask", "ids")

    def __init__(self, log2):
        self.array = bytearray(1 << (log2 - 3))
        self.mask = (1 << log2) - 1
        self.ids = 0

    def add(self, hashes):
        array, mask = self.array, self.mask
        for value in hashes:  # signed: `& mask` reads the low bits as of the unsigned value
            low, high = value & mask, (value >> 32) & mask
            array[low >> 3] |= 1 << (low & 7)
            array[high >> 3] |= 1 << (high & 7)
        self.ids += len(hashes)

    def maybe(self, hashes):
        """The hashes that may have been added (all those with both bits set)."""
        array, mask = self.array, self.mask
        found = []
        for value in hashes:
            low, high = value & mask, (value >> 32) & mask
            if array[low >> 3] >> (low & 7) & 1 and array[high >> 3] >> (high & 7) & 1:
                found.append(value)
        return found

    def full(self):
        return self.ids * BITS_PER_ID > self.mask + 1 and self.mask + 1 < (1 << MAX_BITS_LOG2)


class KnownIds:
    """The filter of one database's writer connection (see the module)."""

    def __init__(self):
        self._lock = threading.Lock()  # guards the bit arrays: adds come from the writer and a build
        self._bits = None      # the filter in use, or None before the first build
        self._next = None      # the filter a build is filling
        self._usable = False   # False until a build ends with no other connection's commit since
        self._version = None   # PRAGMA data_version the writer last saw
        self._generation = 0   # grows when the filter is set aside: a build begun before is void
        # a build is due (Database's background thread waits on it): set by the first write
        # that asks (or by the server at start), by another connection's commit, by growth
        self.wanted = threading.Event()

    def usable(self, conn, version=None):
        """Inside the writer's transaction on `conn`: whether an id the filter
        lacks is surely not stored. Another connection's commit since the last
        call sets the filter aside until a build that begins after it ends.
        `version`: the connection's data_version if read already in this transaction."""
        if version is None:
            (version,) = conn.execute("PRAGMA data_version").fetchone()
        if version != self._version:
            with self._lock:
                self._version = version
                self._generation += 1
                self._usable = False
                self.wanted.set()
        return self._usable

    def state(self):
        """(whether it answers now, its size in bytes) for the metrics; no SQL."""
        bits = self._bits
        return self._usable, (len(bits.array) if bits is not None else 0)

    def maybe_stored(self, hashes):
        """Of `hashes`, those that may be stored (call only when `usable`)."""
        return self._bits.maybe(hashes)

    def add(self, hashes):
        """The writer stored these hashes in the dedup index."""
        with self._lock:
            for bits in (self._bits, self._next):
                if bits is not None:
                    bits.add(hashes)
            if self._bits is not None and self._next is None and self._bits.full():
                self.wanted.set()  # outgrown: a larger one is built while this one answers

    def build(self, begin, read_chunks):
        """Fill a fresh filter from the dedup index, and use it. `begin(start)`
        holds the writer's lock (no write transaction under way) and calls
        `start(the writer's data_version, about how many ids the index holds)`;
        `read_chunks()` then yields lists of the index's hashes (each entry
        there when it began, unless deleted since). Returns whether the filter
        is in use afterwards (False: set aside meanwhile; `wanted` is set again)."""
        self.wanted.clear()
        with self._lock:
            generation = self._generation
        try:
            begin(lambda version, ids: self._start(generation, version, ids))
            for chunk in read_chunks():
                with self._lock:
                    if generation != self._generation:
                        self._next = None
                        return False
                    self._next.add(chunk)
        except BaseException:
            with self._lock:
                self._next = None  # half filled (one build runs at a time): dropped, so growth is watched again
            raise
        with self._lock:
            if generation != self._generation:
                self._next = None
                return False
            self._bits, self._next, self._usable = self._next, None, True
            return True

    def _start(self, generation, version, ids):
        with self._lock:
            if generation != self._generation:
                return
            if version != self._version:  # another connection committed, unseen yet: the reads, all later, see it
                self._version, self._usable = version, False
            self._next = _Bits(bits_log2(2 * ids))  # room to grow before the next build
