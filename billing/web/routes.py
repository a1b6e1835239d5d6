"""The route table: method, path pattern, handler, and the roles allowed.

Read it top to bottom; `None` as roles means no authentication at all.
"""

from ..api import (alerts, analytics, audit_log, coupons, customers, estimates, events, exports, health, invoices, jobs,
                   lifecycle, meters, notifications, objects, plans, recommendations, resources, revenue, sessions,
                   subscriptions, usage, users, webhooks)
from ..api.auth import (ADMIN_ONLY, ANY_SIGNED_IN, CUSTOMER_READ, EVENT_WRITE, OBJECT_WRITE, STAFF_READ,
                        STAFF_WRITE, USER_ADMINS, login, logout, me)
from . import metrics, static, stream
from .http import streaming

ID = r"(?P<{}>\d+)"
CUSTOMER = ID.format("customer_id")
INVOICE = ID.format("invoice_id")
WEBHOOK = ID.format("webhook_id")
RESOURCE = ID.format("resource_id")

ROUTES = [
    # dashboard and health
    ("GET", r"/", static.index, None),
    ("GET", r"/static/(?P<path>[A-Za-z0-9_./-]+)", static.asset, None),
    ("GET", r"/health", health.health, None),
    # Prometheus text; staff credentials unless BILLING_METRICS_PUBLIC=1 (checked by the handler)
    ("GET", r"/metrics", metrics.scrape, None),
    # auth
    ("POST", r"/v1/auth/login", login, None),
    ("POST", r"/v1/auth/logout", logout, ANY_SIGNED_IN),
    ("GET", r"/v1/auth/me", me, ANY_SIGNED_IN),
    # users and API keys
    # (finance manages customer users only: checked by the handlers)
    ("POST", r"/v1/users", users.create_user, USER_ADMINS),
    ("GET", r"/v1/users", users.list_users, USER_ADMINS),
    ("GET", r"/v1/users/" + ID.format("user_id"), users.get_user, USER_ADMINS),
    ("PATCH", r"/v1/users/" + ID.format("user_id"), users.update_user, USER_ADMINS),
    ("DELETE", r"/v1/users/" + ID.format("user_id"), users.delete_user, USER_ADMINS),
    ("POST", r"/v1/api-keys", users.create_key, ADMIN_ONLY),
    ("GET", r"/v1/api-keys", users.list_keys, ADMIN_ONLY),
    ("DELETE", r"/v1/api-keys/" + ID.format("key_id"), users.revoke_key, ADMIN_ONLY),
    # customers
    ("POST", r"/v1/customers", customers.create, STAFF_WRITE),
    ("GET", r"/v1/customers", customers.list_customers, CUSTOMER_READ),
    ("GET", r"/v1/customers/" + CUSTOMER, customers.get, CUSTOMER_READ),
    ("PATCH", r"/v1/customers/" + CUSTOMER, customers.update, STAFF_WRITE),
    ("DELETE", r"/v1/customers/" + CUSTOMER, customers.delete, STAFF_WRITE),
    ("GET", r"/v1/customers/" + CUSTOMER + r"/usage", usage.get_usage, CUSTOMER_READ),
    ("DELETE", r"/v1/customers/" + CUSTOMER + r"/events/(?P<event_id>[^/]+)", events.retract, ADMIN_ONLY),
    # meters
    ("POST", r"/v1/meters", meters.create, ADMIN_ONLY),
    ("GET", r"/v1/meters", meters.list_meters, CUSTOMER_READ),
    ("GET", r"/v1/meters/(?P<key>[^/]+)", meters.get, CUSTOMER_READ),
    ("PATCH", r"/v1/meters/(?P<key>[^/]+)", meters.update, ADMIN_ONLY),
    # plans
    ("POST", r"/v1/plans", plans.create, STAFF_WRITE),
    ("GET", r"/v1/plans", plans.list_plans, STAFF_READ),
    ("GET", r"/v1/plans/(?P<code>[^/]+)", plans.get, STAFF_READ),
    ("PATCH", r"/v1/plans/(?P<code>[^/]+)", plans.update, STAFF_WRITE),
    # coupons and credits
    ("POST", r"/v1/coupons", coupons.create, STAFF_WRITE),
    ("GET", r"/v1/coupons", coupons.list_coupons, STAFF_READ),
    ("POST", r"/v1/customers/" + CUSTOMER + r"/credits", coupons.grant_credit, STAFF_WRITE),
    ("GET", r"/v1/customers/" + CUSTOMER + r"/credits", coupons.list_credits, CUSTOMER_READ),
    # subscriptions and estimates
    ("POST", r"/v1/subscriptions", subscriptions.create, STAFF_WRITE),
    ("GET", r"/v1/subscriptions", subscriptions.list_subscriptions, CUSTOMER_READ),
    ("GET", r"/v1/subscriptions/" + ID.format("subscription_id"), subscriptions.get, CUSTOMER_READ),
    ("POST", r"/v1/subscriptions/" + ID.format("subscription_id") + r"/cancel", subscriptions.cancel, STAFF_WRITE),
    ("POST", r"/v1/subscriptions/" + ID.format("subscription_id") + r"/change-plan", subscriptions.change_plan,
     STAFF_WRITE),
    ("GET", r"/v1/customers/" + CUSTOMER + r"/upcoming-invoice", estimates.upcoming_invoice, CUSTOMER_READ),
    ("POST", r"/v1/estimate", estimates.estimate, STAFF_READ + ("customer",)),
    ("GET", r"/v1/customers/" + CUSTOMER + r"/usage\.csv", exports.usage_csv, CUSTOMER_READ),
    # invoices: the run, reading, exports and the lifecycle (approvers are checked by the handler)
    ("POST", r"/v1/invoices/run", invoices.run, STAFF_WRITE),
    ("GET", r"/v1/invoices", invoices.list_invoices, CUSTOMER_READ),
    ("GET", r"/v1/invoices\.csv", exports.invoices_csv, CUSTOMER_READ),
    ("GET", r"/v1/invoices/" + INVOICE, invoices.get, CUSTOMER_READ),
    ("GET", r"/v1/invoices/" + INVOICE + r"\.pdf", exports.invoice_as_pdf, CUSTOMER_READ),
    ("POST", r"/v1/invoices/" + INVOICE + r"/finalize", lifecycle.finalize, STAFF_WRITE),
    ("POST", r"/v1/invoices/" + INVOICE + r"/issue", lifecycle.finalize, STAFF_WRITE),
    ("POST", r"/v1/invoices/" + INVOICE + r"/approve", lifecycle.approve, STAFF_READ),
    ("POST", r"/v1/invoices/" + INVOICE + r"/reject", lifecycle.reject, STAFF_READ),
    ("POST", r"/v1/invoices/" + INVOICE + r"/payments", lifecycle.pay, STAFF_WRITE),
    ("GET", r"/v1/invoices/" + INVOICE + r"/payments", lifecycle.list_payments, CUSTOMER_READ),
    ("POST", r"/v1/invoices/" + INVOICE + r"/void", lifecycle.void, STAFF_WRITE),
    ("POST", r"/v1/invoices/" + INVOICE + r"/reissue", lifecycle.reissue, STAFF_WRITE),
    ("GET", r"/v1/invoices/" + INVOICE + r"/actions", lifecycle.actions, STAFF_READ),  # internal comments
    # resources and sessions (§6)
    ("POST", r"/v1/resources", resources.create, STAFF_WRITE),
    ("GET", r"/v1/resources", resources.list_resources, STAFF_READ),
    ("GET", r"/v1/resources/" + RESOURCE, resources.get, STAFF_READ),
    ("PUT", r"/v1/resources/" + RESOURCE, resources.update, STAFF_WRITE),
    ("PATCH", r"/v1/resources/" + RESOURCE, resources.update, STAFF_WRITE),
    ("DELETE", r"/v1/resources/" + RESOURCE, resources.delete, STAFF_WRITE),
    ("POST", r"/v1/sessions", sessions.start, STAFF_WRITE),
    ("GET", r"/v1/sessions", sessions.list_sessions, CUSTOMER_READ),
    ("GET", r"/v1/sessions/" + ID.format("session_id"), sessions.get, CUSTOMER_READ),
    ("POST", r"/v1/sessions/" + ID.format("session_id") + r"/stop", sessions.stop, STAFF_WRITE),
    ("GET", r"/v1/billing-records", sessions.billing_records, CUSTOMER_READ),
    ("GET", r"/v1/analytics/resources", analytics.resources, STAFF_READ),
    ("GET", r"/v1/analytics/overview", revenue.overview, STAFF_READ),
    ("GET", r"/v1/analytics/revenue", revenue.revenue, STAFF_READ),
    ("GET", r"/v1/analytics/usage", analytics.usage, STAFF_READ),
    ("GET", r"/v1/analytics/events", analytics.event_counts, STAFF_READ),
    ("GET", r"/v1/analytics/recommendations", recommendations.recommendations, CUSTOMER_READ),
    # objects (§8): PUT streams its raw body
    ("GET", r"/v1/objects", objects.list_objects, CUSTOMER_READ),
    ("GET", r"/v1/objects/(?P<key>.*)", objects.get_object, CUSTOMER_READ),
    ("PUT", r"/v1/objects/(?P<key>.*)", streaming(objects.put_object), OBJECT_WRITE),
    ("DELETE", r"/v1/objects/(?P<key>.*)", objects.delete_object, OBJECT_WRITE),
    ("GET", r"/v1/storage", objects.storage_summary, STAFF_READ),
    # the live stream for the dashboard (Server-Sent Events)
    ("GET", r"/v1/stream", stream.stream, CUSTOMER_READ),
    # webhooks and the scheduler's jobs
    ("POST", r"/v1/webhooks", webhooks.create, ADMIN_ONLY),
    ("GET", r"/v1/webhooks", webhooks.list_webhooks, ADMIN_ONLY),
    ("GET", r"/v1/webhooks/" + WEBHOOK, webhooks.get, ADMIN_ONLY),
    ("DELETE", r"/v1/webhooks/" + WEBHOOK, webhooks.delete, ADMIN_ONLY),
    ("GET", r"/v1/webhooks/" + WEBHOOK + r"/deliveries", webhooks.deliveries, ADMIN_ONLY),
    # alerts (§10): rules, budgets, firings; notifications (a customer sees its own)
    ("POST", r"/v1/alerts", alerts.create, STAFF_WRITE),
    ("GET", r"/v1/alerts", alerts.list_rules, CUSTOMER_READ),
    ("GET", r"/v1/alerts/events", alerts.list_firings, CUSTOMER_READ),
    ("GET", r"/v1/alerts/budgets", alerts.list_budgets, CUSTOMER_READ),
    ("POST", r"/v1/alerts/evaluate", alerts.evaluate, STAFF_WRITE),
    ("DELETE", r"/v1/alerts/" + ID.format("alert_id"), alerts.delete, STAFF_WRITE),
    ("GET", r"/v1/notifications", notifications.list_notifications, CUSTOMER_READ),
    ("POST", r"/v1/notifications/read-all", notifications.mark_all_read, CUSTOMER_READ),
    ("POST", r"/v1/notifications/" + ID.format("notification_id") + r"/read", notifications.mark_read,
     CUSTOMER_READ),
    ("GET", r"/v1/jobs", jobs.list_jobs, STAFF_READ),
    ("POST", r"/v1/jobs/run", jobs.run_now, ADMIN_ONLY),
    # events
    ("POST", r"/v1/events", events.ingest_one, EVENT_WRITE),
    ("POST", r"/v1/events/batch", events.ingest_batch, EVENT_WRITE),
    ("GET", r"/v1/events", events.list_events, CUSTOMER_READ),
    # audit
    ("GET", r"/v1/audit-log", audit_log.list_entries, STAFF_READ),
]
