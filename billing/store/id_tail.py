"""The tail of the dedup index in the writer's memory (billing/store/event_ids.py).

The events stored after the settled mark have no index entry: their rows
are their entries. The writer's connection keeps their (id_hash → seq) here,
so a lookup on it never reads the tail's rows, and storing an event writes
no entry at all.

Read once from the tail's rows (inside the writer's transaction), then kept
by the writer: `add` (or `add_run`) for the events it stores, `prune` when
a settling pass moved the mark up (seen as a higher mark in a later transaction, so a
rolled-back pass changes nothing here). It is read again when the mark is
lower than the one it was read above, when it is `stale` (seqs came not one
after another, or extras outgrew it) or another connection committed
(`PRAGMA data_version`). It may hold more than the tail — the
seqs of a rolled-back insert, of an event deleted since, or below the mark
— never less; callers read the events of the seqs it answers and compare
their ids, so an extra seq is never a wrong match.
Only the writer's transaction uses it (under the writer's lock).
"""


class IdTail:
    __slots__ = ("_seqs", "_version", "mark", "stale")

    def __init__(self):
        self._seqs = {}       # id_hash → seq, or a tuple of seqs (the same hash more than once)
        self._version = None  # PRAGMA data_version when it was read
        self.mark = None      # the settled mark it was read above
        self.stale = True

    def due(self, version):
        """Whether it must be read again (`load`), given the writer's `PRAGMA
        data_version` read inside its transaction."""
        if version != self._version:
            self._version, self.stale = version, True
        return self.stale

    def load(self, mark, entries):
        """The tail above `mark`: its (id_hash, seq) pairs, read in the writer's transaction."""
        self._seqs, self.mark = {}, mark
        self.add(entries)
        self.stale = False

    def add(self, entries):
        """(id_hash, seq) pairs of events just stored."""
        found = self._seqs
        for id_hash, seq in entries:
            had = found.get(id_hash)
            if had is None:
                found[id_hash] = seq
            elif type(had) is tuple:
                if seq not in had:
                    found[id_hash] = had + (seq,)
            elif had != seq:
                found[id_hash] = (had, seq)

    def add_run(self, hashes, first):
        """The hashes of events just stored with the seqs `first`, `first` + 1, …:
        `add`, in two calls into C when no hash is in the tail yet and none
        comes twice (which is almost always)."""
        found = self._seqs
        count = len(found) + len(hashes)
        if found.keys().isdisjoint(hashes):
            found.update(zip(hashes, range(first, first + len(hashes))))
            if len(found) == count:
                return
        # a hash there already, or twice among these (a 64-bit collision): each seq kept
        self.add(zip(hashes, range(first, first + len(hashes))))

    def prune(self, mark):
        """The mark moved up to `mark`: drop the entries at or below it, from
        the oldest on (entries come in seq order but for a restore's or a
        rollback's: any left behind are harmless extras)."""
        found, drop = self._seqs, []
        for id_hash, had in found.items():
            if (had if type(had) is int else max(had)) > mark:
                break
            drop.append(id_hash)
        for id_hash in drop:
            del found[id_hash]
        if len(drop) > len(found):  # a dict never shrinks its table by itself: a compact copy frees it
            self._seqs = dict(found)
        self.mark = mark

    def seqs(self, hashes):
        found = self._seqs
        result = []
        for id_hash in hashes:
            had = found.get(id_hash)
            if had is None:
                continue
            if type(had) is tuple:
                result.extend(had)
            else:
                result.append(had)
        return result

    def __len__(self):
        return len(self._seqs)
