"""Keeping the dedup index's runs (billing/store/event_ids.py): settling the
tail into a new run, and merging runs, each step one short writer
transaction (billing/ops/settler.py runs them in the background).

A **settling pass** writes the entries of the next RUN_SEQS seqs above the
mark (stored and archived events), sorted by hash, as a run numbered above
every other, and moves the mark past them. Its pages are appended, each
filled once: at 10 M events this took 0.7 µs an entry where merging the same
entries into one large hash-ordered table took 12 µs (about a page an entry).

A **merge** keeps the number of runs small, so a lookup seeks few of them:
once FANIN runs share a size tier (tier 0 below FANIN × RUN_SEQS entries,
each next tier FANIN times larger), they are merged into a new run numbered
above every other, a range of hashes per transaction (about MERGE_CHUNK
entries: insert the range into the new run, delete it from the old ones).
Its progress (`merged_through`, the last hash moved) is kept in the run
list, so a restart goes on where it stopped; the old runs leave the list
with the last range. Each entry is thus written about once per tier: log
base FANIN of (entries ÷ RUN_SEQS) times, always appended. One merge runs
at a time; run 0 (restored entries) is never merged.
"""

from . import event_ids
from .event_ids import HIGHEST, LOWEST

RUN_SEQS = 50_000     # seqs of the tail one pass turns into a run (one transaction: about 35 ms at 10 M events)
FANIN = 4             # runs of one tier merged into one
MERGE_CHUNK = 5_000   # entries a merge moves per transaction (a few ms)
_SPACE = 2 ** 64      # hashes are uniform over the signed 64-bit range


def tail_size(conn):
    """About how many entries the tail holds (seqs above the mark)."""
    return max(0, event_ids.highest_seq(conn) - event_ids.mark(conn))


def _next_run(conn):
    (highest,) = conn.execute("SELECT coalesce(max(run), 0) FROM event_id_run_list").fetchone()
    return highest + 1


def settle(conn, seqs=RUN_SEQS):
    """Turn the tail's next `seqs` seqs into a new run, in the caller's
    transaction; returns how many seqs the mark moved (0: the tail is empty)."""
    low = event_ids.mark(conn)
    high = min(event_ids.highest_seq(conn), low + seqs)
    if high <= low:
        return 0
    run = _next_run(conn)
    count = conn.execute("INSERT OR IGNORE INTO event_id_runs (run, id_hash, seq) SELECT ?1, id_hash, seq FROM"
                         " (SELECT id_hash, seq FROM events WHERE seq > ?2 AND seq <= ?3 UNION ALL"
                         "  SELECT id_hash, seq FROM archived_events WHERE seq > ?2 AND seq <= ?3)"
                         " ORDER BY id_hash, seq", (run, low, high)).rowcount
    if count:
        conn.execute("INSERT INTO event_id_run_list (run, entries) VALUES (?, ?)", (run, count))
    event_ids.set_mark(conn, high)  # the writer's tail in memory prunes what is below it when it sees it
    return high - low


def tier(entries):
    """The size tier of a run of `entries` entries."""
    level, bound = 0, RUN_SEQS * FANIN
    while entries >= bound:
        level, bound = level + 1, bound * FANIN
    return level


def _due(conn):
    """The FANIN oldest runs of the lowest tier that has FANIN of them, or []
    (when no merge is under way)."""
    tiers = {}
    for run, entries in conn.execute("SELECT run, entries FROM event_id_run_list WHERE run != ? ORDER BY run",
                                     (event_ids.LOOSE_RUN,)):
        tiers.setdefault(tier(entries), []).append(run)
    for level in sorted(tiers):
        if len(tiers[level]) >= FANIN:
            return tiers[level][:FANIN]
    return []


def _under_way(conn):
    """(the merge's new run, the last hash moved or None, its old runs, their entries), or None."""
    row = conn.execute("SELECT t.run, t.merged_through FROM event_id_run_list t WHERE t.run IN"
                       " (SELECT into_run FROM event_id_run_list) LIMIT 1").fetchone()
    if row is None:
        return None
    target, through = row
    sources = conn.execute("SELECT run, entries FROM event_id_run_list WHERE into_run = ? ORDER BY run",
                           (target,)).fetchall()
    return target, through, [run for run, _entries in sources], sum(entries for _run, entries in sources)


def merge_due(conn):
    """Whether a merge is under way or due."""
    return _under_way(conn) is not None or bool(_due(conn))


def merge_step(conn, chunk=MERGE_CHUNK):
    """One range of the merge under way (or of a new one, when one is due),
    in the caller's transaction; returns False when no merge is due."""
    under_way = _under_way(conn)
    if under_way is None:
        runs = _due(conn)
        if not runs:
            return False
        target = _next_run(conn)
        conn.execute("INSERT INTO event_id_run_list (run, entries) VALUES (?, 0)", (target,))
        conn.executemany("UPDATE event_id_run_list SET into_run = ? WHERE run = ?", [(target, run) for run in runs])
        under_way = _under_way(conn)
    target, through, sources, entries = under_way
    start = LOWEST if through is None else through + 1  # hashes from `start` to `end`, both included
    end = min(HIGHEST, start + max(1, _SPACE * chunk // max(entries, 1)) - 1)
    where = f"run IN ({','.join('?' * len(sources))}) AND id_hash >= ? AND id_hash <= ?"
    params = (*sources, start, end)
    # OR IGNORE: two runs may hold the same entry (an archived event's, settled again after
    # the mark went down below its seq: event_ids.add_since); the new run keeps it once
    moved = conn.execute(f"INSERT OR IGNORE INTO event_id_runs (run, id_hash, seq) SELECT ?, id_hash, seq"
                         f" FROM event_id_runs WHERE {where} ORDER BY id_hash, seq", (target, *params)).rowcount
    conn.execute(f"DELETE FROM event_id_runs WHERE {where}", params)
    if end == HIGHEST:
        conn.execute("DELETE FROM event_id_run_list WHERE into_run = ?", (target,))
        conn.execute("UPDATE event_id_run_list SET entries = entries + ?, merged_through = NULL WHERE run = ?",
                     (moved, target))
    else:
        conn.execute("UPDATE event_id_run_list SET entries = entries + ?, merged_through = ? WHERE run = ?",
                     (moved, end, target))
    return True
