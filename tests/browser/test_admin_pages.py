"""Users and API keys (#/users) and the audit log (#/audit) in headless
Chromium (§9, §11), against a real server with a temp DB.

The admin creates users (staff and customer), changes a role, disables and
deletes; creates API keys whose secret is shown once (and is gone after
leaving the page), uses one against the API, revokes it (401 after); the
audit log shows those changes, its filters narrow the table, live in the
address and survive a reload. Finance sees customer users only. Every test
ends by checking that the page logged no console error, threw nothing, and
broke no CSP rule. Screenshots at desktop and phone widths go to
/tmp/meterline-shots/ (and the test's tmp_path).
"""

import json
import re
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from billing import clock
from tests.browser.test_billing_pages import fits_the_screen
from tests.browser.test_dashboard import INJECTION, browser, dashboard  # noqa: F401  (the shared fixtures)
from tests.harness import ADMIN_KEY

ZONE = "Australia/Adelaide"  # +10:30 in March: local times differ from UTC by a non-whole hour
OLD_CHANGE = datetime(2025, 3, 1, 10, 0, tzinfo=timezone.utc)  # 20:30 in Adelaide
STAFF_NAV = ["Overview", "Customers", "Invoices", "Resources", "Storage", "Plans", "Meters", "Events", "Alerts"]
PASSWORD = "people-password-1"
FINANCE = {"email": "fin@example.com", "name": "Fiona Finance", "role": "finance", "password": PASSWORD}
VIEWER = {"email": "viewer@example.com", "name": "Vic Viewer", "role": "viewer", "password": PASSWORD}


@pytest.fixture
def acme(server):
    reply = server.admin.post("/v1/customers", {"name": "Acme Corp", "email": "billing@acme.example"})
    assert reply.status == 201, reply
    return reply.json["id"]


# -- helpers -------------------------------------------------------------------------

def snap(dashboard, name, width):
    """A full-page screenshot at `width` CSS pixels (a phone below 640) that must fit the screen."""
    phone = width < 640
    dashboard.browser.send("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": 812 if phone else 900, "deviceScaleFactor": 2 if phone else 1, "mobile": phone})
    dashboard.js("new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    assert fits_the_screen(dashboard), f"{name}: something is wider than the {width} px screen"
    dashboard.js("window.scrollTo(0, 0)")
    dashboard.shoot(f"{name}-{width}")
    dashboard.browser.send("Emulation.clearDeviceMetricsOverride")


def sign_in_as(dashboard, person, hash_):
    if dashboard.js("location.protocol.startsWith('http') && !!sessionStorage.getItem('meterline.token')"):
        dashboard.click("#sign-out")
        dashboard.wait("!!document.querySelector('#signin-form')")
    dashboard.sign_in(email=person["email"], password=person["password"], hash_=hash_)
    dashboard.wait(f"document.querySelector('#who')?.textContent === {json.dumps(person['email'] + ' (' + person['role'] + ')')}")


def add_person(server, person):
    reply = server.admin.post("/v1/users", person)
    assert reply.status == 201, reply
    return reply.json["id"]


def user_rows(dashboard):
    return dashboard.js("[...document.querySelectorAll('table.users tbody tr[data-id]')].map((tr) => ({"
                        "id: +tr.dataset.id, email: tr.querySelector('.email').textContent,"
                        " role: tr.querySelector('.change-role')?.value ?? tr.querySelector('td.role').textContent,"
                        " customer: tr.querySelector('td.customer').textContent,"
                        " status: tr.querySelector('td.status').textContent,"
                        " actions: [...tr.querySelectorAll('td.row-actions button')].map((b) => b.textContent)}))")


def row_of(dashboard, email):
    rows = [row for row in user_rows(dashboard) if row["email"] == email]
    return rows[0] if rows else None


def key_rows(dashboard):
    return dashboard.js("[...document.querySelectorAll('table.api-keys tbody tr[data-id]')].map((tr) => ({"
                        "id: +tr.dataset.id, revoked: tr.dataset.revoked === 'true',"
                        " cells: [...tr.cells].map((td) => td.textContent)}))")


def message(dashboard, scope, kind):
    return dashboard.text(f"{scope} .message.{kind}")


def wait_message(dashboard, scope, kind, part):
    dashboard.wait(f"document.querySelector({json.dumps(scope + ' .message.' + kind)})?.textContent"
                   f".includes({json.dumps(part)})")


def forget_message(dashboard, scope):
    """Empty the scope's message line, so a wait sees the next one, not the last."""
    dashboard.js(f"(() => {{ const line = document.querySelector({json.dumps(scope + ' > .message')});"
                 " line.textContent = ''; line.className = 'message'; line.hidden = true; })()")


def submit_user(dashboard, email, name, role, password, customer=None):
    form = "#create-user"
    dashboard.fill(f"{form} [name=email]", email)
    dashboard.fill(f"{form} [name=name]", name)
    dashboard.fill(f"{form} [name=role]", role)
    if customer is not None:
        dashboard.wait(f"!!document.querySelector('{form} [name=customer_id] option[value=\"{customer}\"]')")
        dashboard.fill(f"{form} [name=customer_id]", str(customer))
    dashboard.fill(f"{form} [name=password]", password)
    forget_message(dashboard, "#new-user")
    dashboard.click(f"{form} button[type=submit]")


def create_key_in_page(dashboard, name, access, customer=None):
    dashboard.fill("#create-key [name=name]", name)
    dashboard.fill("#create-key [name=role]", access)
    if customer is not None:
        dashboard.wait(f"!!document.querySelector('#create-key [name=customer_id] option[value=\"{customer}\"]')")
        dashboard.fill("#create-key [name=customer_id]", str(customer))
    forget_message(dashboard, "#new-key")
    dashboard.click("#create-key button[type=submit]")


def audit_rows(dashboard):
    return dashboard.js("[...document.querySelectorAll('table.audit tbody tr[data-id]')].map((tr) => ({"
                        "id: +tr.dataset.id, action: tr.dataset.action, entity: tr.dataset.entity,"
                        " entity_id: tr.dataset.entityId, time: tr.querySelector('td.at').textContent,"
                        " at: tr.querySelector('td.at time')?.getAttribute('datetime'),"
                        " actor: tr.querySelector('td.actor').dataset.actor,"
                        " actor_name: tr.querySelector('.actor-name').textContent,"
                        " change: tr.querySelector('td.change .summary').textContent}))")


def audit_ids(dashboard):
    return [row["id"] for row in audit_rows(dashboard)]


def wait_audit(dashboard, entries):
    """Until the table lists exactly these entries (API answers), in order."""
    ids = ",".join(str(entry["id"]) for entry in entries)
    dashboard.wait(f"[...document.querySelectorAll('table.audit tbody tr[data-id]')].map((tr) => tr.dataset.id)"
                   f".join() === '{ids}'")


def reload(dashboard):
    """Reload the page (same address) and wait for the new document's dashboard."""
    dashboard.js("window.__old_document = true")
    dashboard.browser.send("Page.reload")
    dashboard.wait("!window.__old_document && document.readyState === 'complete'"
                   " && !document.querySelector('#topbar').hidden")


def api_log(server, **filters):
    query = "&".join(f"{name}={value}" for name, value in filters.items())
    reply = server.admin.get(f"/v1/audit-log?limit=1000&{query}")
    assert reply.status == 200, reply
    return reply.json["data"]


def local(text, zone=ZONE):
    """An API time as the page shows it in the browser's timezone."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")


# -- users ---------------------------------------------------------------------------

def create_staff_user_refusing_bad_input(dashboard):
    """Vera (viewer) through the form; then a taken e-mail, a short password and a
    customer user without its customer are refused, and nothing changes."""
    server = dashboard.server
    dashboard.click("#new-user > summary")
    assert dashboard.js("document.querySelector('#create-user [name=customer_id]').closest('.field').hidden")
    assert dashboard.texts("#create-user [name=role] option") == [
        "admin", "finance", "customer success", "sales", "viewer", "ingest", "customer (portal)"]
    submit_user(dashboard, "vera@example.com", "Vera <b>Viewer</b>", "viewer", PASSWORD)
    wait_message(dashboard, "#new-user", "ok", "Created the viewer user vera@example.com")
    dashboard.wait("document.querySelectorAll('table.users tbody tr[data-id]').length === 2")
    vera = row_of(dashboard, "vera@example.com")
    assert (vera["role"], vera["customer"], vera["status"], vera["actions"]) == ("viewer", "—", "active",
                                                                               ["Disable", "Delete"])
    assert dashboard.text(f"table.users tr[data-id='{vera['id']}'] .name") == "Vera <b>Viewer</b>"
    assert dashboard.count("table.users b") == 0
    assert dashboard.js("document.querySelector('#create-user [name=email]').value") == ""  # the form is reset

    users_before = server.admin.get("/v1/users").json["data"]
    submit_user(dashboard, "VERA@example.com", "Vera again", "viewer", PASSWORD)
    wait_message(dashboard, "#new-user", "error", "already exists")
    submit_user(dashboard, "short@example.com", "Shorty", "finance", "1234")
    wait_message(dashboard, "#new-user", "error", "at least 8 characters")
    assert dashboard.js("document.querySelector('#create-user [name=password]').classList.contains('invalid')")
    submit_user(dashboard, "portal@acme.example", "Pat Portal", "customer", PASSWORD)
    wait_message(dashboard, "#new-user", "error", "Choose the customer")
    assert not dashboard.js("document.querySelector('#create-user [name=customer_id]').closest('.field').hidden")
    assert server.admin.get("/v1/users").json["data"] == users_before
    snap(dashboard, "users-create-error", 1280)
    return vera


def create_customer_user(dashboard, acme):
    submit_user(dashboard, "portal@acme.example", "Pat Portal", "customer", PASSWORD, customer=acme)
    wait_message(dashboard, "#new-user", "ok", "Created the customer user portal@acme.example")
    dashboard.wait("document.querySelectorAll('table.users tbody tr[data-id]').length === 3")
    dashboard.wait("document.querySelector(\"table.users tr[data-email='portal@acme.example'] td.customer\")"
                   "?.textContent === 'Acme Corp'")
    portal = row_of(dashboard, "portal@acme.example")
    assert portal["role"] == "customer"  # a customer user stays one: no role select
    assert dashboard.count(f"table.users tr[data-id='{portal['id']}'] .change-role") == 0
    created = dashboard.server.admin.get(f"/v1/users/{portal['id']}").json
    assert (created["role"], created["customer_id"], created["name"]) == ("customer", acme, "Pat Portal")
    return portal


def change_role(dashboard, vera):
    dashboard.fill(f"table.users tr[data-id='{vera['id']}'] .change-role", "finance")
    wait_message(dashboard, "#users", "ok", "vera@example.com is now finance (was viewer)")
    assert dashboard.server.admin.get(f"/v1/users/{vera['id']}").json["role"] == "finance"
    dashboard.wait(f"document.querySelector(\"table.users tr[data-id='{vera['id']}'] .change-role\")?.value === 'finance'")


def disable_and_enable(dashboard, portal):
    """A disabled user's sign-in is refused; enabled again, it works."""
    server = dashboard.server
    dashboard.click(f"table.users tr[data-id='{portal['id']}'] .toggle-user")
    wait_message(dashboard, "#users", "ok", "portal@acme.example is disabled")
    dashboard.wait(f"document.querySelector(\"table.users tr[data-id='{portal['id']}'] td.status\")?.textContent === 'disabled'")
    login = {"email": "portal@acme.example", "password": PASSWORD}
    assert server.client().post("/v1/auth/login", login).status == 401
    dashboard.click(f"table.users tr[data-id='{portal['id']}'] .toggle-user")
    wait_message(dashboard, "#users", "ok", "portal@acme.example may sign in again")
    assert server.client().post("/v1/auth/login", login).status == 200


def delete_user(dashboard, vera):
    """The first click asks, the second deletes."""
    server = dashboard.server
    delete = f"table.users tr[data-id='{vera['id']}'] .delete-user"
    dashboard.click(delete)
    assert dashboard.text(delete) == "Confirm delete"
    assert server.admin.get(f"/v1/users/{vera['id']}").status == 200
    dashboard.click(delete)
    wait_message(dashboard, "#users", "ok", "Deleted vera@example.com")
    dashboard.wait("document.querySelectorAll('table.users tbody tr[data-id]').length === 2")
    assert server.admin.get(f"/v1/users/{vera['id']}").status == 404


def test_users_page_creates_staff_and_customer_users_changes_a_role_disables_and_deletes(dashboard, acme):
    dashboard.allowed_failures.update({("/v1/users", 400), ("/v1/users", 409), ("/v1/auth/login", 401)})
    dashboard.sign_in(hash_="#/users")
    dashboard.signed_in()
    assert dashboard.texts("#nav a:not([hidden])") == [*STAFF_NAV, "Webhooks", "Jobs", "Users", "Audit log"]
    assert dashboard.text("#nav a[aria-current=page]") == "Users"
    assert dashboard.text("main h1") == "Users and API keys"
    dashboard.wait("document.querySelectorAll('table.users tbody tr[data-id]').length === 1")
    me = row_of(dashboard, "admin@localhost")
    assert (me["role"], me["status"], me["actions"]) == ("admin", "active", [])  # no way to lock oneself out
    assert dashboard.count("table.users tr[data-email='admin@localhost'] .change-role") == 0

    vera = create_staff_user_refusing_bad_input(dashboard)
    portal = create_customer_user(dashboard, acme)
    change_role(dashboard, vera)
    disable_and_enable(dashboard, portal)
    snap(dashboard, "users", 1280)
    snap(dashboard, "users", 375)
    delete_user(dashboard, vera)
    dashboard.assert_clean()


# -- API keys ------------------------------------------------------------------------

def create_viewer_key(dashboard):
    """A viewer key through the form: its secret shown once, read-only; listed by prefix."""
    server = dashboard.server
    dashboard.click("#new-key > summary")
    assert dashboard.js("document.querySelector('#create-key [name=role]').value") == "viewer"
    create_key_in_page(dashboard, "Reporting <script>", "viewer")
    dashboard.wait("!document.querySelector('#api-key-secret').hidden")
    secret = dashboard.js("document.querySelector('#api-key-secret-value').value")
    assert re.fullmatch(r"mk_[A-Za-z0-9_-]{43}", secret)
    assert dashboard.js("document.querySelector('#api-key-secret-value').readOnly")
    assert "will not be shown again" in dashboard.text("#api-key-secret")
    dashboard.wait("document.querySelectorAll('table.api-keys tbody tr[data-id]').length === 2")
    row = [row for row in key_rows(dashboard) if row["cells"][0] == "Reporting <script>"][0]
    assert row["cells"][1:3] == ["viewer", f"{secret[:8]}…"]
    assert row["cells"][4] == "active" and not row["revoked"]
    assert secret not in json.dumps(server.admin.get("/v1/api-keys").json)  # listed by prefix only
    return secret, row["id"]


def key_works(server, secret):
    client = server.client(secret)
    me = client.get("/v1/auth/me")
    assert me.status == 200 and (me.json["role"], me.json["api_key"]["name"]) == ("viewer", "Reporting <script>")
    assert client.get("/v1/customers").status == 200
    assert client.post("/v1/customers", {"name": "Nope", "email": "n@example.com"}).status == 403
    return client


def copy_secret(dashboard, secret):
    """The clipboard when the browser allows it, else the text is selected for Ctrl+C."""
    dashboard.js("navigator.clipboard.writeText = async (text) => { window.__copied = text; }")
    dashboard.click("#copy-api-key")
    dashboard.wait("document.querySelector('#api-key-secret .copy-note')?.textContent === 'Copied to the clipboard.'")
    assert dashboard.js("window.__copied") == secret
    dashboard.js("navigator.clipboard.writeText = () => Promise.reject(new Error('denied'))")
    dashboard.click("#copy-api-key")
    dashboard.wait("document.querySelector('#api-key-secret .copy-note')?.textContent.startsWith('Selected')")
    assert dashboard.js("(() => { const input = document.querySelector('#api-key-secret-value');"
                        " return document.activeElement === input && input.selectionStart === 0"
                        " && input.selectionEnd === input.value.length; })()")


def create_customer_key(dashboard, acme, first_secret):
    """A customer key needs its customer: nothing is created without one."""
    server = dashboard.server
    create_key_in_page(dashboard, "Acme portal", "customer")
    wait_message(dashboard, "#new-key", "error", "Choose the customer")
    assert len(server.admin.get("/v1/api-keys").json["data"]) == 2
    assert dashboard.js("document.querySelector('#api-key-secret').hidden")  # the first secret is gone already
    create_key_in_page(dashboard, "Acme portal", "customer", customer=acme)
    wait_message(dashboard, "#new-key", "ok", "Created the API key “Acme portal”")
    second = dashboard.js("document.querySelector('#api-key-secret-value').value")
    assert second != first_secret and first_secret not in dashboard.js("document.body.innerHTML")
    dashboard.wait("document.querySelectorAll('table.api-keys tbody tr[data-id]').length === 3")
    dashboard.wait("[...document.querySelectorAll('table.api-keys td.access')].some((td) => td.textContent === 'customer Acme Corp')")
    assert server.client(second).get("/v1/auth/me").json["customer_id"] == acme
    return second


def secrets_gone_after_leaving(dashboard, *secrets):
    dashboard.go("#/customers")
    dashboard.wait("document.querySelectorAll('table.customers tbody tr[data-id]').length === 1")
    dashboard.go("#/users")
    dashboard.wait("document.querySelectorAll('table.api-keys tbody tr[data-id]').length === 3")
    assert dashboard.js("document.querySelector('#api-key-secret').hidden")
    assert dashboard.count("#api-key-secret-value") == 0
    page = dashboard.js("document.documentElement.outerHTML + [...document.querySelectorAll('input')].map((i) => i.value).join()")
    assert not [secret for secret in secrets if secret in page]


def revoke_key(dashboard, key_id, client):
    """The first click asks, the second revokes; the key then gets 401."""
    revoke = f"table.api-keys tr[data-id='{key_id}'] .revoke-key"
    dashboard.click(revoke)
    assert dashboard.text(revoke) == "Confirm revoke"
    assert client.get("/v1/customers").status == 200
    dashboard.click(revoke)
    wait_message(dashboard, "#api-keys", "ok", "Revoked the API key “Reporting <script>”")
    dashboard.wait(f"document.querySelector(\"table.api-keys tr[data-id='{key_id}']\")?.dataset.revoked === 'true'")
    revoked = [r for r in key_rows(dashboard) if r["id"] == key_id][0]
    assert revoked["cells"][4].startswith("revoked") and revoked["cells"][5] == ""  # no second revoke
    reply = client.get("/v1/customers")
    assert reply.status == 401 and reply.error_code == "unauthenticated", reply


def test_api_key_secret_is_shown_once_the_key_works_and_once_revoked_gets_401(dashboard, acme):
    server = dashboard.server
    dashboard.sign_in(hash_="#/users")
    dashboard.signed_in()
    dashboard.wait("document.querySelectorAll('table.api-keys tbody tr[data-id]').length === 1")  # the bootstrap key
    bootstrap = key_rows(dashboard)[0]
    assert bootstrap["cells"][:2] == ["bootstrap admin key", "admin"] and not bootstrap["revoked"]
    assert dashboard.js("document.querySelector('#api-key-secret').hidden")

    secret, key_id = create_viewer_key(dashboard)
    client = key_works(server, secret)
    copy_secret(dashboard, secret)
    snap(dashboard, "api-key-secret", 1280)
    snap(dashboard, "api-key-secret", 375)
    second = create_customer_key(dashboard, acme, secret)
    secrets_gone_after_leaving(dashboard, secret, second)
    revoke_key(dashboard, key_id, client)
    assert server.client(second).get("/v1/auth/me").status == 200  # the other key is untouched
    snap(dashboard, "api-keys-revoked", 375)
    dashboard.assert_clean()


def test_signed_in_with_an_api_key_that_key_cannot_be_revoked_from_the_page(dashboard):
    dashboard.open("#/users")
    dashboard.wait("!!document.querySelector('#key-form')")
    dashboard.click("details.key-option > summary")
    dashboard.fill("#key-form [name=key]", ADMIN_KEY)
    dashboard.click("#key-form button[type=submit]")
    dashboard.wait("document.querySelectorAll('table.api-keys tbody tr[data-id]').length === 1")
    assert dashboard.texts("table.api-keys tbody tr td.name") == ["bootstrap admin keyyou"]
    assert dashboard.count("table.api-keys .revoke-key") == 0
    assert dashboard.count("table.users .delete-user") == 1  # signed in with a key, no user is "you"
    dashboard.assert_clean()


def test_finance_manages_customer_users_only_and_a_viewer_has_no_users_page(dashboard, acme):
    server = dashboard.server
    finance = add_person(server, FINANCE)
    add_person(server, VIEWER)
    sign_in_as(dashboard, FINANCE, "#/users")
    assert dashboard.texts("#nav a:not([hidden])") == [*STAFF_NAV, "Jobs", "Users", "Audit log"]
    dashboard.wait("document.querySelector('table.users td.empty')?.textContent === 'No customer users yet.'")
    assert dashboard.text("main h1") == "Customer users"
    assert dashboard.count("#api-keys, #new-key") == 0
    assert dashboard.texts("#create-user [name=role] option") == ["customer (portal)"]
    dashboard.click("#new-user > summary")
    submit_user(dashboard, "portal@acme.example", "Pat Portal", "customer", PASSWORD, customer=acme)
    wait_message(dashboard, "#new-user", "ok", "Created the customer user portal@acme.example")
    dashboard.wait("document.querySelectorAll('table.users tbody tr[data-id]').length === 1")
    assert row_of(dashboard, "portal@acme.example")["actions"] == ["Disable", "Delete"]
    snap(dashboard, "users-finance", 375)

    sign_in_as(dashboard, VIEWER, "#/users")
    assert dashboard.texts("#nav a:not([hidden])") == [*STAFF_NAV, "Jobs", "Audit log"]
    dashboard.wait("document.querySelector('#not-allowed')?.textContent === 'This page is not available to the viewer role.'")
    dashboard.go("#/audit")  # a viewer reads the audit log: the customer user finance created is there
    # (a viewer may not list users, so the actor shows as its label)
    dashboard.wait("document.querySelector('table.audit tr[data-action=\"user.create\"] .actor-name')?.textContent"
                   f" === 'user:{finance}'")
    dashboard.assert_clean()


# -- audit log -----------------------------------------------------------------------

TIME_RANGE = {"from": "2025-03-01T09:30:00Z", "to": "2025-03-01T10:30:00Z"}  # 20:00–21:00 in Adelaide


def make_history(dashboard):
    """An old change at a known instant (the server runs in this process: its clock
    can be pinned); then, signed in, changes by the admin user (user:1, through the
    page's own token) and 50 customers by the admin key (key:1), for a second page."""
    server = dashboard.server
    clock.pin(OLD_CHANGE)
    old = server.admin.post("/v1/customers", {"name": INJECTION, "email": "old@example.com"})
    clock.pin(None)
    assert old.status == 201, old
    dashboard.sign_in(hash_="#/audit")
    dashboard.signed_in()
    assert dashboard.text("#nav a[aria-current=page]") == "Audit log"
    me = server.client(dashboard.js("sessionStorage.getItem('meterline.token')"))
    vera = me.post("/v1/users", {**VIEWER, "email": "vera@example.com"}).json
    assert me.patch(f"/v1/users/{vera['id']}", {"role": "finance"}).status == 200
    key = me.post("/v1/api-keys", {"name": "CI ingest", "role": "ingest"}).json
    assert me.delete(f"/v1/api-keys/{key['id']}").status == 200
    for number in range(50):
        assert server.admin.post("/v1/customers", {"name": f"Bulk {number}", "email": f"b{number}@example.com"}).status == 201
    everything = api_log(server)
    assert len(everything) == 57  # with the page's sign-in (auth.login)
    return {"old": str(old.json["id"]), "vera": str(vera["id"]), "key": str(key["id"]), "everything": everything}


def check_the_table(dashboard, history):
    """Every entry, two pages, times in the browser's timezone, readable actors and changes."""
    everything = history["everything"]
    dashboard.go("#/customers")
    dashboard.go("#/audit")
    wait_audit(dashboard, everything[:50])
    assert dashboard.text("#audit-zone") == f"Times in {ZONE}."
    dashboard.click("button.more")
    wait_audit(dashboard, everything)
    assert dashboard.js("document.querySelector('button.more').hidden")
    for entry, row in zip(everything, audit_rows(dashboard)):
        assert (row["at"], row["time"], row["actor"]) == (entry["at"], local(entry["at"]), entry["actor"])
    rows = {row["action"] + ":" + row["entity_id"]: row for row in audit_rows(dashboard)}
    old = rows["customer.create:" + history["old"]]
    assert (old["time"], old["actor_name"]) == ("2025-03-01 20:30:00", "bootstrap admin key")
    assert old["change"] == f"created “{INJECTION}”" and dashboard.count("main img") == 0
    update = rows[f"user.update:{history['vera']}"]
    assert (update["actor"], update["actor_name"], update["change"]) == ("user:1", "admin@localhost", "role: viewer → finance")
    assert rows[f"user.create:{history['vera']}"]["change"] == "created “vera@example.com”"
    sign_in = next(row for row in audit_rows(dashboard) if row["action"] == "auth.login")
    assert (sign_in["actor"], sign_in["change"]) == ("user:1", "signed in “admin@localhost”")
    assert rows[f"api_key.create:{history['key']}"]["change"] == "created “CI ingest”"
    assert rows[f"api_key.revoke:{history['key']}"]["change"].startswith("revoked: false → true; revoked_at: — → ")
    dashboard.click("table.audit tr[data-action='user.update'] details.audit-details > summary")
    assert '"role": "finance"' in dashboard.text("table.audit tr[data-action='user.update'] .after pre")


def apply_filters(dashboard, **values):
    for name, value in values.items():
        dashboard.fill(f"#audit-filter [name={name}]", value)
    dashboard.click("#audit-filter button[type=submit]")


def filter_by_actor_and_object(dashboard, history):
    server = dashboard.server
    apply_filters(dashboard, actor="user:1")
    dashboard.wait("location.hash === '#/audit?actor=user%3A1'")
    wait_audit(dashboard, api_log(server, actor="user:1"))
    assert [row["action"] for row in audit_rows(dashboard)] == [
        "api_key.revoke", "api_key.create", "user.update", "user.create", "auth.login"]
    apply_filters(dashboard, entity="user", entity_id=history["vera"])  # the actor stays
    dashboard.wait(f"location.hash === '#/audit?actor=user%3A1&entity=user&entity_id={history['vera']}'")
    wait_audit(dashboard, api_log(server, actor="user:1", entity="user", entity_id=history["vera"]))
    assert [row["action"] for row in audit_rows(dashboard)] == ["user.update", "user.create"]


def filter_by_time_and_reload(dashboard, history):
    """Browser time (+10:30): 20:00–21:00 on 1 March holds the old change only; a
    reload keeps the filters (the address holds them, the form shows them again)."""
    server = dashboard.server
    dashboard.click(".clear-filters")
    dashboard.wait("location.hash === '#/audit'")
    wait_audit(dashboard, history["everything"][:50])
    apply_filters(dashboard, entity="customer", **{"from": "2025-03-01T20:00", "to": "2025-03-01T21:00"})
    dashboard.wait("location.hash === '#/audit?entity=customer&from=2025-03-01T09%3A30%3A00Z&to=2025-03-01T10%3A30%3A00Z'")
    wait_audit(dashboard, api_log(server, entity="customer", **TIME_RANGE))
    assert [row["entity_id"] for row in audit_rows(dashboard)] == [history["old"]]

    dashboard.assert_clean()  # (what the page logged so far goes with the reload)
    reload(dashboard)
    wait_audit(dashboard, api_log(server, entity="customer", **TIME_RANGE))
    form = dashboard.js("Object.fromEntries(['actor', 'entity', 'entity_id', 'from', 'to'].map((name) =>"
                        " [name, document.querySelector(`#audit-filter [name=${name}]`).value]))")
    assert form == {"actor": "", "entity": "customer", "entity_id": "", "from": "2025-03-01T20:00", "to": "2025-03-01T21:00"}
    assert dashboard.text("#audit-scope") == "Filtered entries, newest first."


def test_audit_log_shows_the_changes_and_its_filters_narrow_the_table_and_survive_a_reload(dashboard, acme):
    dashboard.browser.send("Emulation.setTimezoneOverride", {"timezoneId": ZONE})
    history = make_history(dashboard)
    check_the_table(dashboard, history)
    snap(dashboard, "audit", 1280)
    snap(dashboard, "audit", 375)
    filter_by_actor_and_object(dashboard, history)
    filter_by_time_and_reload(dashboard, history)
    snap(dashboard, "audit-filtered", 1280)
    snap(dashboard, "audit-filtered", 375)

    # An actor's link filters by that actor.
    dashboard.click(".clear-filters")
    wait_audit(dashboard, history["everything"][:50])
    dashboard.click("table.audit tbody tr[data-id] td.actor a")  # the newest: a customer the admin key created
    dashboard.wait("location.hash === '#/audit?actor=key%3A1'")
    by_key = api_log(dashboard.server, actor="key:1")
    assert len(by_key) == 52
    wait_audit(dashboard, by_key[:50])
    dashboard.assert_clean()


def test_a_bad_filter_in_the_address_shows_the_servers_message(dashboard, acme):
    dashboard.allowed_failures.add(("/v1/audit-log", 400))
    dashboard.sign_in(hash_="#/audit?actor=admin&from=yesterday")
    dashboard.signed_in()
    dashboard.wait("document.querySelector('main .message.error')?.textContent.startsWith('Could not load the audit log')")
    assert dashboard.texts("main .message.error .error-list li strong") == ["Actor", "From"]
    assert dashboard.count("table.audit tbody tr[data-id]") == 0
    assert dashboard.js("document.querySelector('#audit-filter [name=actor]').value") == "admin"
    assert dashboard.js("document.querySelector('#audit-filter [name=from]').value") == ""
    dashboard.go("#/audit")  # the customer's creation and the sign-in
    dashboard.wait("document.querySelectorAll('table.audit tbody tr[data-id]').length === 2")
    assert not dashboard.js("document.querySelector('main .message').textContent")
    dashboard.assert_clean()
