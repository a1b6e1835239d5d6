"""An invoice's history (`invoice_actions`): who moved it from which status to
which, when, and why. Written by the invoice run (creation) and by every
lifecycle action, in the same transaction as the change.

The same actions go to the audit log (§9) with the invoice's status and
totals before and after (amounts as decimal strings): entity `invoice`,
action `invoice.<action>`; payments also as entity `payment`; invoice runs as
entity `invoice_run` (its `as_of`). The scheduler's entries are by `system`."""

from typing import NamedTuple

from ..domain import times
from . import auth
from .common import audit, now_micros

# what the audit log keeps of an invoice (its JSON): status and totals, never floats
SUMMARY = ("number", "status", "payment_status", "total", "credits_applied", "amount_due", "amount_paid",
           "balance_due")


class System:
    """The scheduler as an actor in invoice histories."""
    label, name, role, user_id = "scheduler", "Scheduler", auth.SYSTEM, None


class Origin(NamedTuple):
    """What common.audit reads of a request: the actor (None: the scheduler,
    logged as "system") and the request id (None outside a request)."""
    actor: object
    request_id: object = None


def record(conn, invoice_id, action, from_status, to_status, actor, comment=None):
    actor = actor or System
    conn.execute("INSERT INTO invoice_actions (invoice_id, action, from_status, to_status, actor, actor_name,"
                 " role, comment, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (invoice_id, action, from_status, to_status, actor.label, getattr(actor, "name", None) or None,
                  actor.role, comment, now_micros()))


def summary(invoice, **extra):
    """An invoice (its JSON) as the audit log keeps it, with `extra` fields."""
    return {name: invoice[name] for name in SUMMARY} | extra


def audit_invoice(conn, actor, action, invoice_id, before, after, request_id=None):
    """An invoice action in the audit log (inside the action's transaction);
    `before` and `after` are summaries (or None)."""
    audit(conn, Origin(actor, request_id), f"invoice.{action}", "invoice", invoice_id, before, after)


def audit_payment(conn, actor, payment, before, after, request_id=None):
    """A payment: on the invoice (its status and totals) and as the payment itself."""
    audit_invoice(conn, actor, "payment", payment["invoice_id"], before, after | {"payment_id": payment["id"]},
                  request_id)
    audit(conn, Origin(actor, request_id), "payment.create", "payment", payment["id"], None, payment)


def audit_run(conn, actor, as_of, created, request_id=None):
    """An invoice run: the drafts it made. The scheduler's runs that made
    nothing changed nothing and are not logged."""
    if actor is None and not created:
        return
    audit(conn, Origin(actor, request_id), "invoice_run.run", "invoice_run", times.format_instant(as_of), None,
          {"as_of": times.format_instant(as_of), "created": len(created), "invoice_ids": list(created)})
