"""The dashboard in headless Chromium (§11), against a real server with a temp DB.

Each test seeds its own server (conftest `server`: BILLING_MAX_EVENT_AGE_DAYS=0
so history can be backfilled), signs in through the form, and reads the
rendered DOM. Every test ends by checking that the page logged no console
error, threw nothing, and broke no Content-Security-Policy rule.

Screenshots go to the test's tmp_path and to /tmp/meterline-shots/.
"""

import json
import os
import shutil
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest

from tests import tools
from tests.browser.cdp import Browser, find_chromium
from tests.harness import ADMIN_KEY, ADMIN_PASSWORD
from tests.helpers import at, iso

SHOTS_DIR = "/tmp/meterline-shots"
INJECTION = "<img src=x onerror=alert(1)>"
ACME_DAILY_CALLS = (10, 20, 30, 40, 50)   # api_calls, k days ago (k = 0..4)
ACME_MEMORY = (("mem-1", 1, 2.5), ("mem-2", 3, 4), ("mem-3", 3, 1.25))  # id, days ago, GB
GLOBEX_EVENTS = 55                         # one every 3 hours, going back ~7 days

# Runs before any page script: records what the console might not show.
WATCHER = """
window.__problems = [];
window.addEventListener('securitypolicyviolation',
  (e) => window.__problems.push('CSP ' + e.violatedDirective + ' blocked ' + e.blockedURI));
window.addEventListener('error', (e) => window.__problems.push('error ' + e.message));
window.addEventListener('unhandledrejection', (e) => window.__problems.push('rejection ' + e.reason));
"""


# -- fixtures -----------------------------------------------------------------

@pytest.fixture
def browser():
    if find_chromium() is None:
        tools.missing("Chromium", "chromium")
    chromium = Browser()
    yield chromium
    chromium.close()


@pytest.fixture
def seeded(server):
    """A meter of each kind, three customers (one named like an HTML attack)
    and events over several days; returns what the assertions need."""
    admin = server.admin
    for meter in ({"key": "api_calls", "name": "API calls", "unit": "call", "aggregation": "sum"},
                  {"key": "memory_gb", "name": "Peak memory", "unit": "GB", "aggregation": "max",
                   "value_property": "gb"}):
        assert admin.post("/v1/meters", meter).status == 201
    ids = {}
    for key, body in (("acme", {"name": "Acme Corp", "email": "billing@acme.example"}),
                      ("globex", {"name": "Globex", "email": "ap@globex.example", "timezone": "Europe/Berlin",
                                  "currency": "EUR"}),
                      ("attack", {"name": INJECTION, "email": "x@attack.example"})):
        reply = admin.post("/v1/customers", body)
        assert reply.status == 201, reply
        ids[key] = reply.json["id"]

    now = datetime.now(timezone.utc)
    acme = [{"id": f"acme-{k}", "meter": "api_calls", "quantity": calls,
             "timestamp": iso(now - timedelta(days=k, hours=1))} for k, calls in enumerate(ACME_DAILY_CALLS)]
    acme += [{"id": event_id, "meter": "memory_gb", "quantity": 1, "properties": {"gb": gb},
              "timestamp": iso(now - timedelta(days=days, hours=2))} for event_id, days, gb in ACME_MEMORY]
    globex = [{"id": f"globex-{i}", "meter": "api_calls", "quantity": i + 1, "properties": {"region": "eu"},
               "timestamp": iso(now - timedelta(hours=2 + 3 * i))} for i in range(GLOBEX_EVENTS)]
    for customer, events in (("acme", acme), ("globex", globex)):
        reply = admin.post("/v1/events/batch", {"customer_id": ids[customer], "events": events})
        assert reply.status == 200 and reply.json["accepted"] == len(events), reply

    calls_by_day = {}
    for event in acme[:len(ACME_DAILY_CALLS)]:
        day = event["timestamp"][:10]  # Acme's timezone is UTC
        calls_by_day[day] = calls_by_day.get(day, 0) + event["quantity"]
    return {"ids": ids, "now": now, "calls_by_day": calls_by_day,
            "total_events": len(acme) + len(globex), "acme_events": len(acme)}


class Dashboard:
    """The browser pointed at one server, with the helpers the tests share."""

    def __init__(self, browser, server, shots_dir):
        self.browser = browser
        self.server = server
        self.base = f"http://127.0.0.1:{server.port}"
        self.shots_dir = shots_dir
        self.allowed_failures = set()  # (path, status) of requests a test makes fail on purpose
        browser.send("Runtime.enable")
        browser.send("Log.enable")
        browser.send("Page.enable")
        browser.send("Page.addScriptToEvaluateOnNewDocument", {"source": WATCHER})

    # -- driving the page ------------------------------------------------------
    def open(self, hash_=""):
        self.browser.navigate(f"{self.base}/{hash_}")

    def go(self, hash_):
        self.js(f"location.hash = {json.dumps(hash_)}")

    def js(self, expression):
        return self.browser.evaluate(expression)

    def wait(self, condition, timeout=10):
        return self.browser.wait_for(condition, timeout)

    def fill(self, selector, value):
        self.js(f"""(() => {{
            const input = document.querySelector({json.dumps(selector)});
            input.value = {json.dumps(value)};
            input.dispatchEvent(new Event('input', {{ bubbles: true }}));
            input.dispatchEvent(new Event('change', {{ bubbles: true }}));
        }})()""")

    def click(self, selector):
        self.js(f"document.querySelector({json.dumps(selector)}).click()")

    def text(self, selector):
        return self.js(f"document.querySelector({json.dumps(selector)})?.textContent ?? null")

    def texts(self, selector):
        return self.js(f"[...document.querySelectorAll({json.dumps(selector)})].map((e) => e.textContent)")

    def count(self, selector):
        return self.js(f"document.querySelectorAll({json.dumps(selector)}).length")

    def sign_in(self, email="admin@localhost", password=ADMIN_PASSWORD, hash_=""):
        self.open(hash_)
        self.wait("!!document.querySelector('#signin-form')")
        self.fill("#signin-form [name=email]", email)
        self.fill("#signin-form [name=password]", password)
        self.click("#signin-form button[type=submit]")

    def signed_in(self):
        self.wait("!document.querySelector('#topbar').hidden")
        assert self.text("#who") == "admin@localhost (admin)"

    def shoot(self, name, full_page=True):
        path = self.browser.screenshot(os.path.join(self.shots_dir, f"{name}.png"), full_page)
        os.makedirs(SHOTS_DIR, exist_ok=True)
        shutil.copy(path, os.path.join(SHOTS_DIR, f"{name}.png"))

    # -- what went wrong on the page -------------------------------------------
    def problems(self):
        found = list(self.js("window.__problems || []"))
        for call in self.browser.events_named("Runtime.consoleAPICalled"):
            if call["type"] in ("error", "assert", "warning"):
                found.append(f"console.{call['type']}: " + " ".join(
                    str(arg.get("value", arg.get("description"))) for arg in call.get("args", [])))
        for thrown in self.browser.events_named("Runtime.exceptionThrown"):
            found.append(f"exception: {thrown['exceptionDetails'].get('text')}")
        for entry in self.browser.events_named("Log.entryAdded"):
            entry = entry["entry"]
            if entry["level"] != "error" or self._expected_failure(entry):
                continue
            found.append(f"log {entry['source']}: {entry['text']} {entry.get('url', '')}")
        for dialog in self.browser.events_named("Page.javascriptDialogOpening"):
            found.append(f"dialog opened: {dialog.get('message')}")
        return found

    def _expected_failure(self, entry):
        if entry["source"] != "network":
            return False
        path = urlsplit(entry.get("url", "")).path
        return any(path == allowed and f"status of {status}" in entry["text"]
                   for allowed, status in self.allowed_failures)

    def assert_clean(self):
        assert self.problems() == []


@pytest.fixture
def dashboard(browser, server, tmp_path):
    return Dashboard(browser, server, str(tmp_path / "shots"))


# -- tests --------------------------------------------------------------------

def test_sign_in_shows_the_error_then_lets_the_admin_in(dashboard):
    dashboard.allowed_failures.add(("/v1/auth/login", 401))
    dashboard.sign_in(password="wrong-password")
    dashboard.wait("document.querySelector('main .message.error')?.textContent.includes('Wrong e-mail or password')")
    assert dashboard.js("sessionStorage.length") == 0
    dashboard.shoot("01-sign-in-error")

    dashboard.fill("#signin-form [name=password]", ADMIN_PASSWORD)
    dashboard.click("#signin-form button[type=submit]")
    dashboard.signed_in()
    assert dashboard.js("sessionStorage.getItem('meterline.token').startsWith('ms_')")
    assert dashboard.texts("#nav a") == ["Overview", "Customers", "Invoices", "Resources", "Storage", "Plans", "Meters", "Events", "Alerts", "Webhooks", "Jobs", "Users", "Audit log"]
    assert dashboard.js("location.hash || '#/overview'") == "#/overview"
    assert dashboard.text("#nav a[aria-current=page]") == "Overview"
    dashboard.assert_clean()


def test_customers_list_and_create_form(dashboard, seeded):
    dashboard.sign_in(hash_="#/customers")
    dashboard.signed_in()
    dashboard.wait("document.querySelectorAll('table.customers tbody tr[data-id]').length === 3")
    names = dashboard.texts("table.customers td.name a")
    assert names == ["Acme Corp", "Globex", INJECTION]
    dashboard.shoot("02-customers")

    dashboard.click("details.create > summary")
    dashboard.fill("#create-customer [name=name]", "Initech")
    dashboard.fill("#create-customer [name=email]", "ops@initech.example")
    dashboard.fill("#create-customer [name=timezone]", "America/New_York")
    dashboard.fill("#create-customer [name=currency]", "usd")
    dashboard.click("#create-customer button[type=submit]")
    dashboard.wait("document.querySelector('details.create .message.ok')?.textContent.includes('Initech')")
    dashboard.wait("document.querySelectorAll('table.customers tbody tr[data-id]').length === 4")
    created = dashboard.server.admin.get("/v1/customers?email=ops@initech.example").json["data"][0]
    assert (created["timezone"], created["currency"]) == ("America/New_York", "USD")

    dashboard.allowed_failures.update({("/v1/customers", 409), ("/v1/customers", 400)})
    dashboard.fill("#create-customer [name=name]", "Initech again")
    dashboard.fill("#create-customer [name=email]", "ops@initech.example")
    dashboard.click("#create-customer button[type=submit]")
    dashboard.wait("document.querySelector('details.create .message.error')?.textContent.includes('already exists')")
    dashboard.fill("#create-customer [name=email]", "other@initech.example")
    dashboard.fill("#create-customer [name=timezone]", "Mars/Olympus")
    dashboard.click("#create-customer button[type=submit]")
    dashboard.wait("document.querySelector('details.create .message.error')?.textContent.includes('timezone')")
    dashboard.shoot("03-customer-create-error")
    assert dashboard.count("table.customers tbody tr[data-id]") == 4
    dashboard.assert_clean()


def test_customer_detail_draws_usage_charts_and_table(dashboard, seeded):
    acme = seeded["ids"]["acme"]
    dashboard.sign_in(hash_=f"#/customers/{acme}")
    dashboard.signed_in()
    dashboard.wait("document.querySelectorAll('article.meter-usage:is([data-meter=api_calls], [data-meter=memory_gb]) svg').length === 2")
    assert dashboard.text("main h1") == "Acme Corp"
    assert "billing@acme.example" in dashboard.texts(".fields dd")

    calls = "article.meter-usage[data-meter=api_calls]"
    assert dashboard.count(f"{calls} svg.chart-bar rect.bar") == 30  # one per day of the default range
    bars = dashboard.js(f"[...document.querySelectorAll('{calls} rect.bar')]"
                        ".map((r) => [+r.getAttribute('height'), r.querySelector('title').textContent])")
    assert sum(1 for height, _ in bars if height > 0) == len(seeded["calls_by_day"])
    assert max(bars)[1].endswith(f": {max(seeded['calls_by_day'].values())} call")  # tallest bar, busiest day
    assert dashboard.text(f"{calls} h3") == "API calls api_calls"
    assert dashboard.text(f"{calls} .total").startswith(f"{sum(ACME_DAILY_CALLS)} call")
    assert dashboard.count(f"{calls} .axis-x text") >= 3
    assert dashboard.texts(f"{calls} .axis-y text")[0] == "0"

    memory = "article.meter-usage[data-meter=memory_gb]"
    assert dashboard.count(f"{memory} svg.chart-line path.line") == 1
    assert dashboard.count(f"{memory} circle.point") == len({days for _, days, _ in ACME_MEMORY})
    assert dashboard.text(f"{memory} .total").startswith("4 GB")

    rows = dashboard.js("[...document.querySelectorAll('table.usage-table tbody tr')]"
                        ".map((tr) => [...tr.cells].map((td) => td.textContent))")
    assert len(rows) == 30
    assert [row[0] for row in rows] == sorted((row[0] for row in rows), reverse=True)
    for day, calls_on_day in seeded["calls_by_day"].items():
        assert [day, str(calls_on_day)] == rows[[row[0] for row in rows].index(day)][:2]
    dashboard.shoot("04-customer-detail")
    dashboard.assert_clean()


def test_meters_page_lists_and_creates_meters(dashboard, seeded):
    dashboard.sign_in(hash_="#/meters")
    dashboard.signed_in()
    # (the server's own storage meters are listed as well)
    dashboard.wait("document.querySelectorAll('table.meters tbody tr:is([data-key=api_calls], [data-key=memory_gb])').length === 2")
    assert dashboard.texts("table.meters tbody tr[data-key=api_calls] td")[:4] == ["api_calls", "API calls", "call", "sum"]

    dashboard.click("details.create > summary")
    dashboard.fill("#create-meter [name=key]", "storage_gb")
    dashboard.fill("#create-meter [name=name]", "Storage")
    dashboard.fill("#create-meter [name=unit]", "GB")
    dashboard.fill("#create-meter [name=aggregation]", "max")
    dashboard.fill("#create-meter [name=value_property]", "gb")
    dashboard.click("#create-meter button[type=submit]")
    dashboard.wait("document.querySelector('details.create .message.ok')?.textContent.includes('storage_gb')")
    dashboard.wait("!!document.querySelector('table.meters tbody tr[data-key=storage_gb]')")
    meter = dashboard.server.admin.get("/v1/meters/storage_gb").json
    assert (meter["aggregation"], meter["value_property"], meter["unit"]) == ("max", "gb", "GB")

    dashboard.allowed_failures.add(("/v1/meters", 409))
    dashboard.fill("#create-meter [name=key]", "api_calls")
    dashboard.fill("#create-meter [name=name]", "Duplicate")
    dashboard.click("#create-meter button[type=submit]")
    dashboard.wait("document.querySelector('details.create .message.error')?.textContent.includes('already exists')")
    dashboard.shoot("05-meters")
    dashboard.assert_clean()


def event_rows(dashboard):
    return dashboard.js("[...document.querySelectorAll('table.events tbody tr[data-event]')].map((tr) => ({"
                        "id: tr.dataset.event, customer: +tr.dataset.customer,"
                        "time: tr.querySelector('time').getAttribute('datetime'), fresh: tr.classList.contains('new')}))")


def test_events_newest_first_with_load_more_filters_and_auto_refresh(dashboard, seeded):
    dashboard.sign_in(hash_="#/events")
    dashboard.signed_in()
    dashboard.wait("document.querySelectorAll('table.events tbody tr[data-event]').length === 50")
    rows = event_rows(dashboard)
    assert rows[0]["id"] == "acme-0"
    dashboard.wait("document.querySelector('table.events td.customer a').textContent === 'Acme Corp'")
    times = [at(row["time"]) for row in rows]
    assert times == sorted(times, reverse=True)

    dashboard.wait("!document.querySelector('button.more').hidden")
    dashboard.click("button.more")
    dashboard.wait(f"document.querySelectorAll('table.events tbody tr[data-event]').length === {seeded['total_events']}")
    rows = event_rows(dashboard)
    assert len({row["id"] for row in rows}) == seeded["total_events"]
    times = [at(row["time"]) for row in rows]
    assert times == sorted(times, reverse=True)
    assert dashboard.js("document.querySelector('button.more').hidden")
    dashboard.shoot("06-events")

    acme = seeded["ids"]["acme"]
    dashboard.fill("#events-filter [name=customer_id]", str(acme))
    dashboard.click("#events-filter button[type=submit]")
    dashboard.wait(f"document.querySelectorAll('table.events tbody tr[data-event]').length === {seeded['acme_events']}")
    assert {row["customer"] for row in event_rows(dashboard)} == {acme}

    dashboard.wait("!!document.querySelector('#events-filter [name=meter] option[value=memory_gb]')")
    dashboard.fill("#events-filter [name=meter]", "memory_gb")
    dashboard.click("#events-filter button[type=submit]")
    dashboard.wait(f"document.querySelectorAll('table.events tbody tr[data-event]').length === {len(ACME_MEMORY)}")
    # mem-2 and mem-3 share a timestamp: the later stored comes first (tie-break on id)
    assert [row["id"] for row in event_rows(dashboard)] == ["mem-1", "mem-3", "mem-2"]

    # A new event appears at the top within one refresh (5 s), marked as new.
    live = {"id": "live-1", "customer_id": acme, "meter": "memory_gb", "properties": {"gb": 3},
            "timestamp": iso(datetime.now(timezone.utc) - timedelta(minutes=1))}
    assert dashboard.server.admin.post("/v1/events", live).status == 201
    dashboard.wait("document.querySelector('table.events tbody tr[data-event]')?.dataset.event === 'live-1'", timeout=12)
    rows = event_rows(dashboard)
    assert rows[0]["fresh"] and len(rows) == len(ACME_MEMORY) + 1
    assert dashboard.text("#events-updated").startswith("Updated")
    dashboard.shoot("07-events-filtered")
    dashboard.assert_clean()


def test_html_in_a_customer_name_renders_as_text(dashboard, seeded):
    dashboard.sign_in(hash_="#/customers")
    dashboard.signed_in()
    dashboard.wait("document.querySelectorAll('table.customers tbody tr[data-id]').length === 3")
    assert INJECTION in dashboard.texts("table.customers td.name a")
    assert dashboard.count("img") == 0

    dashboard.go(f"#/customers/{seeded['ids']['attack']}")
    dashboard.wait(f"document.querySelector('main h1')?.textContent === {json.dumps(INJECTION)}")
    dashboard.wait("document.querySelectorAll('article.meter-usage:is([data-meter=api_calls], [data-meter=memory_gb]) svg').length === 2")
    assert dashboard.count("img") == 0
    assert dashboard.js("document.title").startswith(INJECTION)
    dashboard.shoot("08-injection-as-text")
    dashboard.assert_clean()


# what the home page and the bell ask for as they load: a request still in flight
# when its session is signed out may be refused (401) — the token was just revoked
IN_FLIGHT_AT_SIGN_OUT = ("/v1/analytics/overview", "/v1/analytics/revenue", "/v1/analytics/events",
                         "/v1/alerts/events", "/v1/notifications")


def allow_refusals_in_flight(dashboard):
    dashboard.allowed_failures.update((path, 401) for path in IN_FLIGHT_AT_SIGN_OUT)


def test_what_is_typed_while_signing_out_is_kept(dashboard, seeded):
    """The sign-in forms appear at once on sign-out; when the server's answer
    to the logout comes later, only the notice changes: a key typed meanwhile
    stays, and the key form stays open. (The logout answer is held back 1.5 s
    in the page, so the order is certain.)"""
    dashboard.sign_in()
    dashboard.signed_in()
    allow_refusals_in_flight(dashboard)
    dashboard.js("(() => { const real = window.fetch; window.fetch = (url, init) => String(url).includes('/v1/auth/logout')"
                 " ? new Promise((done) => setTimeout(() => done(real(url, init)), 1500)) : real(url, init); })()")
    dashboard.click("#sign-out")
    dashboard.wait("document.querySelector('main .message')?.textContent.includes('Signing out')")
    dashboard.click("details.key-option > summary")
    dashboard.fill("#key-form [name=key]", "mk_typed_while_signing_out")
    dashboard.wait("document.querySelector('main .message')?.textContent.includes('signed out')")
    assert dashboard.js("document.querySelector('#key-form [name=key]').value") == "mk_typed_while_signing_out"
    assert dashboard.js("document.querySelector('details.key-option').open")
    dashboard.assert_clean()


def test_sign_out_revokes_the_session_and_api_keys_can_sign_in(dashboard, seeded):
    dashboard.sign_in()
    dashboard.signed_in()
    allow_refusals_in_flight(dashboard)
    token = dashboard.js("sessionStorage.getItem('meterline.token')")
    dashboard.click("#sign-out")
    dashboard.wait("document.querySelector('main .message')?.textContent.includes('signed out')")
    assert dashboard.js("document.querySelector('#topbar').hidden")
    assert dashboard.js("sessionStorage.length") == 0
    assert dashboard.server.client(token).get("/v1/auth/me").status == 401

    dashboard.allowed_failures.add(("/v1/auth/me", 401))
    dashboard.click("details.key-option > summary")
    dashboard.fill("#key-form [name=key]", "mk_not_a_real_key")
    dashboard.click("#key-form button[type=submit]")
    dashboard.wait("document.querySelector('main .message.error')?.textContent.includes('not valid')")
    dashboard.fill("#key-form [name=key]", ADMIN_KEY)
    dashboard.click("#key-form button[type=submit]")
    dashboard.wait("!document.querySelector('#topbar').hidden")
    assert dashboard.text("#who") == "API key “bootstrap admin key” (admin)"

    # A token that stops working sends the dashboard back to sign-in.
    dashboard.allowed_failures.add(("/v1/meters", 401))
    dashboard.js("sessionStorage.setItem('meterline.token', 'ms_revoked')")
    dashboard.go("#/meters")
    dashboard.wait("document.querySelector('main .message')?.textContent.includes('Please sign in again')")
    assert dashboard.js("!!document.querySelector('#signin-form') && document.querySelector('#topbar').hidden")
    dashboard.shoot("09-session-ended")
    dashboard.assert_clean()


def test_phone_layout_fits_the_screen(dashboard, seeded):
    dashboard.browser.send("Emulation.setDeviceMetricsOverride",
                           {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    acme = seeded["ids"]["acme"]
    dashboard.sign_in(hash_=f"#/customers/{acme}")
    dashboard.wait("!document.querySelector('#topbar').hidden")
    dashboard.wait("document.querySelectorAll('article.meter-usage:is([data-meter=api_calls], [data-meter=memory_gb]) svg').length === 2")
    assert dashboard.js("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    assert dashboard.js("document.querySelector('article.meter-usage svg').getBoundingClientRect().right"
                        " <= document.documentElement.clientWidth")
    dashboard.shoot("10-phone-customer-detail", full_page=False)
    dashboard.js("document.querySelector('article.meter-usage').scrollIntoView()")
    dashboard.shoot("11-phone-usage-charts", full_page=False)
    dashboard.go("#/events")
    dashboard.wait("document.querySelectorAll('table.events tbody tr[data-event]').length === 50")
    assert dashboard.js("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    dashboard.shoot("12-phone-events", full_page=False)
    dashboard.assert_clean()
