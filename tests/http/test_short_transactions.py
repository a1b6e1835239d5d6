"""No stalls behind the scheduler's other writers (§12): storage day-close
and alert evaluation write in short transactions, each changing a bounded
number of rows however much they have to write (rows are counted, not time)."""

from billing import clock
from billing.api import alert_eval
from billing.api.storage import DAYS_PER_TRANSACTION
from billing.store import rollups
from tests.harness import make_key
from tests.helpers import at
from tests.http.helpers import RowsPerTransaction, create_customer
from tests.http.test_alerts import billed, evaluate, firings, send  # noqa: F401  (billed: a fixture)
from tests.http.test_storage_metering import day_events, put, run_jobs


def test_a_long_storage_catch_up_closes_a_month_of_days_per_transaction(server):
    """100 days without a scheduler run: 100 day events, at most
    DAYS_PER_TRANSACTION in each transaction."""
    customer = create_customer(server.admin, name="Tenant", timezone="Asia/Kathmandu")
    client = server.client(make_key(server, customer_id=customer["id"]))
    clock.pin(at("2025-06-01T00:00:00Z"))
    put(client, "kept.bin", 10 ** 7)
    clock.pin(at("2025-09-09T00:00:00Z"))
    with RowsPerTransaction(server) as counts:
        assert run_jobs(server.admin)["storage_days_closed"] == 100
    # per day an event, its hot rollup and its bucket's count (its dedup entry comes with a later
    # settling pass); the customer's span; the closed-through mark
    month = 3 * DAYS_PER_TRANSACTION + 2
    assert sorted(c for c in counts if c <= month)[-4:] == [3 * 7 + 2, month, month, month]
    # the run also settles hot rollups (billing/ops/settler.py): a bounded chunk per transaction
    assert max(counts) <= 4 * rollups.SETTLE_CHUNK
    assert len(day_events(server, customer["id"])) == 100


def test_many_rules_crossed_at_once_fire_in_short_transactions(server, admin, billed):
    """70 spend rules for every customer and a budget step, all crossed by one
    customer in one evaluation: 71 firings (each a firing and a notification,
    the budget's an e-mail too), at most FIRINGS_PER_TRANSACTION per
    transaction; each fired once."""
    customer = billed
    for n in range(70):
        assert admin.post("/v1/alerts", {"type": "spend", "currency": "USD", "threshold": f"{n + 1}.00"}).status == 201
    send(admin, customer["id"], 75, "2026-11-05T00:00:00Z")
    with RowsPerTransaction(server) as counts:
        assert evaluate(admin)["fired"] == 71
    per_firing = 3  # a firing, its notification, an e-mail (no webhook subscribed)
    assert sum(counts) >= 71 * 2 and max(counts) <= alert_eval.FIRINGS_PER_TRANSACTION * per_firing, counts
    assert len(firings(admin)) == 71
    assert evaluate(admin)["fired"] == 0
