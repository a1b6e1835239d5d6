"""The scheduler (§7, §10): POST /v1/jobs/run and GET /v1/jobs, drafting and
issuing after the grace period, and racing runs that never double-invoice a
period or leave a gap in the numbers."""

import threading

from billing.ops.scheduler import Scheduler
from tests.harness import make_key
from tests.http.helpers import assert_error, list_all, pin, unique

PLAN = {"code": "basic", "name": "Basic", "currency": "USD", "base_fee": "20.00",
        "charges": [{"meter": "api_calls", "model": "per_unit", "unit_price": "0.01"}]}
JOB_FIELDS = {"id", "name", "started_at", "finished_at", "outcome", "details"}


def customers(admin, count, start="2025-09-01"):
    """`count` UTC customers on Basic since `start`, 1,000 calls in September."""
    assert admin.post("/v1/meters", {"key": "api_calls", "name": "API calls", "aggregation": "sum"}).status == 201
    assert admin.post("/v1/plans", PLAN).status == 201
    pin("2025-09-20T00:00:00Z")
    ids = []
    for _ in range(count):
        cid = admin.post("/v1/customers", {"name": f"Cust {unique()}", "email": f"{unique('c')}@example.com"}).json["id"]
        assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "basic", "start": start}).status == 201
        assert admin.post("/v1/events/batch", {"customer_id": cid, "events": [
            {"meter": "api_calls", "quantity": 1000, "timestamp": "2025-09-10T00:00:00Z"}]}).status == 200
        ids.append(cid)
    return ids


def run_job(admin):
    reply = admin.post("/v1/jobs/run")
    assert reply.status == 200, reply
    assert set(reply.json) == JOB_FIELDS
    return reply.json


def test_run_drafts_then_issues_after_the_grace_period(server, admin):
    [cid] = customers(admin, 1)
    # September ended at 2025-10-01T00:00Z; the grace period is 24 h
    pin("2025-10-01T12:00:00Z")
    first = run_job(admin)
    assert (first["name"], first["outcome"]) == ("billing", "ok")
    assert first["started_at"] == first["finished_at"] == "2025-10-01T12:00:00Z"
    assert first["details"]["drafts_created"] == 1
    assert (first["details"]["issued"], first["details"]["pending_approval"]) == (0, 0)
    assert first["details"]["trigger"].startswith("manual")
    [draft] = admin.get(f"/v1/invoices?customer_id={cid}").json["data"]
    assert (draft["status"], draft["number"], draft["total"]) == ("draft", None, "30.00")

    pin("2025-10-01T23:59:59Z")
    assert run_job(admin)["details"]["issued"] == 0
    assert admin.get(f"/v1/invoices/{draft['id']}").json["status"] == "draft"

    pin("2025-10-02T00:00:00Z")
    third = run_job(admin)
    assert third["outcome"] == "ok"
    assert (third["details"]["drafts_created"], third["details"]["issued"]) == (0, 1)
    assert third["details"]["emails"] == {"sent": 1, "failed": 0}  # the run sends the invoice e-mail too
    invoice = admin.get(f"/v1/invoices/{draft['id']}").json
    assert (invoice["status"], invoice["number"], invoice["issued_at"]) == ("issued", "INV-000001",
                                                                             "2025-10-02T00:00:00Z")
    actions = admin.get(f"/v1/invoices/{draft['id']}/actions").json["data"]
    assert actions[-1]["actor"] == "scheduler" and actions[-1]["to_status"] == "issued"

    pin("2025-10-02T00:01:00Z")
    fourth = run_job(admin)
    assert (fourth["details"]["drafts_created"], fourth["details"]["issued"]) == (0, 0)

    jobs = admin.get("/v1/jobs")
    assert jobs.status == 200
    assert [j["id"] for j in jobs.json["data"]] == [fourth["id"], third["id"], first["id"] + 1, first["id"]]
    assert jobs.json["data"][0] == fourth and jobs.json["data"][-1] == first
    for job in jobs.json["data"]:
        assert set(job) == JOB_FIELDS and job["outcome"] == "ok"
    paged = admin.get("/v1/jobs?limit=3")
    assert len(paged.json["data"]) == 3 and paged.json["next_cursor"]
    assert [j["id"] for j in list_all(admin, "/v1/jobs?limit=1")] == [j["id"] for j in jobs.json["data"]]


def test_a_customer_requiring_approval_goes_to_pending(server, admin):
    [cid] = customers(admin, 1)
    assert admin.patch(f"/v1/customers/{cid}", {"requires_approval": True}).status == 200
    pin("2025-10-03T00:00:00Z")
    job = run_job(admin)
    assert job["details"]["drafts_created"] == 1 and job["details"]["pending_approval"] == 1
    [invoice] = admin.get(f"/v1/invoices?customer_id={cid}").json["data"]
    assert (invoice["status"], invoice["number"]) == ("pending_approval", None)
    assert run_job(admin)["details"]["pending_approval"] == 0


def test_roles(server, admin):
    finance = server.client(make_key(server, role="finance"))
    viewer = server.client(make_key(server, role="viewer"))
    assert_error(finance.post("/v1/jobs/run"), 403, "forbidden")
    assert_error(viewer.post("/v1/jobs/run"), 403, "forbidden")
    assert admin.get("/v1/jobs").json["data"] == []  # nothing ran
    job = run_job(admin)
    for client in (viewer, finance):
        reply = client.get("/v1/jobs")
        assert reply.status == 200 and [j["id"] for j in reply.json["data"]] == [job["id"]]
    cid = admin.post("/v1/customers", {"name": "K", "email": f"{unique('k')}@example.com"}).json["id"]
    scoped = server.client(make_key(server, customer_id=cid))
    assert scoped.get("/v1/jobs").status in (403, 404)
    assert_error(scoped.post("/v1/jobs/run"), 403, "forbidden")
    assert server.client().get("/v1/jobs").status == 401


def test_racing_runs_never_double_invoice_nor_skip_numbers(server, admin):
    ids = customers(admin, 5, start="2025-07-01")  # July, August, September each: 15 periods
    pin("2025-10-05T00:00:00Z")  # every period is past its grace period
    other = Scheduler(server.app)  # a second scheduler, as if a second process ran one
    barrier = threading.Barrier(5)
    results, errors = [], []

    def scheduler_run(scheduler):
        try:
            barrier.wait(10)
            results.append(("job", scheduler.run_once(trigger="race")))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def http_run():
        client = server.client(admin.token)
        try:
            barrier.wait(10)
            reply = client.post("/v1/invoices/run", {})
            results.append(("http", reply))
        except Exception as exc:  # pragma: no cover
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=scheduler_run, args=(server.app.scheduler,)) for _ in range(2)]
    threads += [threading.Thread(target=scheduler_run, args=(other,))]
    threads += [threading.Thread(target=http_run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(results) == 5
    jobs = [r for kind, r in results if kind == "job"]
    assert all(j["outcome"] in ("ok", "skipped") for j in jobs), jobs
    assert sum(1 for j in jobs if j["outcome"] == "ok") >= 2  # the two schedulers really raced
    http = [r for kind, r in results if kind == "http"]
    assert all(r.status == 200 for r in http), http
    drafted = sum(j["details"].get("drafts_created", 0) for j in jobs) + sum(r.json["created"] for r in http)
    assert drafted == 15

    run_job(admin)  # issues whatever a racing HTTP run drafted after the schedulers looked
    invoices = list_all(admin, "/v1/invoices?limit=100")
    assert len(invoices) == 15
    periods = [(i["subscription_id"], i["period_start"]) for i in invoices]
    assert len(set(periods)) == 15
    assert {i["customer_id"] for i in invoices} == set(ids)
    assert all(i["status"] == "issued" for i in invoices), [i["status"] for i in invoices]
    numbers = sorted(i["number"] for i in invoices)
    assert numbers == [f"INV-{n:06d}" for n in range(1, 16)]
    issued_total = sum(j["details"].get("issued", 0) for j in admin.get("/v1/jobs").json["data"])
    assert issued_total == 15
    assert run_job(admin)["details"]["drafts_created"] == 0
