"""The rows the rating of an invoice reads — a customer, a plan, a
subscription — as sqlite3.Row: read by column name here, and still by
position where subscriptions.rate_period reads them."""

from .. import jsonutil
from ..store.db import named
from . import customers as customers_api
from . import plans as plans_api
from . import subscriptions as subscriptions_api


def customer(conn, customer_id):
    return named(conn, f"SELECT {customers_api.COLUMNS} FROM customers WHERE id = ?", (customer_id,)).fetchone()


def plan(conn, plan_id):
    return named(conn, f"SELECT {plans_api.COLUMNS} FROM plans WHERE id = ?", (plan_id,)).fetchone()


def plans(conn):
    """{plan id: row} of every plan."""
    return {row["id"]: row for row in named(conn, f"SELECT {plans_api.COLUMNS} FROM plans")}


def subscription(conn, subscription_id):
    return named(conn, f"SELECT {subscriptions_api.COLUMNS} FROM {subscriptions_api.FROM} WHERE s.id = ?",
                 (subscription_id,)).fetchone()


def subscriptions(conn):
    """Every subscription row, in id order."""
    return named(conn, f"SELECT {subscriptions_api.COLUMNS} FROM {subscriptions_api.FROM} ORDER BY s.id").fetchall()


def subscribers(conn):
    """{customer id: row} of every customer with a subscription."""
    return {row["id"]: row for row in named(
        conn, f"SELECT {customers_api.COLUMNS} FROM customers WHERE id IN (SELECT customer_id FROM subscriptions)")}


def balances(conn, customer_ids):
    """{customer id: credit balance in minor units} of the given customers (as coupons.balance gives it)."""
    found = {customer_id: 0 for customer_id in customer_ids}
    found.update((row["customer_id"], row["balance"]) for row in named(
        conn, "SELECT customer_id, sum(amount) AS balance FROM credit_entries WHERE customer_id IN"
              " (SELECT value FROM json_each(?)) GROUP BY customer_id", (jsonutil.encode(customer_ids),)))
    return found
