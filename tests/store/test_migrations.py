import sqlite3

import pytest

from billing.store import migrations
from billing.store.db import Database, connect


def _schema(path):
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        return rows, version
    finally:
        conn.close()


def test_empty_to_latest(tmp_path):
    path = str(tmp_path / "a.db")
    db = Database(path)
    db.close()
    rows, version = _schema(path)
    assert version == len(migrations.MIGRATIONS)
    names = {r[1] for r in rows}
    assert {"users", "customers", "meters", "events", "api_keys", "audit_log"} <= names


def test_second_run_is_a_noop(tmp_path):
    path = str(tmp_path / "a.db")
    Database(path).close()
    before = _schema(path)
    conn = connect(path)
    assert migrations.migrate(conn) == []
    conn.close()
    assert _schema(path) == before


def test_failing_migration_leaves_database_as_it_was(tmp_path):
    path = str(tmp_path / "a.db")
    Database(path).close()
    conn = connect(path)
    conn.execute("INSERT INTO meters (key, name, aggregation, created_at, updated_at)"
                 " VALUES ('m', 'M', 'sum', 0, 0)")
    before = _schema(path)
    broken = migrations.MIGRATIONS + [[
        "CREATE TABLE half_done (id INTEGER PRIMARY KEY)",
        "ALTER TABLE meters ADD COLUMN note TEXT",
        "INSERT INTO meters (key, name, aggregation, created_at, updated_at) VALUES ('n', 'N', 'sum', 0, 0)",
        "THIS IS NOT SQL",
    ]]
    with pytest.raises(migrations.MigrationError, match=f"migration {len(broken)} failed"):
        migrations.migrate(conn, broken)
    conn.close()
    assert _schema(path) == before
    check = sqlite3.connect(path)
    assert check.execute("SELECT key FROM meters").fetchall() == [("m",)]
    check.close()


def test_newer_database_is_refused(tmp_path):
    path = str(tmp_path / "a.db")
    Database(path).close()
    conn = connect(path)
    conn.execute(f"PRAGMA user_version = {len(migrations.MIGRATIONS) + 5}")
    with pytest.raises(migrations.MigrationError, match="newer"):
        migrations.migrate(conn)
    conn.close()


def test_connections_are_configured(tmp_path):
    db = Database(str(tmp_path / "a.db"))
    with db.reader() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    db.close()


def test_transaction_rolls_back_on_error(tmp_path):
    db = Database(str(tmp_path / "a.db"))
    with pytest.raises(RuntimeError):
        with db.transaction() as conn:
            conn.execute("INSERT INTO meters (key, name, aggregation, created_at, updated_at)"
                         " VALUES ('m', 'M', 'sum', 0, 0)")
            raise RuntimeError("boom")
    assert db.query("SELECT key FROM meters") == []
    db.close()


def test_a_version_2_database_with_invoices_moves_to_the_lifecycle_schema(tmp_path):
    """A database written before the invoice lifecycle keeps its rows: drafts
    stay drafts (not on hold), numbering starts at 1, events are not late."""
    path = str(tmp_path / "v2.db")
    conn = connect(path, writer=True)
    assert migrations.migrate(conn, migrations.MIGRATIONS[:2]) == [1, 2]
    conn.execute("INSERT INTO customers (id, name, email, created_at, updated_at) VALUES (1, 'Old', 'o@x', 0, 0)")
    conn.execute("INSERT INTO invoices (customer_id, status, currency, period_start, period_end, period_start_date,"
                 " period_end_date, subtotal, discount, tax, total, credits_applied, amount_due, created_at,"
                 " updated_at) VALUES (1, 'draft', 'USD', 0, 1, '2025-09-01', '2025-10-01', 5, 0, 0, 5, 0, 5, 0, 0)")
    conn.execute("INSERT INTO invoice_lines (invoice_id, position, type, description, amount)"
                 " VALUES (1, 0, 'usage', 'x', 5)")
    conn.close()
    db = Database(path)
    try:
        assert db.query("SELECT status, hold, void_reason FROM invoices") == [("draft", 0, None)]
        assert db.query("SELECT adjusts_subscription_id FROM invoice_lines") == [(None,)]
        assert db.query("SELECT value FROM counters WHERE name = 'invoice_number'") == [(0,)]
    finally:
        db.close()
    assert _schema(path)[1] == len(migrations.MIGRATIONS)
