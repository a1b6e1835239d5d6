"""`python3 test_demo.py` tells the whole story against a real server and exits 0."""

import os
import subprocess
import sys
from datetime import timedelta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_story_runs_end_to_end():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "test_demo.py")], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "The story ran end to end." in result.stdout


def test_demo_flag_fills_an_empty_database(tmp_path):
    from billing import clock
    from billing.ops import demo
    from tests.harness import RunningServer

    running = RunningServer(str(tmp_path / "demo.db"))
    try:
        # the platform team's week of history must lie inside one month (below: its first month has
        # no usage): the clock is pinned on the 15th, of this month or, before it, of the month before
        now = clock.now()
        clock.pin(now.replace(day=15) if now.day >= 15 else (now.replace(day=1) - timedelta(days=1)).replace(day=15))
        summary = demo.fill(running.app)
        assert "8 customers" in summary
        customers = running.admin.get("/v1/customers").json["data"]
        assert {c["currency"] for c in customers} == {"USD", "EUR", "GBP", "INR", "JPY", "KWD"}
        usage = running.admin.get(f"/v1/customers/{customers[0]['id']}/usage").json["usage"]
        assert any(u["value"] for u in usage)
        assert "8 plans" in summary and len(running.admin.get("/v1/plans").json["data"]) == 8
        # the platform team: a week of collected history; its checkout API is over-provisioned
        platform = [c for c in running.admin.get("/v1/customers").json["data"] if c["external_id"] == "platform"][0]
        advice = running.admin.get(f"/v1/analytics/recommendations?customer_id={platform['id']}").json["data"]
        assert [(r["type"], r["evidence"]["service"]) for r in advice] == [("scale_down", "checkout-api")]
        # alerts: Acme's budget crossed at 50% and 80%, Hooli's spend rule, Initech's burst of calls today
        fired = running.admin.get("/v1/alerts/events").json["data"]
        by_external = {c["id"]: c["external_id"] for c in running.admin.get("/v1/customers?limit=100").json["data"]}
        assert sorted((by_external[f["customer_id"]], f["type"], f["percent"]) for f in fired) == [
            ("acme", "budget", 50), ("acme", "budget", 80), ("hooli", "spend", None), ("initech", "usage_spike", None)]
        assert running.admin.get("/v1/notifications?unread=true").json["unread_count"] == 4
        assert len(running.admin.get("/v1/alerts").json["data"]) == 2
        assert running.admin.post("/v1/alerts/evaluate", {}).json["fired"] == 0  # each fires once
        customer_id, key = demo.collector_credentials(running.app)
        assert customer_id == platform["id"] and running.client(key).get("/v1/auth/me").json["role"] == "ingest"
        _, second = demo.collector_credentials(running.app)  # a new start revokes the previous key
        assert running.client(key).get("/v1/auth/me").status == 401 and running.client(second).get("/v1/auth/me").status == 200
        # the storage tenant: files within its quota, a month and a half of GB-days and calls, an invoice
        nimbus = [c for c in customers if c["external_id"] == "nimbus"][0]
        files = running.admin.get(f"/v1/objects?customer_id={nimbus['id']}").json
        assert len(files["data"]) == 5 and 0 < files["total_bytes"] <= files["quota_bytes"]
        for item in files["data"]:
            body = running.admin.get(f"/v1/objects/{item['key']}?customer_id={nimbus['id']}")
            assert body.status == 200 and len(body.raw) == item["size"]
        storage = running.admin.get(f"/v1/customers/{nimbus['id']}/usage?from=2020-01-01&to=2100-01-01"
                                    "&meter=storage_gb_days").json["usage"][0]
        assert storage["value"] > 40  # the past 3 GB and 2 GB objects alone make 42 + 16 GB-days
        nimbus_invoices = running.admin.get(f"/v1/invoices?customer_id={nimbus['id']}").json["data"]
        assert len(nimbus_invoices) == 1 and nimbus_invoices[0]["total"] != "0.00"
        tenant = running.client().post("/v1/auth/login", {"email": "tenant@localhost", "password": "tenant-demo-1"})
        assert tenant.status == 200 and tenant.json["user"]["customer_id"] == nimbus["id"]
        drafts = running.admin.get("/v1/invoices?status=draft").json["data"]
        assert {i["currency"] for i in drafts} == {"USD", "EUR", "GBP", "INR", "JPY", "KWD"}  # the newest periods
        assert len(drafts) == 8
        statuses = {i["status"] for i in running.admin.get("/v1/invoices?limit=100").json["data"]}
        assert statuses == {"draft", "issued", "paid", "void"}
        overdue = running.admin.get("/v1/invoices?overdue=true").json["data"]
        assert [(i["payment_status"], i["overdue"]) for i in overdue] == [("partially_paid", True)]
        numbers = sorted(i["number"] for i in running.admin.get("/v1/invoices?limit=100").json["data"] if i["number"])
        assert numbers == [f"INV-{n:06d}" for n in range(1, len(numbers) + 1)]  # no gaps
        # two days on, the scheduler has issued the newest drafts (Stark's waits for its CSM's approval)
        clock.pin(clock.now() + timedelta(days=2))
        assert running.app.scheduler.run_once()["outcome"] == "ok"
        after = {i["id"]: i["status"] for i in running.admin.get("/v1/invoices?limit=100").json["data"]}
        # (the platform team's first month had no usage yet: 0.00, paid at issue)
        assert sorted(after[d["id"]] for d in drafts) == ["issued"] * 6 + ["paid", "pending_approval"]
        assert "nothing added" in demo.fill(running.app)  # never twice
    finally:
        running.stop()
        clock.pin(None)
