"""The scheduler's runs over HTTP: `GET /v1/jobs` lists them, `POST
/v1/jobs/run` runs the scheduler's work now (the dashboard's "Run now")."""

from .. import jsonutil
from ..domain import times
from ..errors import FieldErrors
from ..store import outbox
from ..store.db import named
from .common import check_unknown_fields, decode_cursor, page, page_limit

COLUMNS = "id, name, started_at, finished_at, outcome, details"


def job_view(row):
    return {"id": row["id"], "name": row["name"], "started_at": times.format_micros(row["started_at"]),
            "finished_at": times.format_micros(row["finished_at"]), "outcome": row["outcome"],
            "details": jsonutil.decode(row["details"])}


def list_jobs(request):
    limit = page_limit(request)
    cursor = decode_cursor(request)
    with request.app.db.reader() as conn:
        rows = named(conn, f"SELECT {COLUMNS} FROM jobs WHERE id < ? ORDER BY id DESC LIMIT ?",
                     (cursor[0] if cursor else 2 ** 62, limit + 1)).fetchall()
        shipping = clickhouse_status(request.app, conn)
    answer = page(rows, limit, job_view, lambda row: [row["id"]])
    if shipping is not None:
        answer["clickhouse"] = shipping
    return answer


def clickhouse_status(app, conn):
    """How shipping to ClickHouse goes (None when it is not configured):
    the backlog, the last shipment and ClickHouse's last error."""
    clickhouse = app.clickhouse
    if clickhouse is None:
        return None
    state = outbox.state(conn)
    shipped_at = state["shipped_at"] if state is not None else None
    return {"backlog": outbox.backlog(conn), "shipped_through_seq": state["shipped_seq"] if state else 0,
            "last_shipped_at": times.format_micros(shipped_at) if shipped_at is not None else None,
            "last_error": clickhouse.last_error,
            "last_error_at": times.format_micros(clickhouse.last_error_at) if clickhouse.last_error_at else None}


def run_now(request):
    problems = FieldErrors()
    check_unknown_fields(request.json(), (), problems)
    problems.raise_if_any()
    return request.app.scheduler.run_once(trigger=f"manual by {request.actor.label}")
