"""The writer's in-memory filter of stored event ids (billing/store/known_ids.py):
an id it lacks is surely not stored, so only the others are looked up in
SQLite; it never wrongly answers "not stored", also after another
connection's commit, a build racing with the writer, or a rollback."""

import random

from billing.api import events
from billing.store import event_id_runs, event_ids, known_ids
from billing.store.db import Database, connect
from billing.store.known_ids import KnownIds, _Bits
from tests.helpers import wait_for


def row(customer_id, event_id):
    return (customer_id, event_id, 1, 0, 1, 1, 1, None, 0, events.id_hash(customer_id, event_id))


def open_db(path, background=True):
    db = Database(str(path), background=background)
    with db.transaction() as conn:
        if not conn.execute("SELECT 1 FROM customers").fetchone():
            conn.execute("INSERT INTO customers (name, email, created_at, updated_at) VALUES ('c', 'c@example.com', 0, 0)")
    return db


def lookups(db, fn):
    """Run `fn(conn)` in a write transaction; returns (its result, the dedup-index reads it made)."""
    statements = []
    with db.transaction() as conn:
        conn.set_trace_callback(statements.append)
        try:
            result = fn(conn)
        finally:
            conn.set_trace_callback(None)
    return result, [sql for sql in statements if "FROM event_id_run_list" in sql]


class FakeWriter:
    """Stands in for the writer connection: answers PRAGMA data_version with `version`."""

    def __init__(self, version=1):
        self.version = version

    def execute(self, sql):
        return self

    def fetchone(self):
        return (self.version,)


def built(db):
    known = db._writer.known_ids
    with db.transaction() as conn:
        return known.usable(conn)


def test_every_added_hash_may_be_stored_and_few_others_seem_so():
    rng = random.Random(7)
    bits = _Bits(known_ids.bits_log2(50_000))
    added = [rng.getrandbits(64) - 2 ** 63 for _ in range(50_000)]
    bits.add(added)
    assert bits.maybe(added) == added  # never a false "not stored", negative hashes included
    others = [rng.getrandbits(64) - 2 ** 63 for _ in range(50_000)]
    assert len(bits.maybe(others)) < 0.02 * len(others)  # 16 bits an id: about 1.5 % at most


def test_the_size_follows_the_ids_within_bounds():
    assert known_ids.bits_log2(0) == known_ids.MIN_BITS_LOG2
    assert known_ids.bits_log2(1_000_000) == 24  # 16 M bits for 1 M ids
    assert known_ids.bits_log2(10 ** 9) == known_ids.MAX_BITS_LOG2


def test_with_the_filter_built_new_ids_are_not_looked_up_and_stored_ones_still_are(tmp_path):
    db = open_db(tmp_path / "k.db")
    try:
        db.submit(lambda conn: events.store_new(conn, [row(1, f"old-{i}") for i in range(100)]))
        db.build_known_ids()
        wait_for(lambda: built(db), message="the filter was never built")
        stored, reads = lookups(db, lambda conn: events.store_new(conn, [row(1, f"new-{i}") for i in range(100)]))
        assert len(stored) == 100 and reads == []  # no new id needed SQLite
        again, reads = lookups(db, lambda conn: events.store_new(conn, [row(1, "old-5"), row(1, "new-7"), row(1, "x")]))
        assert [r[1] for r in again] == ["x"] and len(reads) == 1  # the stored ones were looked up, and found
    finally:
        db.close()


def test_another_connections_commit_sets_the_filter_aside_until_a_build_after_it(tmp_path):
    path = tmp_path / "k.db"
    server = open_db(path)
    try:
        server.build_known_ids()
        wait_for(lambda: built(server), message="the filter was never built")
        tool = Database(str(path), background=False)  # another process's database: no filter of its own
        try:
            tool.submit(lambda conn: events.store_new(conn, [row(1, "from-the-tool")]))
        finally:
            tool.close()
        stored, reads = lookups(server, lambda conn: events.store_new(conn, [row(1, "from-the-tool")]))
        assert stored == [] and len(reads) == 1  # asked SQLite, which knows it
        wait_for(lambda: built(server), message="no build after the other commit")
        stored, reads = lookups(server, lambda conn: events.store_new(conn, [row(1, "from-the-tool"), row(1, "y")]))
        assert [r[1] for r in stored] == ["y"]  # the rebuilt filter holds the tool's id
    finally:
        server.close()


def test_a_rolled_back_insert_leaves_only_harmless_bits(tmp_path):
    db = open_db(tmp_path / "k.db")
    try:
        db.build_known_ids()
        wait_for(lambda: built(db), message="the filter was never built")

        def fail(conn):
            events.store_new(conn, [row(1, "undone")])
            raise RuntimeError("the job fails after storing")

        try:
            db.submit(fail)
        except RuntimeError:
            pass
        stored, reads = lookups(db, lambda conn: events.store_new(conn, [row(1, "undone")]))
        assert len(stored) == 1 and len(reads) == 1  # the filter said "maybe", SQLite said no
        assert built(db)  # still in use: a rollback sets nothing aside
        stored, reads = lookups(db, lambda conn: events.store_new(conn, [row(1, "never-sent")]))
        assert len(stored) == 1 and reads == []
    finally:
        db.close()


def test_what_the_writer_adds_during_a_build_is_in_the_built_filter():
    known = KnownIds()
    writer = FakeWriter(5)

    def chunks():
        yield [1, 2, 3]
        known.add([-99])  # the writer stores an event while the build reads the index
        yield [4]

    assert not known.usable(writer)
    assert known.build(lambda start: start(5, 4), chunks)
    assert known.usable(writer)
    assert known.maybe_stored([1, 2, 3, 4, -99]) == [1, 2, 3, 4, -99]


def test_a_commit_by_another_connection_during_a_build_voids_it():
    known = KnownIds()
    writer = FakeWriter(1)

    def chunks():
        yield [1]
        writer.version = 2  # another connection commits while the build reads
        assert not known.usable(writer)  # the writer sees it in its next transaction
        yield [2]

    known.usable(writer)
    assert not known.build(lambda start: start(1, 2), chunks)
    assert not known.usable(writer) and known.wanted.is_set()  # a new build is due
    assert known.build(lambda start: start(2, 2), lambda: iter([[1, 2]]))
    assert known.usable(writer)


def test_an_outgrown_filter_asks_for_a_larger_one_and_keeps_answering():
    known = KnownIds()
    writer = FakeWriter()
    known.usable(writer)
    assert known.build(lambda start: start(1, 0), lambda: iter([]))
    known.wanted.clear()
    size = len(known._bits.array)
    rng = random.Random(3)
    many = [rng.getrandbits(64) - 2 ** 63 for _ in range(size * 8 // known_ids.BITS_PER_ID + 1)]
    known.add(many)
    assert known.wanted.is_set()
    assert known.usable(writer) and known.maybe_stored(many) == many
    known.build(lambda start: start(1, len(many)), lambda: iter([many]))
    assert len(known._bits.array) > size and known.maybe_stored(many) == many


def failing_chunks(before_failing=None):
    def chunks():
        yield [1]
        if before_failing:
            before_failing()
        raise OSError("the disk went away")
    return chunks


def test_a_first_build_that_fails_midway_leaves_the_filter_aside_and_the_next_one_brings_it():
    known = KnownIds()
    writer = FakeWriter()
    known.usable(writer)
    try:
        known.build(lambda start: start(1, 2), failing_chunks())
    except OSError:
        pass
    assert not known.usable(writer) and known._next is None
    assert known.build(lambda start: start(1, 2), lambda: iter([[1, 2]])) and known.usable(writer)


def test_a_larger_build_that_fails_keeps_the_filter_in_use_and_growth_watched():
    known = KnownIds()
    writer = FakeWriter()
    known.usable(writer)
    assert known.build(lambda start: start(1, 0), lambda: iter([[7]]))
    for set_aside_meanwhile in (False, True):
        if set_aside_meanwhile:
            def other_commit():
                writer.version += 1
                known.usable(writer)  # the writer sees another connection's commit during the build
        else:
            other_commit = None
        try:
            known.build(lambda start: start(writer.version, 10 ** 6), failing_chunks(other_commit))
        except OSError:
            pass
        assert known._next is None  # dropped either way: nothing half filled is kept or added to
        if not set_aside_meanwhile:
            assert known.usable(writer) and known.maybe_stored([7]) == [7]  # the filter before still answers
    assert not known.usable(writer)  # set aside by that commit, until a build after it
    assert known.build(lambda start: start(writer.version, 1), lambda: iter([[7]])) and known.usable(writer)
    known.wanted.clear()
    known.add(list(range(len(known._bits.array) * 8 // known_ids.BITS_PER_ID + 1)))
    assert known.wanted.is_set()  # growth is watched again


def test_a_commit_by_another_process_after_the_build_read_its_range_is_never_missed(tmp_path, monkeypatch):
    """The build reads the index a range at a time; another connection's
    commit into a range already read is in none of the reads, so the filter
    must not take it as seen: the writer's data_version, read before any of
    the index, shows the commit to the writer's next transaction."""
    path = tmp_path / "k.db"
    server = open_db(path)
    tool = Database(str(path), background=False)
    real = event_ids.hash_chunks
    sneaked = []

    def then_another_commit(conn, size):
        yield from real(conn, size)  # every range read (one, with so few ids)
        if not sneaked:
            sneaked.append(tool.submit(lambda c: events.store_new(c, [row(1, "sneaked-in")])))

    monkeypatch.setattr(event_ids, "hash_chunks", then_another_commit)
    try:
        server.build_known_ids()
        wait_for(lambda: sneaked and server.known_ids_state()[0], message="no filter built")
        assert len(sneaked[0]) == 1
        stored, reads = lookups(server, lambda conn: events.store_new(conn, [row(1, "sneaked-in")]))
        assert stored == [] and len(reads) == 1  # set aside at once: looked up, and found
        assert server.query_one("SELECT count(*) FROM events WHERE event_id = 'sneaked-in'") == (1,)
    finally:
        tool.close()
        server.close()


def stored_with(db, hashes):
    """Store one event per hash (ids e0, e1, …) with exactly these id hashes."""
    rows = [(1, f"e{i}", 1, 0, 1, 1, 1, None, 0, h) for i, h in enumerate(hashes)]
    db.submit(lambda conn: events.store_new(conn, rows))


def test_the_build_reads_every_entry_while_passes_and_merges_move_them(tmp_path):
    """Entries leave the tail for a new run, and runs for a higher one, while
    the build reads the tail and then the runs a range at a time: none is
    missed (one moved past the build's position may be read twice)."""
    db = open_db(tmp_path / "k.db", background=False)
    rng = random.Random(11)
    reader = connect(db.path)
    try:
        hashes = [rng.getrandbits(64) - 2 ** 63 for _ in range(700)] + [-(2 ** 63), 2 ** 63 - 1]
        hashes[40:40] = [hashes[39]] * 2  # equal hashes (other seqs) across a range's end
        stored_with(db, hashes)
        for _ in range(9):  # nine runs of 50 seqs; the rest stays in the tail
            with db.transaction() as conn:
                event_id_runs.settle(conn, 50)
        seen, merged = [], []
        for number, chunk in enumerate(event_ids.hash_chunks(reader, 40)):
            assert not reader.in_transaction  # no snapshot held between ranges
            seen.extend(chunk)
            with db.transaction() as conn:  # meanwhile the tail settles and merges move runs
                if number % 2:
                    event_id_runs.settle(conn, 50)
                else:
                    merged.append(event_id_runs.merge_step(conn, 30))
        assert sorted(set(seen)) == sorted(set(hashes)) and len(seen) >= len(hashes)
        assert sum(merged) >= 5  # merge ranges ran between the build's reads
        for size in (1, 7, 1000):  # quiet: each entry exactly once, whatever the range size
            assert sorted(h for chunk in event_ids.hash_chunks(reader, size) for h in chunk) == sorted(hashes)
    finally:
        reader.close()
        db.close()
