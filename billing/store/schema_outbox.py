"""The migration of the ClickHouse outbox (§13, billing/store/outbox.py).

Append-only, like schema_features.py: a migration that shipped is never edited.
"""

# One row of two cursors (events shipped up to a seq, retractions up to an
# id), made once ClickHouse is configured. The trigger keeps shipping right
# when SQLite reuses the seq of a deleted newest event (outbox.py explains).
V18_CLICKHOUSE_OUTBOX = [
    """CREATE TABLE clickhouse_outbox (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        target TEXT NOT NULL,
        shipped_seq INTEGER NOT NULL,
        shipped_retraction INTEGER NOT NULL,
        shipped_at INTEGER)""",
    # an event deleted at or below the cursor that was the newest: the next seqs are reused
    """CREATE TRIGGER clickhouse_outbox_reuse AFTER DELETE ON events
        WHEN old.seq <= (SELECT shipped_seq FROM clickhouse_outbox WHERE id = 1)
         AND old.seq > (SELECT coalesce(max(seq), 0) FROM events)
        BEGIN
            UPDATE clickhouse_outbox SET shipped_seq = (SELECT coalesce(max(seq), 0) FROM events) WHERE id = 1;
        END""",
    # the generation of an id: how often it was retracted
    "CREATE INDEX retracted_events_id ON retracted_events(customer_id, event_id)",
]
