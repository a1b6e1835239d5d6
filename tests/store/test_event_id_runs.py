"""The dedup index as a tail and runs (billing/store/event_ids.py,
billing/store/event_id_runs.py): whatever mix of stores, resends,
retractions, settling passes, merge steps half done, rollbacks, restarts
and another connection's commits, every stored id is a duplicate and no
other is, and the index holds every stored event exactly: in the tail
(above the mark) or in a listed run."""

import random
import sqlite3
import sys

from billing.api import events
from billing.store import archive, event_id_runs, event_ids, migrations
from billing.store.archive_files import COLUMNS
from billing.store.db import Database, connect
from billing.store.id_tail import IdTail


def row(customer_id, event_id, hash_value=None):
    h = events.id_hash(customer_id, event_id) if hash_value is None else hash_value
    return (customer_id, event_id, 1, 0, 1, 1, 1, None, 0, h)


def open_db(path):
    db = Database(str(path), background=False)
    with db.transaction() as conn:
        if not conn.execute("SELECT 1 FROM customers").fetchone():
            for n in (1, 2):
                conn.execute("INSERT INTO customers (name, email, created_at, updated_at) VALUES (?, ?, 0, 0)",
                             (f"c{n}", f"c{n}@example.com"))
    return db


def index_state(conn):
    """(entries in listed runs, run entries outside listed runs, tail seqs, stored (hash, seq) pairs)."""
    mark = event_ids.mark(conn)
    listed = set(conn.execute("SELECT id_hash, seq FROM event_id_runs WHERE run IN (SELECT run FROM event_id_run_list)"))
    unlisted = conn.execute("SELECT count(*) FROM event_id_runs WHERE run NOT IN"
                            " (SELECT run FROM event_id_run_list)").fetchone()[0]
    stored = set(conn.execute("SELECT id_hash, seq FROM events UNION ALL SELECT id_hash, seq FROM archived_events"))
    tail = {pair for pair in stored if pair[1] > mark}
    return listed, unlisted, tail, stored


def assert_index_exact(db):
    with db.transaction() as conn:
        listed, unlisted, tail, stored = index_state(conn)
    assert unlisted == 0
    assert listed | tail == stored  # every stored event indexed
    assert listed <= stored  # no entry of an event gone
    assert not listed & tail  # none both settled and in the tail


def test_the_tiers_grow_by_fanin():
    size = event_id_runs.RUN_SEQS
    assert event_id_runs.tier(1) == event_id_runs.tier(size) == 0
    assert event_id_runs.tier(size * event_id_runs.FANIN - 1) == 0
    assert event_id_runs.tier(size * event_id_runs.FANIN) == 1
    assert event_id_runs.tier(size * event_id_runs.FANIN ** 3) == 3


def test_a_merge_moves_every_entry_into_one_run_in_hash_order_and_goes_on_after_a_restart(tmp_path):
    path = tmp_path / "r.db"
    db = open_db(path)
    rng = random.Random(5)
    hashes = [rng.getrandbits(64) - 2 ** 63 for _ in range(398)] + [-(2 ** 63), 2 ** 63 - 1]
    try:
        db.submit(lambda conn: events.store_new(conn, [row(1, f"e{i}", h) for i, h in enumerate(hashes)]))
        for _ in range(4):
            with db.transaction() as conn:
                assert event_id_runs.settle(conn, 100) == 100
        with db.transaction() as conn:
            assert event_id_runs.settle(conn, 100) == 0  # the tail is empty
            assert event_id_runs.merge_due(conn)
            assert event_id_runs.merge_step(conn, 60)
            assert event_id_runs.merge_step(conn, 60)
    finally:
        db.close()
    db = open_db(path)  # a restart half way
    try:
        assert_index_exact(db)
        steps = 0
        while True:
            with db.transaction() as conn:
                if not event_id_runs.merge_step(conn, 60):
                    break
            steps += 1
            assert_index_exact(db)
        assert 3 <= steps <= 12
        with db.transaction() as conn:
            assert conn.execute("SELECT run, entries, into_run, merged_through FROM event_id_run_list").fetchall() == [(0, 0, None, None), (5, 400, None, None)]
            run = conn.execute("SELECT id_hash FROM event_id_runs WHERE run = 5 ORDER BY id_hash, seq").fetchall()
            assert [h for (h,) in run] == sorted(hashes)
            assert not event_id_runs.merge_due(conn)
        stored = db.submit(lambda conn: events.store_new(conn, [row(1, f"e{i}", h) for i, h in enumerate(hashes)]))
        assert stored == []
    finally:
        db.close()


def test_a_retracted_newest_event_hands_its_seq_out_again_below_the_mark(tmp_path):
    """SQLite gives the next event the seq of a deleted newest one: if that
    seq was settled, the tail starts lower, so the new event is indexed."""
    db = open_db(tmp_path / "r.db")
    try:
        db.submit(lambda conn: events.store_new(conn, [row(1, f"e{i}") for i in range(5)]))
        with db.transaction() as conn:
            event_id_runs.settle(conn)
            seq, hash_value = conn.execute("SELECT seq, id_hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
            conn.execute("DELETE FROM events WHERE seq = ?", (seq,))
            event_ids.forget(conn, hash_value, seq)
        assert [r[1] for r in db.submit(lambda conn: events.store_new(conn, [row(1, "new")]))] == ["new"]
        with db.transaction() as conn:
            assert conn.execute("SELECT seq FROM events WHERE event_id = 'new'").fetchone() == (seq,)
            assert event_ids.mark(conn) == seq - 1
        assert_index_exact(db)
        again = db.submit(lambda conn: events.store_new(conn, [row(1, "new"), row(1, "e4")]))
        assert [r[1] for r in again] == ["e4"]  # e4 was retracted; "new" is known, in the tail read again
        assert db.submit(lambda conn: events.store_new(conn, [row(1, "new"), row(1, "e4")])) == []
    finally:
        db.close()


def _store(db, ids, fail=False):
    """Store (customer, id) pairs; returns those stored (with `fail`, those
    the transaction stored before it rolled back)."""
    seen = []

    def job(conn):
        seen.extend((r[0], r[1]) for r in events.store_new(conn, [row(c, i) for c, i in ids]))
        if fail:
            raise RuntimeError("rolled back")
    try:
        db.submit(job)
    except RuntimeError:
        pass
    return set(seen)


def _retract(db, key):
    with db.transaction() as conn:
        found = events.find_stored(conn, *key)
        conn.execute("DELETE FROM events WHERE seq = ?", (found["seq"],))
        event_ids.forget(conn, events.id_hash(*key), found["seq"])


def _tool_store(path, ids):
    """Another process storing events: a plain writer connection, no tail in memory."""
    conn = connect(str(path), writer=True)
    try:
        conn.execute("BEGIN IMMEDIATE")
        stored = {(r[0], r[1]) for r in events.store_new(conn, [row(c, i) for c, i in ids])}
        conn.execute("COMMIT")
        return stored
    finally:
        conn.close()


def test_random_stores_resends_retractions_passes_merges_restarts_and_other_writers(tmp_path):
    path = tmp_path / "r.db"
    rng = random.Random(2026)
    db = open_db(path)
    model, counter = set(), 0
    try:
        for step in range(260):
            op = rng.random()
            if op < 0.40:
                fresh = [(rng.choice((1, 2)), f"id{counter + k}") for k in range(rng.randrange(1, 30))]
                counter += len(fresh)
                again = rng.sample(sorted(model), min(len(model), rng.randrange(0, 6)))
                batch = fresh + again + fresh[:2]  # resends, and repeats within the batch
                rng.shuffle(batch)
                expected = set(fresh) - model
                if rng.random() < 0.1:
                    assert _store(db, batch, fail=True) == expected  # then rolled back: nothing stays
                elif rng.random() < 0.15:
                    assert _tool_store(path, batch) == expected
                    model |= expected
                else:
                    assert _store(db, batch) == expected
                    model |= expected
            elif op < 0.55 and model:
                newest = rng.random() < 0.5
                if newest:
                    with db.transaction() as conn:
                        key = tuple(conn.execute("SELECT customer_id, event_id FROM events ORDER BY seq DESC"
                                                 " LIMIT 1").fetchone())
                else:
                    key = rng.choice(sorted(model))
                _retract(db, key)
                model.discard(key)
            elif op < 0.75:
                undone = rng.random() < 0.2
                try:
                    with db.transaction() as conn:
                        event_id_runs.settle(conn, rng.randrange(1, 40))
                        if undone:
                            raise RuntimeError("the pass rolls back")
                except RuntimeError:
                    pass
            elif op < 0.93:
                with db.transaction() as conn:
                    event_id_runs.merge_step(conn, rng.randrange(1, 25))
            else:
                db.close()
                db = open_db(path)
            if step % 10 == 0:
                assert_index_exact(db)
                probe = rng.sample(sorted(model), min(len(model), 20)) + [(1, "never"), (2, "sent")]
                assert _store(db, probe, fail=True) == {k for k in probe if k not in model}
                with db.transaction() as conn:
                    for key in probe:
                        assert (events.find_stored(conn, *key) is not None) == (key in model)
        with db.transaction() as conn:
            runs = conn.execute("SELECT count(*) FROM event_id_run_list").fetchone()[0]
            merged = conn.execute("SELECT max(entries) FROM event_id_run_list").fetchone()[0]
        assert runs >= 3 and merged > 40  # passes and merges really ran
        assert_index_exact(db)
        everything = sorted(model)
        assert _store(db, everything) == set()
        assert _tool_store(path, everything) == set()  # the rows of the tail, read by SQL, know them too
    finally:
        db.close()


def _archive(conn, seqs, remember=True):
    """An archive pass's writes for `seqs` (billing/store/archive.py); their records."""
    cursor = conn.cursor()
    cursor.row_factory = sqlite3.Row
    records = [{name: row[name] for name in COLUMNS} for row in cursor.execute(
        f"SELECT * FROM events WHERE seq IN ({','.join('?' * len(seqs))})", seqs)]
    archive.mark(conn, records)
    archive.delete_chunk(conn, seqs, None if remember else 2 ** 62)
    return records


def _settled_then_archived(db, count, archived, remember=True):
    """Events e1…e`count` of customer 1 stored and settled into a run, then
    the seqs `archived` archived (ids remembered, or forgotten); their records."""
    db.submit(lambda conn: events.store_new(conn, [row(1, f"e{i}") for i in range(1, count + 1)]))
    with db.transaction() as conn:
        event_id_runs.settle(conn)
        return _archive(conn, archived, remember)


def test_archived_ids_settled_twice_after_the_newest_seq_is_handed_out_again_merge_once(tmp_path):
    """Archived events keep their entries; the newest stored event retracted
    and a new one stored takes a seq at or below theirs, so the tail starts
    below them and a pass writes their entries again: lookups still answer,
    and the merge of those runs keeps each entry once."""
    db = open_db(tmp_path / "r.db")
    try:
        _settled_then_archived(db, 5, [1, 2, 3, 4])
        _retract(db, (1, "e5"))
        assert _store(db, [(1, "x")]) == {(1, "x")}
        with db.transaction() as conn:
            assert event_ids.mark(conn) == 0 and conn.execute("SELECT seq FROM events").fetchall() == [(1,)]
            event_id_runs.settle(conn)  # x, and the archived 1–4 again
        for n in range(2):  # two more runs: four of tier 0
            _store(db, [(2, f"more{n}")])
            with db.transaction() as conn:
                event_id_runs.settle(conn)
        while True:
            with db.transaction() as conn:
                if not event_id_runs.merge_step(conn, 2):
                    break
        with db.transaction() as conn:
            assert conn.execute("SELECT count(*) FROM event_id_run_list WHERE run != 0").fetchone() == (1,)
            assert sorted(conn.execute("SELECT id_hash, seq FROM event_id_runs")) == sorted(conn.execute(
                "SELECT id_hash, seq FROM events UNION ALL SELECT id_hash, seq FROM archived_events"))
        resent = [(1, f"e{i}") for i in range(1, 6)] + [(1, "x"), (2, "more0"), (2, "more1")]
        assert _store(db, resent) == {(1, "e5")}  # only the retracted one is new
    finally:
        db.close()


def test_entries_restored_below_the_mark_go_to_run_0_and_are_found_there(tmp_path):
    db = open_db(tmp_path / "r.db")
    try:
        records = _settled_then_archived(db, 7, [2, 3, 4], remember=False)  # their ids forgotten
        with db.transaction() as conn:
            assert conn.execute("SELECT count(*) FROM event_id_runs").fetchone() == (4,)
        with db.transaction() as conn:
            assert archive.restore_chunk(conn, records) == 3
            assert sorted(conn.execute("SELECT seq FROM event_id_runs WHERE run = 0")) == [(2,), (3,), (4,)]
        assert _store(db, [(1, f"e{i}") for i in range(1, 8)]) == set()
        assert _tool_store(tmp_path / "r.db", [(1, "e3")]) == set()  # by SQL too
        assert_index_exact(db)
    finally:
        db.close()


def test_the_upgrade_puts_settled_entries_in_run_1_and_hot_ones_in_run_0(tmp_path):
    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path, isolation_level=None)
    migrations.migrate(conn, migrations.MIGRATIONS[:20])
    conn.execute("INSERT INTO customers (id, name, email, created_at, updated_at) VALUES (1, 'A', 'a@x', 0, 0)")
    pairs = [(events.id_hash(1, f"e{seq}"), seq) for seq in range(1, 201)]
    conn.executemany("INSERT INTO events (seq, customer_id, event_id, meter_id, ts, quantity, value, matched,"
                     " received_at, id_hash) VALUES (?, 1, ?, 1, 0, 1, 1, 1, 0, ?)",
                     [(seq, f"e{seq}", h) for h, seq in pairs])
    conn.executemany("INSERT INTO event_ids (id_hash, seq) VALUES (?, ?)", pairs[:150])
    conn.executemany("INSERT INTO event_ids_hot (id_hash, seq) VALUES (?, ?)", pairs[150:])
    assert migrations.migrate(conn) == [21, 22]
    assert conn.execute("SELECT run, count(*) FROM event_id_runs GROUP BY run").fetchall() == [(0, 50), (1, 150)]
    assert conn.execute("SELECT run, entries FROM event_id_run_list").fetchall() == [(0, 50), (1, 150)]
    assert event_ids.mark(conn) == 200
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not tables & {"event_ids", "event_ids_hot"}
    conn.close()
    db = Database(path, background=False)
    try:
        assert _store(db, [(1, f"e{seq}") for seq in range(1, 202)]) == {(1, "e201")}
        assert_index_exact(db)
    finally:
        db.close()


def test_the_tail_in_memory_adds_prunes_oldest_first_and_keeps_every_seq_of_a_hash():
    tail = IdTail()
    assert tail.due(1)  # never read yet
    tail.load(10, [(5, 11), (6, 12)])
    assert not tail.due(1) and tail.due(2)  # another connection committed
    tail.load(10, [(5, 11), (6, 12)])
    tail.add([(7, 13), (5, 14), (5, 14), (8, 15)])  # hash 5 again under another seq (retracted and sent again)
    assert tail.seqs([5, 6, 9]) == [11, 14, 12]
    tail.prune(12)  # the oldest, hash 5, has a seq (14) above: it stays, and so does all that came after it
    assert tail.mark == 12 and len(tail) == 4 and tail.seqs([6]) == [12]  # a harmless extra
    tail.prune(15)
    assert len(tail) == 0 and tail.seqs([5, 7, 8]) == []
    tail.add([(h, 100 + h) for h in range(10_000)])
    grown = sys.getsizeof(tail._seqs)
    tail.prune(10_000)  # all but 99 dropped: a compact copy keeps them, and the large table goes
    assert len(tail) == 99 and tail.seqs([9_999, 9_899, 9_900]) == [10_099]
    assert sys.getsizeof(tail._seqs) < grown / 20


def test_a_run_of_seqs_joins_the_tail_as_add_would_even_when_a_hash_comes_again():
    for hashes, there in (([1, 2, 3], []), ([1, 2, 1, 4], []), ([1, 2, 3], [(2, 7)]), ([9, 9, 9], [(9, 8)]),
                          ([], [(1, 1)])):
        by_run, by_pairs = IdTail(), IdTail()
        for tail in (by_run, by_pairs):
            tail.load(0, there)
        by_run.add_run(hashes, 20)
        by_pairs.add(zip(hashes, range(20, 20 + len(hashes))))
        for id_hash in set(hashes) | {h for h, _ in there}:
            assert sorted(by_run.seqs([id_hash])) == sorted(by_pairs.seqs([id_hash])), (hashes, there, id_hash)
        assert len(by_run) == len(by_pairs)
    tail = IdTail()
    tail.load(0, [])
    tail.add_run([5, 6, 5], 1)  # a 64-bit collision inside one batch: both seqs kept
    assert sorted(tail.seqs([5])) == [1, 3] and tail.seqs([6]) == [2]


def test_the_tail_in_memory_is_read_again_when_extras_outgrow_it(tmp_path, monkeypatch):
    """Rolled-back inserts leave extra entries in the writer's tail (harmless)
    until a pass prunes them; if commits keep failing, none does: once the
    entries outnumber twice the tail by EXTRA_ENTRIES, the tail is read again."""
    monkeypatch.setattr(event_ids, "EXTRA_ENTRIES", 50)
    db = open_db(tmp_path / "r.db")
    try:
        sizes = []
        for n in range(12):  # each a rolled-back batch of 20 new ids (seqs 1–20 each time)
            _store(db, [(1, f"undone{n}-{i}") for i in range(20)], fail=True)
            sizes.append(len(db._writer.id_tail))
        assert max(sizes) <= 2 * 20 + 50 + 20 and sizes.count(20) >= 2  # read again (empty), then grown anew
        _store(db, [(1, "kept")])
        assert _store(db, [(1, "kept"), (1, "undone0-1")]) == {(1, "undone0-1")}
        assert len(db._writer.id_tail) <= 2 * 2 + 50  # within the bound: twice the tail (2) and the extras
    finally:
        db.close()


def test_a_batch_of_duplicates_only_writes_nothing_even_with_no_event_stored(tmp_path):
    db = open_db(tmp_path / "r.db")
    try:
        _settled_then_archived(db, 3, [1, 2])  # ids remembered
        _retract(db, (1, "e3"))  # no event stored any more
        with db.transaction() as conn:
            changes = conn.total_changes
            assert events.store_new(conn, [row(1, "e1"), row(1, "e2")]) == []
            assert conn.total_changes == changes and event_ids.mark(conn) == 3
    finally:
        db.close()
