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
        summary = demo.fill(running.app)
        assert "6 customers" in summary
        customers = running.admin.get("/v1/customers").json["data"]
        assert {c["currency"] for c in customers} == {"USD", "EUR", "GBP", "INR", "JPY", "KWD"}
        usage = running.admin.get(f"/v1/customers/{customers[0]['id']}/usage").json["usage"]
        assert any(u["value"] for u in usage)
        assert "6 plans" in summary and len(running.admin.get("/v1/plans").json["data"]) == 6
        drafts = running.admin.get("/v1/invoices?status=draft").json["data"]
        assert {i["currency"] for i in drafts} == {"USD", "EUR", "GBP", "INR", "JPY", "KWD"}  # the newest periods
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
        assert sorted(after[d["id"]] for d in drafts) == ["issued"] * 5 + ["pending_approval"]
        assert "nothing added" in demo.fill(running.app)  # never twice
    finally:
        running.stop()
        clock.pin(None)
