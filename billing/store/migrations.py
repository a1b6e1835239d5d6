"""Schema migrations, append-only, tracked with PRAGMA user_version.

Each migration is a list of statements applied in one transaction together with
the version bump, so a failing migration leaves the database exactly as it was.
Instants are stored as integer microseconds since the Unix epoch (UTC); money as
integer minor units; quantities as integer millionths.
"""

import sqlite3

from .schema_archive import V19_ARCHIVE
from .schema_core import V1_FOUNDATION, V2_PLANS, V3_LIFECYCLE
from .schema_features import (V4_RESOURCES, V5_STORAGE, V6_ANALYTICS, V7_REVENUE_LOG, V8_ALERTS,
                              V9_SUBSCRIPTION_LOOKUP, V10_NO_PLAIN_SECRETS, V11_INVOICE_APPROVAL,
                              V12_ROLLUPS, V13_EVENTS_BY_TIME, V14_HOT_ROLLUPS,
                              V15_EVENT_IDS, V16_REGROUPS, V17_DAY_ROLLUPS,
                              V20_EVENT_COUNTS, V21_EVENT_ID_RUNS, V22_EVENTS_BY_BUCKET)
from .schema_outbox import V18_CLICKHOUSE_OUTBOX

MIGRATIONS = [V1_FOUNDATION, V2_PLANS, V3_LIFECYCLE, V4_RESOURCES, V5_STORAGE, V6_ANALYTICS, V7_REVENUE_LOG,
              V8_ALERTS, V9_SUBSCRIPTION_LOOKUP, V10_NO_PLAIN_SECRETS, V11_INVOICE_APPROVAL, V12_ROLLUPS,
              V13_EVENTS_BY_TIME, V14_HOT_ROLLUPS, V15_EVENT_IDS, V16_REGROUPS, V17_DAY_ROLLUPS,
              V18_CLICKHOUSE_OUTBOX, V19_ARCHIVE, V20_EVENT_COUNTS, V21_EVENT_ID_RUNS,
              V22_EVENTS_BY_BUCKET]


class MigrationError(RuntimeError):
    pass


def current_version(conn):
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn, migrations=None):
    """Bring the schema to the latest version; returns the versions applied."""
    migrations = MIGRATIONS if migrations is None else migrations
    applied = []
    version = current_version(conn)
    if version > len(migrations):
        raise MigrationError(
            f"database schema version {version} is newer than this program ({len(migrations)})")
    for number, statements in enumerate(migrations[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                if callable(statement):
                    statement(conn)
                else:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {int(number)}")
        except BaseException as exc:
            conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise MigrationError(f"migration {number} failed: {exc}") from exc
            raise
        conn.execute("COMMIT")
        applied.append(number)
    return applied
