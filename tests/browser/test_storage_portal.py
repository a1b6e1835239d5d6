"""Metered object storage in the dashboard (§8, §11) in headless Chromium,
against a real in-process server with a temp DB: the customer portal of a
signed-in customer user and the staff Storage page.

Set-up goes through the HTTP API: two customers with quotas (Acme Storage,
5 MB, with a 10.00 USD monthly budget, on a 4.00 USD plan since last month
with last month's invoice issued; Borealis Data, 2 MB), a customer user for
Acme, a file of Acme's put by the admin and a secret file of Borealis's put
with a Borealis-scoped key. Files go into the page through the real file
input (DevTools `DOM.setFileInputFiles`); uploads are XMLHttpRequest PUTs
whose progress events the test records; downloads are captured as the Blob
the page saves. Every test ends by checking that the page logged no console
error, threw nothing and broke no CSP rule. Screenshots at 1280 and 375 px go
to /tmp/shots/.
"""

import json
import os
from datetime import datetime, timedelta, timezone

import pytest

from tests.browser.test_dashboard import INJECTION, browser, dashboard  # noqa: F401  (the shared fixtures)
from tests.browser.test_invoice_workflow import CAPTURE_BLOBS, last_blob, snap
from tests.harness import make_key

PASSWORD = "portal-password-1"
TENANT = {"email": "ada@acme-storage.example", "name": "Ada Tenant", "role": "customer"}
VIEWER = {"email": "vera@meterline.example", "name": "Vera Viewer", "role": "viewer"}
ACME_QUOTA = 5_000_000
BOREALIS_QUOTA = 2_000_000
WELCOME = ("welcome/readme.txt", b"Welcome to your storage.\n" * 40)  # 1,000 bytes, put by the admin
SECRET = ("borealis-secret-plans.txt", b"Borealis eyes only\n" * 10)     # Borealis's, never shown to Acme
PLAN = {"code": "storage", "name": "Storage", "currency": "USD", "base_fee": "4.00",
        "charges": [{"meter": "storage_api_calls", "model": "per_unit", "unit_price": "0.001", "free_units": 1000},
                    {"meter": "storage_gb_days", "model": "per_unit", "unit_price": "0.25", "free_units": 30}]}
# The upcoming invoice is the base fee alone (usage is within the free units): 4.00 of a 10.00 budget = 40%.
BUDGET = {"monthly": "10.00", "alert_at_percent": [50, 80, 100]}

# Records [loaded, total] of every upload progress event the page's XMLHttpRequests fire.
RECORD_PROGRESS = """(() => {
  if (window.__progress) return;
  window.__progress = [];
  const send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.send = function (body) {
    this.upload.addEventListener('progress', (e) => window.__progress.push([e.loaded, e.total]));
    return send.call(this, body);
  };
})()"""


def object_path(key):
    """The object's address as the page writes it (encodeURIComponent on each segment)."""
    from urllib.parse import quote
    return "/v1/objects/" + "/".join(quote(segment, safe="-_.!~*'()") for segment in key.split("/"))


def put_object(client, key, data, content_type="text/plain", customer_id=None):
    path = object_path(key) + (f"?customer_id={customer_id}" if customer_id else "")
    reply = client.request("PUT", path, raw=data, headers={"Content-Type": content_type})
    assert reply.status in (200, 201), reply
    return reply.json


@pytest.fixture
def storage(server):
    admin = server.admin
    customers = {}
    for key, body in (("acme", {"name": "Acme Storage", "email": "ops@acme-storage.example",
                                "storage_quota_bytes": ACME_QUOTA, "budget": BUDGET}),
                      ("borealis", {"name": "Borealis Data", "email": "ops@borealis.example",
                                    "storage_quota_bytes": BOREALIS_QUOTA})):
        reply = admin.post("/v1/customers", body)
        assert reply.status == 201, reply
        customers[key] = reply.json["id"]
    acme = customers["acme"]
    for person in ({**TENANT, "customer_id": acme}, VIEWER):
        reply = admin.post("/v1/users", {**person, "password": PASSWORD})
        assert reply.status == 201, reply

    # Acme on a plan since the first of last month; last month's invoice issued.
    this_month = datetime.now(timezone.utc).date().replace(day=1)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    assert admin.post("/v1/plans", PLAN).status == 201
    reply = admin.post("/v1/subscriptions", {"customer_id": acme, "plan": "storage", "start": last_month.isoformat()})
    assert reply.status == 201, reply
    reply = admin.post("/v1/invoices/run", {"as_of": f"{this_month.isoformat()}T00:00:00Z"})
    assert reply.status == 200 and reply.json["created"] == 1, reply
    invoice_id = reply.json["invoice_ids"][0]
    reply = admin.post(f"/v1/invoices/{invoice_id}/finalize", {})
    assert reply.status == 200 and reply.json["status"] == "issued", reply

    put_object(admin, *WELCOME, customer_id=acme)
    borealis = server.client(make_key(server, customer_id=customers["borealis"], name="borealis uploads"))
    put_object(borealis, *SECRET)
    return {"customers": customers, "invoice": reply.json}


# -- helpers -------------------------------------------------------------------------

def choose_file(dashboard, selector, path):
    """Put a file into an <input type=file> the way a person picking it would."""
    found = dashboard.browser.send("Runtime.evaluate", {"expression": f"document.querySelector({json.dumps(selector)})"})
    dashboard.browser.send("DOM.setFileInputFiles", {"files": [path], "objectId": found["result"]["objectId"]})
    assert dashboard.js(f"document.querySelector({json.dumps(selector)}).files[0]?.name") == os.path.basename(path)


def write_file(tmp_path, name, size, seed):
    data = bytes((seed * 31 + i * 7 + (i >> 8)) % 256 for i in range(size))
    path = tmp_path / name
    path.write_bytes(data)
    return str(path), data


def quota_shown(dashboard, scope="#files-quota"):
    return dashboard.js(f"(() => {{ const q = document.querySelector({json.dumps(scope + ' .quota')});"
                        " return q && [+q.dataset.used, q.dataset.quota, q.querySelector('.quota-text').textContent,"
                        " !!q.querySelector('svg.quota-bar')]; })()")


def file_keys(dashboard):
    return dashboard.js("[...document.querySelectorAll('table.files tbody tr[data-key]:not(.confirm-row)')]"
                        ".map((row) => row.dataset.key)")


def row(key):
    return f"table.files tbody tr[data-key={json.dumps(key)}]:not(.confirm-row)"


def outcome(dashboard, kind, expected=None):
    """The text of the files panel's message line once it is of `kind` (and reads `expected`, when given)."""
    text = f"document.querySelector('#files .files-outcome .message.{kind}:not([hidden])')?.textContent"
    if expected is None:
        return dashboard.wait(text)
    dashboard.wait(f"{text} === {json.dumps(expected)}")
    return expected


def operations(server, customer_id):
    """storage_api_calls of the open period by operation, as the server counts them now."""
    reply = server.admin.get(f"/v1/customers/{customer_id}/usage?meter=storage_api_calls&group_by=operation")
    assert reply.status == 200, reply
    return {group["group"]["operation"]: int(group["value"]) for group in reply.json["usage"][0].get("groups", [])}


def shown_operations(dashboard):
    text = dashboard.text("article.meter-usage[data-meter=storage_api_calls] .groups") or ""
    found = {}
    for part in text.split(": ", 1)[-1].split(" · "):
        name, _, value = part.rpartition(" ")
        if name:
            found[name] = int(value)
    return found


def listed(server, customer_id):
    reply = server.admin.get(f"/v1/objects?customer_id={customer_id}")
    assert reply.status == 200, reply
    return reply.json


def nothing_of_borealis(dashboard):
    page = dashboard.js("document.documentElement.outerHTML")
    assert SECRET[0] not in page and "Borealis" not in page and "borealis" not in page


# -- the customer portal ---------------------------------------------------------------

def test_a_customer_user_sees_only_its_portal_and_uses_its_files(dashboard, storage, tmp_path):
    server = dashboard.server
    acme = storage["customers"]["acme"]
    dashboard.sign_in(email=TENANT["email"], password=PASSWORD, hash_="#/customers")
    dashboard.wait("document.querySelector('main h1')?.textContent === 'Acme Storage'")
    dashboard.js(CAPTURE_BLOBS)
    dashboard.js(RECORD_PROGRESS)

    # The portal and nothing else: no staff navigation, staff addresses lead home.
    assert dashboard.js("location.hash") == "#/portal"
    assert dashboard.text("#who") == f"{TENANT['email']} (customer)"
    assert dashboard.js("getComputedStyle(document.getElementById('nav')).display") == "none"
    assert dashboard.count("#nav a:not([hidden])") == 0
    assert dashboard.js("document.querySelector('#topbar .brand').getAttribute('href')") == "#/portal"
    for staff_page in ("#/storage", f"#/customers/{acme}", "#/invoices", "#/resources", "#/nowhere"):
        dashboard.go(staff_page)
        dashboard.wait("location.hash === '#/portal' && document.querySelector('main h1')?.textContent === 'Acme Storage'")

    # The upcoming invoice against the budget, and last month's invoice with its PDF.
    dashboard.wait("!!document.querySelector('#upcoming-invoice .budget')")
    assert dashboard.text("#upcoming-invoice .upcoming-total strong") == "4.00 USD"
    assert dashboard.text("#upcoming-invoice .budget-text") == "Spend 4.00 USD of the 10.00 USD monthly budget · 40%"
    assert dashboard.js("+document.querySelector('#upcoming-invoice .budget').dataset.percent") == 40
    assert dashboard.js("document.querySelector('#upcoming-invoice svg.budget-bar .fill').getAttribute('width')") == "40.000"
    invoice = storage["invoice"]
    dashboard.wait("document.querySelectorAll('#portal-invoices tbody tr[data-id]').length === 1")
    assert dashboard.text("#portal-invoices td.invoice a") == invoice["number"]
    assert dashboard.text("#portal-invoices td.total") == "4.00 USD"
    dashboard.click(f"#portal-invoices button[data-pdf='{invoice['id']}']")
    pdf = last_blob(dashboard, 1)
    assert pdf["type"] == "application/pdf" and pdf["bytes"].startswith(b"%PDF-")

    # Files: the admin's file is there, under a 5 MB quota.
    dashboard.wait(f"!!document.querySelector({json.dumps(row(WELCOME[0]))})")
    assert file_keys(dashboard) == [WELCOME[0]]
    assert quota_shown(dashboard) == [1000, str(ACME_QUOTA), "1 kB of 5 MB · <1%", True]
    calls_before = operations(server, acme)

    # Upload through the real file input, under a name with markup in it: a progress bar, then the list.
    path, data = write_file(tmp_path, "measurements.csv", 1_500_000, seed=1)
    key = f"reports/{INJECTION}.csv"
    choose_file(dashboard, "#upload-file", path)
    dashboard.fill("#upload-key", key)
    dashboard.click("#upload-form button[type=submit]")
    dashboard.wait("document.querySelector('#upload-progress')?.dataset.state === 'done'", timeout=20)
    assert dashboard.js("document.querySelector('#upload-progress progress').value") == 100
    outcome(dashboard, "ok", f"Uploaded “{key}” (1.5 MB).")
    progress = dashboard.js("window.__progress")
    assert progress and progress[-1] == [len(data), len(data)], progress
    assert all(loaded <= total for loaded, total in progress)
    dashboard.wait(f"!!document.querySelector({json.dumps(row(key))})")
    assert sorted(file_keys(dashboard)) == sorted([WELCOME[0], key])
    assert dashboard.text(f"{row(key)} .size") == "1.5 MB"
    assert dashboard.text(f"{row(key)} .type") == "text/csv"
    assert dashboard.count("main img, main script") == 0  # the name stayed text
    stored = listed(server, acme)
    assert stored["total_bytes"] == 1000 + len(data)
    dashboard.wait(f"+document.querySelector('#files-quota .quota')?.dataset.used === {1000 + len(data)}")
    assert quota_shown(dashboard)[2] == "1.5 MB of 5 MB · 30%"

    # The PUT is counted at once, and the usage charts follow it without a reload.
    calls_after = operations(server, acme)
    assert calls_after.get("put", 0) == calls_before.get("put", 0) + 1
    dashboard.wait(f"(document.querySelector('article.meter-usage[data-meter=storage_api_calls] .groups')?.textContent"
                   f" || '').includes('put {calls_after['put']}')")
    assert shown_operations(dashboard)["put"] == calls_after["put"]
    assert dashboard.count("article.meter-usage[data-meter=storage_api_calls] svg.chart rect.bar") >= 1

    # Download: the very bytes come back, through fetch and a Blob.
    dashboard.click(f"{row(key)} button.download")
    saved = last_blob(dashboard, 2)
    assert saved["size"] == len(data) and saved["bytes"] == data
    outcome(dashboard, "ok", f"Downloaded “{key}” (1.5 MB).")

    # Over the quota: the server's 409 in words, nothing stored.
    big_path, big = write_file(tmp_path, "too-big.bin", 4_000_000, seed=2)
    dashboard.allowed_failures.add((object_path("too-big.bin"), 409))
    choose_file(dashboard, "#upload-file", big_path)
    dashboard.click("#upload-form button[type=submit]")
    dashboard.wait("document.querySelector('#upload-progress')?.dataset.state === 'failed'", timeout=20)
    message = outcome(dashboard, "error")
    assert message == ("Could not upload “too-big.bin”: it would go over the storage quota."
                       " 1.5 MB of 5 MB is used; 3.5 MB is free and this file is 4 MB."), message
    assert listed(server, acme)["total_bytes"] == 1000 + len(data)
    assert "too-big.bin" not in file_keys(dashboard)

    snap(dashboard, "portal", 1280)
    snap(dashboard, "portal", 375)

    # Reads are counted in memory: the scheduler's run writes them; delete after a confirmation.
    assert server.admin.post("/v1/jobs/run").status == 200
    dashboard.click(f"{row(key)} button.delete")
    dashboard.wait("!!document.querySelector('table.files tr.confirm-row')")
    assert dashboard.text("table.files tr.confirm-row p") == f"Delete “{key}” (1.5 MB)? This cannot be undone."
    snap(dashboard, "portal-delete", 375)
    assert len(listed(server, acme)["data"]) == 2  # nothing deleted before the confirmation
    dashboard.click("table.files tr.confirm-row button.confirm")
    outcome(dashboard, "ok", f"Deleted “{key}” (1.5 MB).")
    dashboard.wait(f"!document.querySelector({json.dumps(row(key))})")
    assert [item["key"] for item in listed(server, acme)["data"]] == [WELCOME[0]]
    dashboard.wait("+document.querySelector('#files-quota .quota')?.dataset.used === 1000")
    dashboard.wait("(document.querySelector('article.meter-usage[data-meter=storage_api_calls] .groups')?.textContent"
                   " || '').includes('delete 1')")
    # Every tenant request counts, a refused one too: two PUTs (one over the quota), one DELETE, the GET.
    counted = operations(server, acme)
    shown = shown_operations(dashboard)
    assert counted["put"] == calls_after["put"] + 1 and counted["delete"] == 1 and counted.get("get", 0) >= 1, counted
    assert {name: shown[name] for name in ("put", "delete", "get")} == {
        name: counted[name] for name in ("put", "delete", "get")}, (shown, counted)

    # Nothing of the other tenant anywhere, and still no staff navigation.
    nothing_of_borealis(dashboard)
    assert dashboard.count("#nav a:not([hidden])") == 0
    dashboard.assert_clean()


def test_the_portal_invoice_page_and_a_phone(dashboard, storage):
    invoice = storage["invoice"]
    dashboard.sign_in(email=TENANT["email"], password=PASSWORD, hash_=f"#/portal/invoices/{invoice['id']}")
    dashboard.wait(f"document.querySelector('main h1')?.textContent === {json.dumps(invoice['number'])}")
    dashboard.wait("!!document.querySelector('.invoice-lines .totals')")
    assert dashboard.text(".invoice-summary [data-key=total] dd") == "4.00 USD"
    assert dashboard.text(".invoice-lines .totals .total-total dd") == "4.00 USD"
    assert dashboard.count("#download-pdf") == 1 and dashboard.count("#nav a:not([hidden])") == 0
    snap(dashboard, "portal-invoice", 1280)
    snap(dashboard, "portal-invoice", 375)
    # Another customer's invoice does not exist for this user.
    dashboard.allowed_failures.add(("/v1/invoices/999999", 404))
    dashboard.go("#/portal/invoices/999999")
    dashboard.wait("document.querySelector('main .message.error')?.textContent.startsWith('Could not load the invoice')")
    dashboard.click(".page-head a.back")
    dashboard.wait("document.querySelector('main h1')?.textContent === 'Acme Storage'"
                   " && !!document.querySelector('#files tbody tr[data-key]')")
    nothing_of_borealis(dashboard)
    dashboard.assert_clean()


# -- the staff Storage page --------------------------------------------------------------

def test_staff_see_storage_per_customer_and_manage_a_customers_files(dashboard, storage, tmp_path):
    server = dashboard.server
    acme, borealis = storage["customers"]["acme"], storage["customers"]["borealis"]
    # A third customer without a quota, named like markup, stores a file; a fourth stores nothing.
    reply = server.admin.post("/v1/customers", {"name": INJECTION, "email": "ops@markup.example"})
    assert reply.status == 201, reply
    markup = reply.json["id"]
    put_object(server.admin, "notes.txt", b"no quota here\n", customer_id=markup)
    reply = server.admin.post("/v1/customers", {"name": "Dormant Ltd", "email": "ops@dormant.example"})
    assert reply.status == 201, reply
    dormant = reply.json["id"]
    dashboard.sign_in(hash_="#/storage")
    dashboard.signed_in()
    assert "Storage" in dashboard.texts("#nav a:not([hidden])")
    assert dashboard.text("#nav a[aria-current=page]") == "Storage"

    # The customers that store files or have a quota, with their quota bars ("no quota" without one).
    dashboard.wait("document.querySelectorAll('table.storage tbody tr[data-id]').length === 3")
    assert dashboard.texts("table.storage td.customer > a") == ["Acme Storage", "Borealis Data", INJECTION]
    assert dashboard.count("table.storage svg.quota-bar") == 2
    assert dashboard.count("main img") == 0
    assert dashboard.texts("table.storage td.objects") == ["1", "1", "1"]
    assert quota_shown(dashboard, f"table.storage tr[data-id='{markup}']") == [14, "", "14 bytes stored · no quota", False]
    assert quota_shown(dashboard, f"table.storage tr[data-id='{acme}']") == [
        1000, str(ACME_QUOTA), "1 kB of 5 MB · <1%", True]
    assert quota_shown(dashboard, f"table.storage tr[data-id='{borealis}']") == [
        len(SECRET[1]), str(BOREALIS_QUOTA), f"{len(SECRET[1])} bytes of 2 MB · <1%", True]
    snap(dashboard, "storage", 1280)

    # Choose Borealis: its files, with upload and delete for the admin.
    dashboard.click(f"table.storage tr[data-id='{borealis}'] td.customer > a")
    dashboard.wait(f"location.hash === '#/storage/{borealis}'"
                   f" && !!document.querySelector({json.dumps(row(SECRET[0]))})")
    dashboard.wait("document.querySelector('#files .files-title')?.textContent === 'Files of Borealis Data'")
    assert dashboard.js(f"document.querySelector(\"table.storage tr[data-id='{borealis}']\").classList.contains('selected')")
    assert file_keys(dashboard) == [SECRET[0]]
    assert dashboard.count("#upload-form") == 1 and dashboard.count(f"{row(SECRET[0])} button.delete") == 1

    # The admin uploads for Borealis; the table's bar follows.
    path, data = write_file(tmp_path, "handover.txt", 300_000, seed=3)
    choose_file(dashboard, "#upload-file", path)
    dashboard.click("#upload-form button[type=submit]")
    outcome(dashboard, "ok", "Uploaded “handover.txt” (300 kB).")
    dashboard.wait(f"!!document.querySelector({json.dumps(row('handover.txt'))})")
    total = len(SECRET[1]) + len(data)
    assert listed(server, borealis)["total_bytes"] == total
    dashboard.wait(f"+document.querySelector(\"table.storage tr[data-id='{borealis}'] .quota\")?.dataset.used === {total}")
    assert dashboard.text(f"table.storage tr[data-id='{borealis}'] td.objects") == "2"
    dashboard.js(CAPTURE_BLOBS)
    dashboard.click(f"{row('handover.txt')} button.download")
    assert last_blob(dashboard, 1)["bytes"] == data
    snap(dashboard, "storage-files", 1280)
    snap(dashboard, "storage-files", 375)
    dashboard.click(f"{row('handover.txt')} button.delete")
    dashboard.click("table.files tr.confirm-row button.confirm")
    outcome(dashboard, "ok", "Deleted “handover.txt” (300 kB).")
    assert [item["key"] for item in listed(server, borealis)["data"]] == [SECRET[0]]

    # A customer that stores nothing yet opens from the list of all customers.
    dashboard.click("details.other > summary")
    dashboard.wait(f"!!document.querySelector('#storage-customer option[value=\"{dormant}\"]')")
    dashboard.fill("#storage-customer", str(dormant))
    dashboard.click("details.other button[type=submit]")
    dashboard.wait(f"location.hash === '#/storage/{dormant}'"
                   " && document.querySelector('table.files td.empty')?.textContent === 'No files yet.'")
    dashboard.wait("document.querySelector('#files .files-title')?.textContent === 'Files of Dormant Ltd'")
    assert quota_shown(dashboard)[1:] == ["", "0 bytes stored · no quota", False]

    # Staff see the same budget bar on the customer's page.
    dashboard.go(f"#/customers/{acme}")
    dashboard.wait("document.querySelector('#upcoming-invoice .budget-text')?.textContent"
                   " === 'Spend 4.00 USD of the 10.00 USD monthly budget · 40%'")

    # A viewer reads the same, without upload or delete.
    dashboard.click("#sign-out")
    dashboard.wait("!!document.querySelector('#signin-form')")
    dashboard.sign_in(email=VIEWER["email"], password=PASSWORD, hash_=f"#/storage/{acme}")
    dashboard.wait(f"!!document.querySelector({json.dumps(row(WELCOME[0]))})")
    dashboard.wait("document.querySelector('#files .files-title')?.textContent === 'Files of Acme Storage'")
    assert dashboard.count("#upload-form, table.files button.delete") == 0
    assert dashboard.count(f"{row(WELCOME[0])} button.download") == 1
    assert dashboard.text("#files .read-only") == "Read only: admin and finance upload and delete files."
    assert "Storage" in dashboard.texts("#nav a:not([hidden])")
    dashboard.assert_clean()
