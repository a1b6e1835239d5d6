"""The migration of archived raw events (§13 "Raw event retention",
billing/store/archive.py).

Append-only, like schema_features.py: a migration that shipped is never edited.
"""

# `archived_events`: the archived events whose ids must still be recognised as
# sent (their timestamp within the lateness window, BILLING_MAX_EVENT_AGE_DAYS),
# by seq — the dedup entries (event_ids) keep pointing at their seqs — with the
# columns a duplicate's reply shows; pruned once the window has passed.
# `archived_buckets`: every (customer, meter, 15-minute bucket) with archived
# events, so a range edge inside one of them (which would read raw events) is
# refused instead of answered short, and a meter with archived events keeps
# its group_by keys (regrouping reads raw events).
V19_ARCHIVE = [
    """CREATE TABLE archived_events (
        seq INTEGER PRIMARY KEY,
        customer_id INTEGER NOT NULL,
        event_id TEXT NOT NULL,
        meter_id INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        quantity INTEGER NOT NULL,
        properties TEXT,
        late INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        id_hash INTEGER NOT NULL)""",
    "CREATE INDEX archived_events_ts ON archived_events(ts)",
    """CREATE TABLE archived_buckets (
        customer_id INTEGER NOT NULL,
        meter_id INTEGER NOT NULL,
        bucket INTEGER NOT NULL,
        PRIMARY KEY (customer_id, meter_id, bucket)) WITHOUT ROWID""",
    "CREATE INDEX archived_buckets_meter ON archived_buckets(meter_id, bucket)",
]
