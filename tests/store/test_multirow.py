"""billing/store/multirow.py: rows written by a few multi-row statements give
what executemany gives (rows, order, ON CONFLICT per row), the last rowid,
and no statement binds more parameters than SQLite allows."""

import random
import sqlite3

import pytest

from billing.store import multirow

INSERT = "INSERT INTO t (k, v) VALUES (?, ?)"
UPSERT = "INSERT INTO totals (k, n) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET n = n + excluded.n"


@pytest.fixture
def conn():
    connection = sqlite3.connect(":memory:", isolation_level=None)
    connection.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, k INTEGER, v TEXT)")
    connection.execute("CREATE TABLE totals (k INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
    yield connection
    connection.close()


def test_the_statement_repeats_the_values_group_and_keeps_the_rest():
    assert multirow.statement(INSERT, 3) == "INSERT INTO t (k, v) VALUES (?, ?), (?, ?), (?, ?)"
    assert multirow.statement(UPSERT, 2) == ("INSERT INTO totals (k, n) VALUES (?, ?), (?, ?)"
                                             " ON CONFLICT (k) DO UPDATE SET n = n + excluded.n")
    with pytest.raises(ValueError):
        multirow.statement("UPDATE t SET v = ? WHERE k = ?", 2)


@pytest.mark.parametrize("count", [1, 2, 5, multirow.MAX_ROWS, multirow.MAX_ROWS + 1, 40, 1000, 1537])
def test_rows_are_those_of_executemany_and_the_last_statement_tells_the_last_rowid(conn, count):
    rng = random.Random(count)
    rows = [(rng.randint(0, 5), f"v{i}") for i in range(count)]
    conn.execute("INSERT INTO t (k, v) VALUES (0, 'before')")
    last = multirow.write(conn, INSERT, rows)
    stored = conn.execute("SELECT seq, k, v FROM t WHERE seq > 1 ORDER BY seq").fetchall()
    assert stored == [(seq, k, v) for seq, (k, v) in enumerate(rows, 2)]  # in their order, one seq each
    assert last == count + 1


@pytest.mark.parametrize("count", [2, 7, multirow.MAX_ROWS, 30, 700])
def test_on_conflict_applies_to_each_row_as_one_at_a_time(conn, count):
    rng = random.Random(count)
    rows = [(rng.randint(0, 3), rng.randint(1, 9)) for _ in range(count)]  # repeated keys within one statement
    multirow.write(conn, UPSERT, rows)
    expected = {}
    for k, n in rows:
        expected[k] = expected.get(k, 0) + n
    assert dict(conn.execute("SELECT k, n FROM totals")) == expected


def test_no_rows_write_nothing(conn):
    assert multirow.write(conn, INSERT, []) is None
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_statement_sizes_cover_the_rows_with_few_statements_of_kept_sizes():
    assert multirow.sizes(1000, 10, 32766) == [512, 256, 128, 64, 32, 8]
    assert multirow.sizes(17, 10, 32766) == [16, 1]
    assert multirow.sizes(7, 10, 32766) == [7]
    for count in range(1, 2100, 7):
        sizes = multirow.sizes(count, 12, 32766)
        assert sum(sizes) == count
        # only the chunk sizes, and at most one smaller statement at the end
        assert all(size in multirow.CHUNKS for size in sizes[:-1])
        assert len(sizes) <= count // 512 + len(multirow.CHUNKS)


@pytest.mark.parametrize("limit", [40, 100, 999])
def test_no_statement_binds_more_parameters_than_sqlite_allows(conn, limit):
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)
    assert conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) == limit
    rows = [(i % 7, f"v{i}") for i in range(300)]
    last = multirow.write(conn, INSERT, rows)  # SQLite refuses a statement over the limit
    assert conn.execute("SELECT k, v FROM t ORDER BY seq").fetchall() == rows
    assert last == 300
    assert all(size * 2 <= limit for size in multirow.sizes(300, 2, limit))


def test_a_rows_width_is_the_statements_parameter_count():
    assert multirow.width(INSERT) == 2
    assert multirow.width("INSERT INTO t (a, b, late) VALUES (?, ?, 1)") == 2  # a literal binds nothing
    assert multirow.width(UPSERT) == 2
