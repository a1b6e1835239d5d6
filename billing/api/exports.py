"""Exports (§7): an invoice as PDF, the invoice list and a customer's usage as
CSV (a header row, RFC 4180 quoting, CRLF line ends)."""

import csv
import io

from .. import jsonutil
from ..exports.pdf import invoice_pdf
from .responses import Response
from . import invoice_rows
from . import invoices as invoices_api
from . import lifecycle
from . import usage as usage_api
from .common import path_int

CSV_TYPE = "text/csv; charset=utf-8"
MAX_CSV_ROWS = 100_000
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _text(value):
    """A text cell a spreadsheet will not run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def _csv(header, rows):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def _attachment(body, content_type, filename):
    return Response(200, body, content_type=content_type,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def invoice_as_pdf(request, invoice_id):
    view = invoices_api.fresh_view(request, invoice_id)
    with request.app.db.reader() as conn:
        customer = lifecycle.bill_to(conn, view["id"], view["customer_id"])
    name = view["number"] or f"draft-{view['id']}"
    return _attachment(invoice_pdf(view, customer), "application/pdf", f"{name}.pdf")


INVOICE_HEADER = ("id", "number", "customer_id", "customer", "status", "payment_status", "overdue", "currency",
                  "period_start", "period_end", "subtotal", "discount", "tax", "total", "credits_applied",
                  "amount_due", "amount_paid", "issued_at", "due_at")


def invoices_csv(request):
    """Every invoice matching the list filters (customer_id, status, period, overdue), newest first."""
    rows = invoices_api.refresh_listed(request.app, invoices_api.listed_rows(request, MAX_CSV_ROWS))
    names = {row["id"]: row["name"] for row in request.app.db.rows("SELECT id, name FROM customers")}
    out = []
    for row in rows:
        v = invoice_rows.view(row)
        out.append((v["id"], v["number"] or "", v["customer_id"], _text(names.get(v["customer_id"], "")), v["status"],
                    v["payment_status"], "true" if v["overdue"] else "false", v["currency"],
                    v["period_start"], v["period_end"], v["subtotal"], v["discount"], v["tax"], v["total"],
                    v["credits_applied"], v["amount_due"], v["amount_paid"], v["issued_at"] or "",
                    v["due_at"] or ""))
    return _attachment(_csv(INVOICE_HEADER, out), CSV_TYPE, "invoices.csv")


def usage_csv(request, customer_id):
    """The usage answer (same arguments) flattened: one row per meter, window and group."""
    usage = usage_api.get_usage(request, customer_id)
    rows = []
    for entry in usage["usage"]:
        base = (entry["meter"], entry["aggregation"], _text(entry["unit"] or ""))
        spans = entry.get("windows") or [{"start": usage["from"], "end": usage["to"], "value": entry["value"],
                                          "groups": entry.get("groups")}]
        for span in spans:
            groups = span.get("groups")
            if groups is None:
                rows.append((*base, span["start"], span["end"], "", _cell(span["value"])))
            else:
                for group in groups:
                    (key, value), = group["group"].items()
                    rows.append((*base, span["start"], span["end"], _text(_group_text(key, value)),
                                 _cell(group["value"])))
    filename = f"usage-{path_int(customer_id, 'Customer')}.csv"
    return _attachment(_csv(("meter", "aggregation", "unit", "from", "to", "group", "value"), rows), CSV_TYPE,
                       filename)


def _group_text(key, value):
    return f"{key}=" + ("" if value is None else str(value))


def _cell(value):
    return "" if value is None else jsonutil.encode(value)
