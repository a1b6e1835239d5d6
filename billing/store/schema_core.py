"""The first migrations (§3): the foundation (users, customers, meters, events,
invoices, the audit log), plans and subscriptions, and the invoice lifecycle.

Append-only: a migration that shipped is never edited; new ones go to
schema_features.py. Instants are integer microseconds since the Unix epoch
(UTC); money integer minor units; quantities integer millionths.
"""

V1_FOUNDATION = [
    """CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        email TEXT NOT NULL UNIQUE COLLATE NOCASE,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0)""",
    # AUTOINCREMENT: a deleted customer's id is never given to a new one
    """CREATE TABLE customers (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        external_id TEXT UNIQUE,
        name TEXT NOT NULL,
        email TEXT NOT NULL UNIQUE COLLATE NOCASE,
        timezone TEXT NOT NULL DEFAULT 'UTC',
        currency TEXT NOT NULL DEFAULT 'USD',
        billing_email TEXT,
        billing_address TEXT,
        tax_rate TEXT NOT NULL DEFAULT '0',
        net_terms_days INTEGER NOT NULL DEFAULT 30,
        requires_approval INTEGER NOT NULL DEFAULT 0,
        csm_user_id INTEGER REFERENCES users(id),
        budget TEXT,
        storage_quota_bytes INTEGER,
        contract_start TEXT,
        contract_end TEXT,
        metadata TEXT NOT NULL DEFAULT '{}',
        archived INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL)""",
    """CREATE TABLE api_keys (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT,
        customer_id INTEGER REFERENCES customers(id),
        prefix TEXT NOT NULL,
        digest TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        created_by TEXT,
        revoked_at INTEGER,
        CHECK ((role IS NULL) != (customer_id IS NULL)))""",
    """CREATE TABLE auth_sessions (
        id INTEGER PRIMARY KEY,
        digest TEXT NOT NULL UNIQUE,
        user_id INTEGER NOT NULL REFERENCES users(id),
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        revoked_at INTEGER)""",
    """CREATE TABLE meters (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        unit TEXT NOT NULL DEFAULT 'unit',
        aggregation TEXT NOT NULL,
        value_property TEXT,
        filter TEXT,
        group_by TEXT NOT NULL DEFAULT '[]',
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL)""",
    # Events carry no FOREIGN KEY clauses: ingest validates customer and meter
    # against the cache first, and the per-row FK probes cost ingest throughput.
    # `value` is what the meter aggregates: integer micros, or for unique_count
    # the JSON text of the property value. `matched` records the meter filter,
    # which cannot change once a meter has events.
    # Deduplication: `id_hash` is a 64-bit hash of (customer_id, event_id). Its
    # index holds 8-byte keys instead of the id text, so the one index that new
    # random ids hit at random places stays small enough to live in the page
    # cache (about twice the insert rate of a unique text index at 1 M rows).
    # It is not unique: ingest compares the real ids of any hash match, so a hash
    # collision can never drop an event. (Migrations 13 and 15 replace the
    # indexes made here: events are indexed by time only — since migration 22
    # by their 15-minute bucket, billing/store/event_time.py — and the hashes
    # live in the dedup index of billing/store/event_ids.py, since migration
    # 21 its tail and runs.)
    """CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        customer_id INTEGER NOT NULL,
        event_id TEXT NOT NULL,
        meter_id INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        quantity INTEGER NOT NULL,
        value,
        matched INTEGER NOT NULL,
        properties TEXT,
        late INTEGER NOT NULL DEFAULT 0,
        received_at INTEGER NOT NULL,
        id_hash INTEGER NOT NULL)""",
    "CREATE INDEX events_dedup ON events(id_hash)",
    # covering: usage and the invoice run read (ts, matched, value) from the index
    # alone, never the table rows, so a period costs its own events only
    "CREATE INDEX events_usage ON events(customer_id, meter_id, ts, matched, value)",
    "CREATE INDEX events_time ON events(ts)",
    """CREATE TABLE retracted_events (
        id INTEGER PRIMARY KEY,
        seq INTEGER NOT NULL,
        customer_id INTEGER NOT NULL,
        event_id TEXT NOT NULL,
        meter_id INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        quantity INTEGER NOT NULL,
        properties TEXT,
        retracted_at INTEGER NOT NULL,
        retracted_by TEXT NOT NULL)""",
    """CREATE TABLE idempotency_keys (
        actor TEXT NOT NULL,
        key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        status INTEGER NOT NULL,
        response TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (actor, key))""",
    """CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        role TEXT,
        action TEXT NOT NULL,
        entity TEXT NOT NULL,
        entity_id TEXT,
        before TEXT,
        after TEXT,
        request_id TEXT)""",
    "CREATE INDEX audit_log_entity ON audit_log(entity, entity_id)",
]

V2_PLANS = [
    # Prices inside `charges` are exact decimal strings; base fee and
    # commitment are integer minor units of the plan's currency.
    """CREATE TABLE plans (
        id INTEGER PRIMARY KEY,
        code TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        description TEXT,
        currency TEXT NOT NULL,
        interval TEXT NOT NULL DEFAULT 'month',
        base_fee INTEGER NOT NULL DEFAULT 0,
        minimum_commitment INTEGER NOT NULL DEFAULT 0,
        trial_days INTEGER NOT NULL DEFAULT 0,
        charges TEXT NOT NULL DEFAULT '[]',
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL)""",
    """CREATE TABLE subscriptions (
        id INTEGER PRIMARY KEY,
        customer_id INTEGER NOT NULL REFERENCES customers(id),
        plan_id INTEGER NOT NULL REFERENCES plans(id),
        status TEXT NOT NULL,
        start_date TEXT NOT NULL,
        end_date TEXT,
        billing_anchor TEXT NOT NULL,
        anchor_date TEXT NOT NULL,
        overrides TEXT NOT NULL DEFAULT '{}',
        coupon TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL)""",
    # one active subscription per customer, enforced by the database itself
    "CREATE UNIQUE INDEX subscriptions_one_active ON subscriptions(customer_id) WHERE status = 'active'",
    "CREATE INDEX subscriptions_plan ON subscriptions(plan_id)",
    """CREATE TABLE coupons (
        id INTEGER PRIMARY KEY,
        code TEXT NOT NULL UNIQUE,
        name TEXT,
        percent_off TEXT,
        amount_off INTEGER,
        currency TEXT,
        duration TEXT NOT NULL,
        periods INTEGER,
        created_at INTEGER NOT NULL,
        CHECK ((percent_off IS NULL) != (amount_off IS NULL)))""",
    # The prepaid credit ledger: positive entries grant, negative ones spend.
    """CREATE TABLE credit_entries (
        id INTEGER PRIMARY KEY,
        customer_id INTEGER NOT NULL REFERENCES customers(id),
        amount INTEGER NOT NULL,
        currency TEXT NOT NULL,
        reason TEXT,
        invoice_id INTEGER,
        created_by TEXT,
        created_at INTEGER NOT NULL)""",
    "CREATE INDEX credit_entries_customer ON credit_entries(customer_id, id)",
    # Invoices: amounts in minor units; the period as UTC instants and as the
    # customer's local dates. One invoice per (subscription, period, revision):
    # the database itself refuses a second draft for a period, whatever races.
    """CREATE TABLE invoices (
        id INTEGER PRIMARY KEY,
        number TEXT UNIQUE,
        customer_id INTEGER NOT NULL REFERENCES customers(id),
        subscription_id INTEGER REFERENCES subscriptions(id),
        status TEXT NOT NULL,
        payment_status TEXT NOT NULL DEFAULT 'unpaid',
        currency TEXT NOT NULL,
        period_start INTEGER NOT NULL,
        period_end INTEGER NOT NULL,
        period_start_date TEXT NOT NULL,
        period_end_date TEXT NOT NULL,
        revision INTEGER NOT NULL DEFAULT 0,
        subtotal INTEGER NOT NULL,
        discount INTEGER NOT NULL,
        tax INTEGER NOT NULL,
        total INTEGER NOT NULL,
        credits_applied INTEGER NOT NULL,
        amount_due INTEGER NOT NULL,
        amount_paid INTEGER NOT NULL DEFAULT 0,
        issued_at INTEGER,
        due_at INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL)""",
    "CREATE UNIQUE INDEX invoices_one_per_period ON invoices(subscription_id, period_start_date, revision)",
    "CREATE INDEX invoices_customer ON invoices(customer_id, id)",
    """CREATE TABLE invoice_lines (
        id INTEGER PRIMARY KEY,
        invoice_id INTEGER NOT NULL REFERENCES invoices(id),
        position INTEGER NOT NULL,
        type TEXT NOT NULL,
        description TEXT NOT NULL,
        meter TEXT,
        quantity TEXT,
        unit_price TEXT,
        amount INTEGER NOT NULL,
        tiers TEXT NOT NULL DEFAULT '[]')""",
    "CREATE INDEX invoice_lines_invoice ON invoice_lines(invoice_id, position)",
]

# The invoice lifecycle (§7, §10): approvals and their history, payments,
# gapless numbers, late-event adjustments, the scheduler's jobs, webhooks and
# the e-mail outbox.
V3_LIFECYCLE = [
    # hold = 1: rejected back to draft; the scheduler leaves it until someone finalizes it
    "ALTER TABLE invoices ADD COLUMN hold INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE invoices ADD COLUMN void_reason TEXT",
    "ALTER TABLE invoices ADD COLUMN voided_at INTEGER",
    # who the invoice was addressed to when issued (name, e-mails, address), kept as issued
    "ALTER TABLE invoices ADD COLUMN bill_to TEXT",
    "CREATE INDEX invoices_status ON invoices(status, period_end)",
    # an adjustment line names the period it corrects: (subscription, local start date)
    "ALTER TABLE invoice_lines ADD COLUMN adjusts_subscription_id INTEGER",
    "ALTER TABLE invoice_lines ADD COLUMN adjusts_period TEXT",
    "CREATE INDEX invoice_lines_adjusts ON invoice_lines(adjusts_subscription_id, adjusts_period)"
    " WHERE adjusts_subscription_id IS NOT NULL",
    # late events are rare: a partial index finds them without slowing ordinary inserts
    "CREATE INDEX events_late ON events(customer_id, ts) WHERE late = 1",
    """CREATE TABLE counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL)""",
    "INSERT INTO counters (name, value) VALUES ('invoice_number', 0)",
    """CREATE TABLE invoice_actions (
        id INTEGER PRIMARY KEY,
        invoice_id INTEGER NOT NULL REFERENCES invoices(id),
        action TEXT NOT NULL,
        from_status TEXT,
        to_status TEXT,
        actor TEXT NOT NULL,
        actor_name TEXT,
        role TEXT NOT NULL,
        comment TEXT,
        created_at INTEGER NOT NULL)""",
    "CREATE INDEX invoice_actions_invoice ON invoice_actions(invoice_id, id)",
    """CREATE TABLE payments (
        id INTEGER PRIMARY KEY,
        invoice_id INTEGER NOT NULL REFERENCES invoices(id),
        amount INTEGER NOT NULL CHECK (amount > 0),
        currency TEXT NOT NULL,
        method TEXT,
        reference TEXT,
        created_by TEXT NOT NULL,
        created_at INTEGER NOT NULL)""",
    "CREATE INDEX payments_invoice ON payments(invoice_id, id)",
    """CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        finished_at INTEGER,
        outcome TEXT NOT NULL,
        details TEXT NOT NULL DEFAULT '{}')""",
    """CREATE TABLE webhooks (
        id INTEGER PRIMARY KEY,
        url TEXT NOT NULL,
        events TEXT NOT NULL,
        secret TEXT NOT NULL,
        description TEXT,
        created_at INTEGER NOT NULL,
        deleted_at INTEGER)""",
    """CREATE TABLE webhook_deliveries (
        id INTEGER PRIMARY KEY,
        webhook_id INTEGER NOT NULL REFERENCES webhooks(id),
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER,
        last_status_code INTEGER,
        last_error TEXT,
        created_at INTEGER NOT NULL,
        delivered_at INTEGER)""",
    "CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at) WHERE status = 'pending'",
    "CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries(webhook_id, id)",
    """CREATE TABLE webhook_attempts (
        id INTEGER PRIMARY KEY,
        delivery_id INTEGER NOT NULL REFERENCES webhook_deliveries(id),
        attempted_at INTEGER NOT NULL,
        status_code INTEGER,
        response TEXT,
        error TEXT,
        duration_ms INTEGER NOT NULL)""",
    "CREATE INDEX webhook_attempts_delivery ON webhook_attempts(delivery_id, id)",
    """CREATE TABLE emails (
        id INTEGER PRIMARY KEY,
        invoice_id INTEGER REFERENCES invoices(id),
        recipient TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER,
        last_error TEXT,
        delivered_to TEXT,
        created_at INTEGER NOT NULL,
        sent_at INTEGER)""",
    "CREATE INDEX emails_due ON emails(next_attempt_at) WHERE status = 'pending'",
]
