"""An invoice's history (`invoice_actions`): who moved it from which status to
which, when, and why. Written by the invoice run (creation) and by every
lifecycle action, in the same transaction as the change."""

from . import auth
from .common import now_micros


class System:
    """The scheduler as an actor in invoice histories."""
    label, name, role, user_id = "scheduler", "Scheduler", auth.SYSTEM, None


def record(conn, invoice_id, action, from_status, to_status, actor, comment=None):
    actor = actor or System
    conn.execute("INSERT INTO invoice_actions (invoice_id, action, from_status, to_status, actor, actor_name,"
                 " role, comment, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (invoice_id, action, from_status, to_status, actor.label, getattr(actor, "name", None) or None,
                  actor.role, comment, now_micros()))
