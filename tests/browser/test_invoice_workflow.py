"""The invoice workflow, webhooks and jobs pages in headless Chromium (§7,
§10, §11), against a real in-process server with a temp DB.

Data goes in through the HTTP API; nothing is pinned: the subscriptions start
on the first day of last month (UTC) and `POST /v1/invoices/run` with `as_of`
the first of this month drafts last month. People sign in through the form in
their roles (finance, customer success, a salesperson who is a customer's CSM) and
click. Each test ends by checking that the page logged no console error,
threw nothing, and broke no CSP rule. Screenshots go to /tmp/shots/ as well.
"""

import base64
import json
import os
import re
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.browser.test_dashboard import browser, dashboard  # noqa: F401  (the shared fixtures)
from tests.helpers import day_at

SHOTS = "/tmp/shots"
PASSWORD = "workflow-password-1"
PEOPLE = {
    "finance": {"email": "fin@example.com", "name": "Fiona Finance", "role": "finance"},
    "cs": {"email": "cs@example.com", "name": "Casey Success", "role": "customer_success"},
    "csm": {"email": "csm@example.com", "name": "Cleo CSM", "role": "sales"},
    "viewer": {"email": "viewer@example.com", "name": "Vic Viewer", "role": "viewer"},
}
BASIC = {"code": "basic", "name": "Basic", "currency": "USD", "base_fee": "100.00",
         "charges": [{"meter": "api_calls", "model": "per_unit", "unit_price": "0.01"}]}
# Last month: 100.00 base + 5,000 calls × 0.01 = 150.00 for each customer (no tax, no credit).
TOTAL = "150.00"


@pytest.fixture
def workflow(server):
    """Acme (requires approval, its CSM is Cleo from sales) and Globex (no
    approval) on the Basic plan since the first of last month, usage last
    month, the invoice run done: one draft each. Users of each role."""
    admin = server.admin
    users = {}
    for key, person in PEOPLE.items():
        reply = admin.post("/v1/users", {**person, "password": PASSWORD})
        assert reply.status == 201, reply
        users[key] = reply.json["id"]
    assert admin.post("/v1/meters", {"key": "api_calls", "name": "API calls", "unit": "call",
                                     "aggregation": "sum"}).status == 201
    assert admin.post("/v1/plans", BASIC).status == 201
    this_month = datetime.now(timezone.utc).date().replace(day=1)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    customers = {}
    for key, body in (("acme", {"name": "Acme Corp", "email": "billing@acme.example", "requires_approval": True,
                                "csm_user_id": users["csm"]}),
                      ("globex", {"name": "Globex", "email": "ap@globex.example"})):
        reply = admin.post("/v1/customers", body)
        assert reply.status == 201, reply
        customers[key] = reply.json["id"]
        reply = admin.post("/v1/subscriptions", {"customer_id": customers[key], "plan": "basic",
                                                 "start": last_month.isoformat()})
        assert reply.status == 201, reply
        events = [{"id": f"{key}-{n}", "meter": "api_calls", "quantity": 2500,
                   "timestamp": day_at(last_month + timedelta(days=n + 1), 10)} for n in range(2)]
        reply = admin.post("/v1/events/batch", {"customer_id": customers[key], "events": events})
        assert reply.status == 200 and reply.json["accepted"] == 2, reply
    reply = admin.post("/v1/invoices/run", {"as_of": day_at(this_month)})
    assert reply.status == 200 and reply.json["created"] == 2, reply
    invoices = {}
    for key, customer_id in customers.items():
        found = admin.get(f"/v1/invoices?customer_id={customer_id}").json["data"]
        assert [(item["status"], item["total"]) for item in found] == [("draft", TOTAL)]
        invoices[key] = found[0]["id"]
    return {"users": users, "customers": customers, "invoices": invoices,
            "period": f"{last_month.isoformat()} – {(this_month - timedelta(days=1)).isoformat()}"}


# -- helpers -------------------------------------------------------------------------

def sign_in_as(dashboard, who, hash_):
    """Sign out whoever is signed in, then sign `who` in through the form."""
    if dashboard.js("location.protocol.startsWith('http') && !!sessionStorage.getItem('meterline.token')"):
        dashboard.click("#sign-out")
        dashboard.wait("!!document.querySelector('#signin-form')")
    if who == "admin":
        dashboard.sign_in(hash_=hash_)
        dashboard.signed_in()
        return
    person = PEOPLE[who]
    dashboard.sign_in(email=person["email"], password=PASSWORD, hash_=hash_)
    dashboard.wait(f"document.querySelector('#who')?.textContent === {json.dumps(person['email'] + ' (' + person['role'] + ')')}")


def snap(dashboard, name, width):
    """A full-page screenshot at `width` CSS pixels (phones emulated below 640) into /tmp/shots/."""
    phone = width < 640
    dashboard.browser.send("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": 812 if phone else 900, "deviceScaleFactor": 2 if phone else 1, "mobile": phone})
    dashboard.js("new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    if phone:
        assert fits_the_screen(dashboard), f"{name}: something is wider than the {width} px screen"
    dashboard.js("window.scrollTo(0, 0)")
    os.makedirs(SHOTS, exist_ok=True)
    dashboard.browser.screenshot(os.path.join(SHOTS, f"{name}-{width}.png"))
    dashboard.shoot(f"{name}-{width}")
    dashboard.browser.send("Emulation.clearDeviceMetricsOverride")


def fits_the_screen(dashboard):
    return dashboard.js("(() => { const width = document.documentElement.clientWidth;"
                        " return document.documentElement.scrollWidth <= width && [...document.querySelectorAll('main *')]"
                        ".filter((e) => e.getClientRects().length)"
                        ".every((e) => e.getBoundingClientRect().right <= width + 0.5); })()")


def history(dashboard):
    return dashboard.js("[...document.querySelectorAll('#invoice-history tbody tr[data-action]')].map((tr) =>"
                        " Object.fromEntries([...tr.cells].map((td) => [td.className.split(' ')[0], td.textContent])))")


def words(value):
    return value.replace("_", " ") if value else "—"


def shown_history(dashboard, server, invoice_id):
    """The history table as (action, who, role, from → to, comment) rows, checked
    against GET /v1/invoices/{id}/actions; the "create" entry of the run left out."""
    expected = [(words(a["action"]), a["actor_name"] or a["actor"], words(a["role"]),
                 f"{words(a['from_status'])} → {words(a['to_status'])}", a["comment"] or "—")
                for a in server.admin.get(f"/v1/invoices/{invoice_id}/actions").json["data"]]
    rows = [(r["action"], r["actor"], r["role"], r["change"], r["comment"]) for r in history(dashboard)]
    assert rows == expected
    return [row for row in rows if row[0] != "create"]


def header(dashboard):
    return dashboard.js("Object.fromEntries([...document.querySelectorAll('.invoice-header > div')]"
                        ".map((d) => [d.dataset.key, d.querySelector('dd').textContent]))")


def badges(dashboard):
    return dashboard.texts(".page-head .badges .badge")


def message(dashboard, kind):
    """Wait for the action message of `kind` (ok, error) and return its text."""
    return dashboard.wait(f"document.querySelector('#action-message.{kind}:not([hidden])')?.textContent")


def act(dashboard, selector, kind="ok"):
    """Click an action; wait for its message and for the invoice read again after it."""
    dashboard.js("document.querySelector('#action-message').hidden = true;"
                 " document.querySelector('#action-message').className = 'message'")
    dashboard.click(selector)
    text = message(dashboard, kind)
    dashboard.wait("!document.querySelector('#invoice-actions button:disabled')")
    return text


def open_invoice(dashboard, invoice_id, ready="#invoice-actions > *"):
    dashboard.wait(f"location.hash === '#/invoices/{invoice_id}' && !!document.querySelector('{ready}')"
                   " && !document.querySelector('#invoice-history').hidden")


# Records every Blob the page turns into an object URL (what a download saves).
CAPTURE_BLOBS = """(() => {
  if (window.__blobs) return;
  window.__blobs = [];
  const original = URL.createObjectURL;
  URL.createObjectURL = (blob) => { window.__blobs.push(blob); return original.call(URL, blob); };
})()"""


def last_blob(dashboard, count):
    """Type, size and the first bytes (base64) of the `count`th captured blob."""
    dashboard.wait(f"window.__blobs.length >= {count}")
    found = dashboard.js(f"""(async () => {{
        const blob = window.__blobs[{count - 1}];
        const bytes = new Uint8Array(await blob.arrayBuffer());
        let text = '';
        for (const byte of bytes) text += String.fromCharCode(byte);
        return {{type: blob.type, size: blob.size, base64: btoa(text)}};
    }})()""")
    found["bytes"] = base64.b64decode(found["base64"])
    return found


# -- the approval workflow ---------------------------------------------------------

def test_issue_approve_pay_and_download_the_pdf(dashboard, workflow, tmp_path):
    server = dashboard.server
    invoice_id = workflow["invoices"]["acme"]
    page = f"#/invoices/{invoice_id}"

    # Finance issues the draft: Acme requires approval, so it goes to pending approval.
    sign_in_as(dashboard, "finance", page)
    open_invoice(dashboard, invoice_id, "#finalize")
    assert dashboard.text("main h1") == f"Draft #{invoice_id}"
    assert dashboard.text("#finalize-form h3") == "Issue (needs approval)"
    assert dashboard.count("#approve, #reject, #record-payment, #reissue") == 0
    assert dashboard.count("#void-form") == 1 and dashboard.count("#download-pdf") == 1
    assert shown_history(dashboard, server, invoice_id) == []
    dashboard.fill("#finalize-form [name=comment]", "September usage checked")
    assert act(dashboard, "#finalize") == "Sent for approval: the invoice is pending approval."
    dashboard.wait("document.querySelector('.page-head .badges .badge')?.textContent === 'pending approval'")
    assert server.admin.get(f"/v1/invoices/{invoice_id}").json["status"] == "pending_approval"
    assert dashboard.count("#finalize, #approve, #reject") == 0  # finance cannot approve
    assert "Waiting for approval" in dashboard.text("#invoice-actions")
    assert header(dashboard)["status"] == "pending approval"
    assert shown_history(dashboard, server, invoice_id) == [
        ("finalize", "Fiona Finance", "finance", "draft → pending approval", "September usage checked")]

    # Customer success approves with a comment: issued, with a number.
    sign_in_as(dashboard, "cs", page)
    open_invoice(dashboard, invoice_id, "#approve")
    assert dashboard.count("#finalize, #record-payment, #void-form") == 0  # not finance
    snap(dashboard, "invoice-approval", 1280)
    snap(dashboard, "invoice-approval", 375)
    dashboard.fill("#approval-form [name=comment]", "Looks right <b>to me</b>")
    text = act(dashboard, "#approve")
    api = server.admin.get(f"/v1/invoices/{invoice_id}").json
    assert api["status"] == "issued" and re.fullmatch(r"INV-\d{6}", api["number"])
    assert text == f"Approved: issued as {api['number']}."
    dashboard.wait(f"document.querySelector('main h1')?.textContent === '{api['number']}'")
    assert badges(dashboard) == ["issued"]
    assert header(dashboard)["number"] == api["number"]
    assert header(dashboard)["balance-due"] == "150.00 USD"
    assert shown_history(dashboard, server, invoice_id) == [
        ("finalize", "Fiona Finance", "finance", "draft → pending approval", "September usage checked"),
        ("approve", "Casey Success", "customer success", "pending approval → issued", "Looks right <b>to me</b>")]
    assert dashboard.count("#invoice-history b") == 0  # the comment is text, not HTML
    assert dashboard.js("document.querySelector('#invoice-history tr[data-action=approve] time')"
                        ".getAttribute('datetime')") == server.admin.get(
        f"/v1/invoices/{invoice_id}/actions").json["data"][-1]["at"]

    # Finance: the payment form is prefilled with the balance; void is offered while nothing is paid.
    sign_in_as(dashboard, "finance", page)
    open_invoice(dashboard, invoice_id, "#record-payment")
    assert dashboard.js("document.querySelector('#payment-form [name=amount]').value") == "150.00"
    assert dashboard.count("#void-form") == 1
    assert dashboard.text("#invoice-payments td.empty") == "No payments yet."
    # Someone else records 20.00 meanwhile; the void clicked on this (stale) page is refused by the server.
    reply = server.admin.post(f"/v1/invoices/{invoice_id}/payments", {"amount": "20.00", "method": "card"})
    assert reply.status == 201, reply
    dashboard.allowed_failures.add((f"/v1/invoices/{invoice_id}/void", 409))
    dashboard.click("#void-section > summary")
    dashboard.fill("#void-form [name=reason]", "Wrong plan")
    text = act(dashboard, "#void", kind="error")
    assert text == f"Could not void the invoice: Invoice {invoice_id} is issued; it cannot be voided once paid " \
                   "(correct it with a credit)."
    dashboard.wait("document.querySelectorAll('#invoice-payments tbody tr[data-id]').length === 1")
    assert dashboard.count("#void-form, #void") == 0  # after the refresh: no void any more
    assert "can no longer be voided" in dashboard.text("#invoice-actions")
    assert dashboard.js("document.querySelector('#payment-form [name=amount]').value") == "130.00"

    # A partial payment from the form.
    dashboard.fill("#payment-form [name=amount]", "30.00")
    dashboard.fill("#payment-form [name=method]", "bank transfer")
    dashboard.fill("#payment-form [name=reference]", "wire 42")
    assert act(dashboard, "#record-payment") == "Recorded 30.00 USD; 100.00 USD still due."
    dashboard.wait("document.querySelectorAll('#invoice-payments tbody tr[data-id]').length === 2")
    assert badges(dashboard) == ["issued", "partially paid"]
    assert header(dashboard)["payment"] == "partially paid"
    assert header(dashboard)["amount-paid"] == "50.00 USD" and header(dashboard)["balance-due"] == "100.00 USD"
    assert dashboard.texts("#invoice-payments tbody tr[data-id]:last-child td")[1:] == [
        "30.00 USD", "bank transfer", "wire 42", "Fiona Finance"]
    assert dashboard.count("#void-form") == 0
    api = server.admin.get(f"/v1/invoices/{invoice_id}").json
    assert (api["payment_status"], api["amount_paid"], api["balance_due"]) == ("partially_paid", "50.00", "100.00")
    assert [row[0] for row in shown_history(dashboard, server, invoice_id)] == [
        "finalize", "approve", "payment", "payment"]

    # Overpaying is refused with the server's message.
    dashboard.allowed_failures.add((f"/v1/invoices/{invoice_id}/payments", 409))
    dashboard.fill("#payment-form [name=amount]", "500.00")
    text = act(dashboard, "#record-payment", kind="error")
    assert text == (f"Could not record the payment: The payment of 500.00 USD is more than the 100.00 USD "
                    f"still due on invoice {invoice_id}.")
    assert server.admin.get(f"/v1/invoices/{invoice_id}").json["amount_paid"] == "50.00"

    # The PDF: fetched with the token, saved from a Blob of application/pdf bytes.
    downloads = str(tmp_path / "downloads")
    dashboard.browser.send("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": downloads})
    dashboard.js(CAPTURE_BLOBS)
    dashboard.click("#download-pdf")
    assert message(dashboard, "ok").startswith(f"Downloaded {api['number']}.pdf (")
    blob = last_blob(dashboard, 1)
    assert blob["type"] == "application/pdf" and blob["bytes"].startswith(b"%PDF-") and blob["size"] > 500
    saved = os.path.join(downloads, f"{api['number']}.pdf")
    dashboard.wait(f"new Promise((done) => setTimeout(() => done(true), 300))")
    if os.path.exists(saved):  # where the headless browser saves downloads at all
        with open(saved, "rb") as handle:
            assert handle.read(5) == b"%PDF-"

    dashboard.go("#/customers")  # leave and come back: the shots show the settled page
    dashboard.go(page)
    open_invoice(dashboard, invoice_id, "#record-payment")
    snap(dashboard, "invoice", 1280)
    snap(dashboard, "invoice", 375)
    dashboard.assert_clean()


def test_the_csm_rejects_back_to_draft_on_hold_then_finance_voids_and_reissues(dashboard, workflow):
    server = dashboard.server
    invoice_id = workflow["invoices"]["acme"]
    page = f"#/invoices/{invoice_id}"
    assert server.admin.post(f"/v1/invoices/{invoice_id}/finalize", {}).json["status"] == "pending_approval"

    # A viewer may not approve; Acme's CSM may.
    sign_in_as(dashboard, "viewer", page)
    open_invoice(dashboard, invoice_id)
    assert dashboard.count("#approve, #reject, #finalize, #record-payment, #void-form") == 0
    assert "Waiting for approval" in dashboard.text("#invoice-actions")
    sign_in_as(dashboard, "csm", page)
    open_invoice(dashboard, invoice_id, "#reject")
    assert dashboard.text("#approval-form .hint").startswith("You are this customer's CSM.")

    # Rejecting needs a comment: the server says so.
    dashboard.allowed_failures.add((f"/v1/invoices/{invoice_id}/reject", 400))
    text = act(dashboard, "#reject", kind="error")
    assert text.startswith("Could not reject:") and "comment" in text
    assert server.admin.get(f"/v1/invoices/{invoice_id}").json["status"] == "pending_approval"
    dashboard.fill("#approval-form [name=comment]", "Usage was double counted")
    assert act(dashboard, "#reject") == "Rejected: the invoice is back in draft, on hold."
    dashboard.wait("document.querySelectorAll('.page-head .badges .badge').length === 2")
    assert badges(dashboard) == ["draft", "on hold"]
    assert header(dashboard)["status"] == "draft, on hold"
    assert dashboard.count("#approve, #reject, #finalize") == 0  # a CSM from sales cannot issue
    assert shown_history(dashboard, server, invoice_id)[-2:] == [
        ("finalize", "bootstrap admin key", "admin", "draft → pending approval", "—"),
        ("reject", "Cleo CSM", "sales", "pending approval → draft", "Usage was double counted")]
    api = server.admin.get(f"/v1/invoices/{invoice_id}").json
    assert (api["status"], api["on_hold"]) == ("draft", True)

    # Finance sees the hold note, voids the draft with a reason, then reissues it.
    sign_in_as(dashboard, "finance", page)
    open_invoice(dashboard, invoice_id, "#finalize")
    assert dashboard.text(".hold-note").startswith("On hold:")
    dashboard.click("#void-section > summary")
    dashboard.fill("#void-form [name=reason]", "Re-rate after the usage fix")
    assert act(dashboard, "#void") == "Voided."
    dashboard.wait("document.querySelector('.page-head .badges .badge')?.textContent === 'void'")
    assert header(dashboard)["void-reason"] == "Re-rate after the usage fix"
    assert dashboard.count("#finalize, #void-form, #record-payment") == 0
    text = act(dashboard, "#reissue")
    replacement = server.admin.get(f"/v1/invoices?customer_id={workflow['customers']['acme']}&status=draft").json["data"]
    assert len(replacement) == 1 and replacement[0]["id"] != invoice_id
    new_id = replacement[0]["id"]
    assert text == f"Reissued: Draft #{new_id} replaces this invoice."
    assert [row[0] for row in shown_history(dashboard, server, invoice_id)] == ["finalize", "reject", "void", "reissued"]
    dashboard.click("#reissued-link")
    open_invoice(dashboard, new_id, "#finalize")
    # A reissued draft starts on hold (the scheduler never issues it): a person finalizes it.
    assert dashboard.text("main h1") == f"Draft #{new_id}" and badges(dashboard) == ["draft", "on hold"]
    assert header(dashboard)["revision"] == "1 (reissued)"
    assert [(row[0], row[3]) for row in shown_history(dashboard, server, new_id)] == [("reissue", "— → draft")]
    dashboard.assert_clean()


# -- the list --------------------------------------------------------------------------

def test_invoice_list_filters_live_in_the_address_and_export_csv(dashboard, workflow):
    server = dashboard.server
    acme, globex = workflow["invoices"]["acme"], workflow["invoices"]["globex"]
    issued = server.admin.post(f"/v1/invoices/{globex}/finalize", {}).json
    assert issued["status"] == "issued"
    assert server.admin.post(f"/v1/invoices/{acme}/finalize", {}).json["status"] == "pending_approval"
    assert server.admin.post(f"/v1/invoices/{acme}/reject", {"comment": "Hold on"}).json["on_hold"] is True

    sign_in_as(dashboard, "finance", "#/invoices")
    dashboard.wait("document.querySelectorAll('table.invoices tbody tr[data-id]').length === 2")
    dashboard.wait("document.querySelector('table.invoices tr[data-id] td.customer a')?.textContent !== ''"
                   " && [...document.querySelectorAll('table.invoices td.customer a')].every((a) => !a.textContent.startsWith('#'))")
    rows = {int(r[0]): r[1:] for r in dashboard.js(
        "[...document.querySelectorAll('table.invoices tbody tr[data-id]')].map((tr) =>"
        " [tr.dataset.id, ...[...tr.cells].map((td) => td.textContent)])")}
    assert rows[globex][:6] == [issued["number"], "Globex", "issued", workflow["period"], "150.00 USD", "150.00 USD"]
    assert rows[acme][:4] == [f"Draft #{acme}", "Acme Corp", "draft" + "on hold", workflow["period"]]
    assert dashboard.texts(f"table.invoices tr[data-id='{acme}'] td.status .badge") == ["draft", "on hold"]
    dashboard.wait("document.querySelectorAll('#invoices-filter [name=customer_id] option').length === 3")

    # Status filter → in the hash; a reload keeps it.
    dashboard.fill("#invoices-filter [name=status]", "issued")
    dashboard.click("#invoices-filter button[type=submit]")
    dashboard.wait("location.hash === '#/invoices?status=issued'")
    dashboard.wait(f"[...document.querySelectorAll('table.invoices tbody tr[data-id]')].map((tr) => +tr.dataset.id)"
                   f".join() === '{globex}'")
    dashboard.open("#/invoices?status=issued")  # a reload
    dashboard.wait("!document.querySelector('#topbar').hidden")
    dashboard.wait(f"[...document.querySelectorAll('table.invoices tbody tr[data-id]')].map((tr) => +tr.dataset.id)"
                   f".join() === '{globex}'")
    assert dashboard.js("document.querySelector('#invoices-filter [name=status]').value") == "issued"

    # CSV of the current filters (fetch → Blob).
    dashboard.js(CAPTURE_BLOBS)
    dashboard.click("#invoices-csv")
    dashboard.wait("document.querySelector('.list-tools + .message.ok')?.textContent.startsWith('Downloaded ')")
    blob = last_blob(dashboard, 1)
    csv = blob["bytes"].decode("utf-8")
    assert blob["type"].startswith("text/csv")
    assert issued["number"] in csv and f"Draft #{acme}" not in csv and len(csv.strip().splitlines()) == 2

    # Customer and overdue filters; draft + Acme; nothing overdue.
    dashboard.fill("#invoices-filter [name=status]", "draft")
    dashboard.fill("#invoices-filter [name=customer_id]", str(workflow["customers"]["acme"]))
    dashboard.click("#invoices-filter button[type=submit]")
    dashboard.wait(f"location.hash === '#/invoices?status=draft&customer_id={workflow['customers']['acme']}'")
    dashboard.wait(f"[...document.querySelectorAll('table.invoices tbody tr[data-id]')].map((tr) => +tr.dataset.id)"
                   f".join() === '{acme}'")
    dashboard.wait("document.querySelector('#invoices-filter [name=customer_id]').selectedOptions[0]?.textContent"
                   f" === 'Acme Corp (#{workflow['customers']['acme']})'")
    dashboard.fill("#invoices-filter [name=status]", "")
    dashboard.js("document.querySelector('#invoices-filter [name=overdue]').checked = true")
    dashboard.click("#invoices-filter button[type=submit]")
    dashboard.wait(f"location.hash === '#/invoices?customer_id={workflow['customers']['acme']}&overdue=true'")
    dashboard.wait("document.querySelector('table.invoices td.empty')?.textContent === 'No invoices match.'")
    assert dashboard.js("document.querySelector('#invoices-filter [name=overdue]').checked")
    dashboard.click(".clear-filters")
    dashboard.wait("location.hash === '#/invoices'")
    dashboard.wait("document.querySelectorAll('table.invoices tbody tr[data-id]').length === 2")
    snap(dashboard, "invoices", 375)
    dashboard.assert_clean()


# -- webhooks --------------------------------------------------------------------------

class Receiver:
    """A local webhook endpoint: /ok answers 200, /fail answers 500; keeps what it got."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append((self.path, self.headers.get("Meterline-Signature"), body))
                status = 200 if self.path == "/ok" else 500
                payload = b"thanks" if status == 200 else b"<h1>down for maintenance</h1>"
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    running = Receiver()
    yield running
    running.close()


def test_webhooks_page_shows_the_secret_once_lists_deliveries_and_deletes(dashboard, workflow, receiver):
    server = dashboard.server
    sign_in_as(dashboard, "admin", "#/webhooks")
    assert dashboard.texts("#nav a:not([hidden])") == [
        "Overview", "Customers", "Invoices", "Resources", "Storage", "Plans", "Meters", "Events", "Alerts", "Webhooks", "Jobs", "Users", "Audit log"]
    assert dashboard.text("#nav a[aria-current=page]") == "Webhooks"
    dashboard.wait("document.querySelector('table.webhooks td.empty')?.textContent === 'No webhooks yet.'")
    assert dashboard.js("[...document.querySelectorAll('#create-webhook [name=events]')].filter((b) => b.disabled).length") == 4

    dashboard.fill("#create-webhook [name=url]", f"{receiver.url}/ok")
    dashboard.fill("#create-webhook [name=description]", "Accounting <script>sync</script>")
    dashboard.click("#create-webhook button[type=submit]")
    dashboard.wait("!document.querySelector('#webhook-secret').hidden")
    secret = dashboard.text("#webhook-secret-value")
    assert re.fullmatch(r"whsec_[0-9a-f]{48}", secret)
    assert "shown only this once" in dashboard.text("#webhook-secret")
    dashboard.wait("document.querySelectorAll('table.webhooks tbody tr[data-id]').length === 1")
    listed = server.admin.get("/v1/webhooks").json["data"]
    assert [(w["url"], w["events"]) for w in listed] == [(f"{receiver.url}/ok", ["*"])]
    assert "secret" not in listed[0]
    assert dashboard.texts("table.webhooks tbody tr[data-id] td")[:3] == [
        f"{receiver.url}/ok", "all events", "Accounting <script>sync</script>"]
    snap(dashboard, "webhooks", 1280)
    snap(dashboard, "webhooks", 375)

    # A second one for invoice.issued only, to an endpoint that fails. The first secret is gone.
    dashboard.click("#create-webhook [name=events][value='*']")
    dashboard.click("#create-webhook [name=events][value='invoice.issued']")
    dashboard.fill("#create-webhook [name=url]", f"{receiver.url}/fail")
    dashboard.click("#create-webhook button[type=submit]")
    dashboard.wait("document.querySelectorAll('table.webhooks tbody tr[data-id]').length === 2")
    second = dashboard.text("#webhook-secret-value")
    assert second != secret and secret not in dashboard.js("document.body.textContent")
    assert dashboard.texts("table.webhooks tbody tr[data-id] td.events") == ["all events", "invoice.issued"]
    dashboard.go("#/customers")
    dashboard.go("#/webhooks")
    dashboard.wait("document.querySelectorAll('table.webhooks tbody tr[data-id]').length === 2")
    assert dashboard.js("document.querySelector('#webhook-secret').hidden")
    assert second not in dashboard.js("document.body.textContent")

    # An invoice is issued and the scheduler runs: one delivery succeeds, one fails.
    assert server.admin.post(f"/v1/invoices/{workflow['invoices']['globex']}/finalize", {}).status == 200
    assert server.admin.post("/v1/jobs/run", {}).json["details"]["webhooks"] == {"delivered": 1, "failed": 1}
    assert sorted(path for path, _, _ in receiver.received) == ["/fail", "/ok"]
    ok_id, fail_id = (w["id"] for w in server.admin.get("/v1/webhooks").json["data"])

    dashboard.click(f"table.webhooks tr[data-id='{ok_id}'] a.deliveries-link")
    dashboard.wait(f"location.hash === '#/webhooks/{ok_id}'")
    dashboard.wait("document.querySelectorAll('article.delivery').length === 1")
    assert dashboard.text("article.delivery .badge") == "delivered"
    assert dashboard.text("article.delivery .event-type") == "invoice.issued"
    facts = dashboard.js("Object.fromEntries([...document.querySelectorAll('article.delivery dl > div')]"
                         ".map((d) => [d.dataset.key, d.querySelector('dd').textContent]))")
    assert (facts["attempts"], facts["last-status-code"], facts["last-error"]) == ("1", "200", "—")
    dashboard.click("article.delivery details.attempt-log > summary")
    attempts = dashboard.js("[...document.querySelectorAll('article.delivery table.attempts tbody tr')]"
                            ".map((tr) => [...tr.cells].map((td) => td.textContent))")
    assert len(attempts) == 1 and attempts[0][2] == "200" and attempts[0][4] == "thanks"
    assert '"type": "invoice.issued"' in dashboard.text("article.delivery details.payload pre")

    dashboard.go(f"#/webhooks/{fail_id}")
    dashboard.wait("document.querySelector('article.delivery')?.dataset.status === 'pending'")
    facts = dashboard.js("Object.fromEntries([...document.querySelectorAll('article.delivery dl > div')]"
                         ".map((d) => [d.dataset.key, d.querySelector('dd').textContent]))")
    assert (facts["attempts"], facts["last-status-code"], facts["last-error"]) == ("1", "500", "HTTP 500")
    assert "next-attempt" in facts and facts["next-attempt"] != "none"
    assert dashboard.js("document.querySelector('article.delivery details.attempt-log').open")  # failures open it
    attempts = dashboard.texts("article.delivery table.attempts tbody tr td")
    assert attempts[2] == "500" and attempts[4] == "<h1>down for maintenance</h1>"
    assert dashboard.count("article.delivery h1") == 0
    snap(dashboard, "webhook-deliveries", 1280)
    snap(dashboard, "webhook-deliveries", 375)

    # Delete: the first click asks, the second deletes.
    dashboard.go("#/webhooks")
    dashboard.wait("document.querySelectorAll('table.webhooks tbody tr[data-id]').length === 2")
    dashboard.click(f"table.webhooks tr[data-id='{fail_id}'] .delete-webhook")
    assert dashboard.text(f"table.webhooks tr[data-id='{fail_id}'] .delete-webhook") == "Confirm delete"
    dashboard.click(f"table.webhooks tr[data-id='{fail_id}'] .delete-webhook")
    dashboard.wait("document.querySelectorAll('table.webhooks tbody tr[data-id]').length === 1")
    assert dashboard.text("main .message.ok").startswith("Deleted the webhook")
    assert [w["id"] for w in server.admin.get("/v1/webhooks").json["data"]] == [ok_id]
    dashboard.assert_clean()


# -- jobs and roles ----------------------------------------------------------------------

def test_jobs_page_run_now_adds_a_row_and_only_admins_see_it(dashboard, workflow):
    server = dashboard.server
    sign_in_as(dashboard, "admin", "#/jobs")
    dashboard.wait("document.querySelector('table.jobs td.empty')?.textContent.startsWith('No runs yet')")
    dashboard.click("#run-now")
    dashboard.wait("document.querySelectorAll('table.jobs tbody tr[data-id]').length === 1")
    job = server.admin.get("/v1/jobs").json["data"][0]
    assert job["outcome"] == "ok" and job["details"]["drafts_created"] == 0  # the run drafted everything before
    text = dashboard.wait("document.querySelector('.page-actions .message.ok')?.textContent")
    assert text.startswith(f"Run #{job['id']}: ok")
    row = dashboard.js("(() => { const tr = document.querySelector('table.jobs tbody tr[data-id]');"
                       " return {id: +tr.dataset.id, fresh: tr.classList.contains('new'),"
                       " outcome: tr.querySelector('td.outcome').textContent,"
                       " trigger: tr.querySelector('td.trigger').textContent,"
                       " summary: Object.fromEntries([...tr.querySelectorAll('.job-summary li')]"
                       ".map((li) => [li.dataset.key, li.textContent]))}; })()")
    assert row["id"] == job["id"] and row["fresh"] and row["outcome"] == "ok"
    assert row["trigger"] == job["details"]["trigger"] and row["trigger"].startswith("manual by ")
    assert row["summary"]["drafts_created"] == "0 drafts created"
    assert set(row["summary"]) >= {"drafts_created", "issued", "pending_approval", "webhooks_delivered",
                                   "webhooks_failed", "emails_sent"}
    issued = job["details"]["issued"]  # last month's drafts are issued once their grace period has passed
    assert row["summary"]["issued"] == f"{issued} issued"
    assert row["summary"]["pending_approval"] == f"{job['details']['pending_approval']} sent for approval"

    # A second run adds a second row on top, marked as new.
    dashboard.click("#run-now")
    dashboard.wait("document.querySelectorAll('table.jobs tbody tr[data-id]').length === 2")
    newest = server.admin.get("/v1/jobs").json["data"][0]["id"]
    assert dashboard.js("+document.querySelector('table.jobs tbody tr[data-id]').dataset.id") == newest
    assert dashboard.js("document.querySelector('table.jobs tbody tr[data-id]').classList.contains('new')")
    assert not dashboard.js("document.querySelectorAll('table.jobs tbody tr[data-id]')[1].classList.contains('new')")
    snap(dashboard, "jobs", 1280)
    snap(dashboard, "jobs", 375)

    # A viewer reads the jobs but cannot run them, and has no webhooks.
    sign_in_as(dashboard, "viewer", "#/jobs")
    assert dashboard.texts("#nav a:not([hidden])") == ["Overview", "Customers", "Invoices", "Resources", "Storage", "Plans", "Meters", "Events", "Alerts", "Jobs", "Audit log"]
    dashboard.wait("document.querySelectorAll('table.jobs tbody tr[data-id]').length === 2")
    assert dashboard.count("#run-now") == 0
    dashboard.go("#/webhooks")
    dashboard.wait("document.querySelector('#not-allowed')?.textContent === 'This page is not available to the viewer role.'")
    dashboard.assert_clean()
