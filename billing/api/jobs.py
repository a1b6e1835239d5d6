"""The scheduler's runs over HTTP: `GET /v1/jobs` lists them, `POST
/v1/jobs/run` runs the scheduler's work now (the dashboard's "Run now")."""

from .. import jsonutil
from ..domain import times
from ..errors import FieldErrors
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
    return page(rows, limit, job_view, lambda row: [row["id"]])


def run_now(request):
    problems = FieldErrors()
    check_unknown_fields(request.json(), (), problems)
    problems.raise_if_any()
    return request.app.scheduler.run_once(trigger=f"manual by {request.actor.label}")
