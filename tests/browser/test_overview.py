"""The staff Overview (§10, §11), the dashboard's home, in headless Chromium
against a real in-process server with a temp DB.

Set-up goes through the HTTP API: one meter, a plan in each of USD, JPY and
KWD, four customers (Acme Corp and one named like an HTML attack in USD, Kaiju
KK in JPY living in Tokyo, Gulf Trading in KWD living in Kuwait) subscribed
since the first of two or three months ago, usage in each of those months and
events over the last seven days. One invoice run drafts their closed periods;
each invoice is then finalized with the server's clock set to the day after
its period ended (so revenue lands in different months), except Kaiju's
newest, which stays a draft; Acme's oldest is paid, the attack's newest is
voided. Revenue is the issued and paid invoices: drafts and void ones are not.

The browser runs in Asia/Tokyo (DevTools timezone override), so months and
days are Tokyo's; every expectation is worked out here from the invoices and
events themselves (bucketed with zoneinfo), and the key figures are compared
with /v1/analytics/overview asked for the same timezone. Every test ends by
checking that the page logged no console error, threw nothing and broke no
CSP rule. Screenshots at 1280 and 375 px go to /tmp/meterline-shots/.
"""

import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from billing import clock
from tests.browser.test_dashboard import INJECTION, browser, dashboard  # noqa: F401  (the shared fixtures)
from tests.browser.test_invoice_workflow import fits_the_screen, snap
from tests.harness import make_key
from tests.helpers import at, iso

ZONE = "Asia/Tokyo"
PASSWORD = "overview-password-1"
VIEWER = {"email": "vera@meterline.example", "name": "Vera Viewer", "role": "viewer"}
TENANT = {"email": "ada@acme.example", "name": "Ada Tenant", "role": "customer"}
PLANS = [{"code": code, "name": f"Team ({currency})", "currency": currency, "base_fee": base,
          "charges": [{"meter": "api_calls", "model": "per_unit", "unit_price": price}]}
         for code, currency, base, price in (("team-usd", "USD", "49.00", "0.01"),
                                             ("team-jpy", "JPY", "5000", "2"),
                                             ("team-kwd", "KWD", "12.500", "0.005"))]
# key: (customer, plan, months subscribed before this one, api_calls per month of usage)
CUSTOMERS = {
    "acme": ({"name": "Acme Corp", "email": "billing@acme.example", "currency": "USD"}, "team-usd", 3, 1500),
    "attack": ({"name": INJECTION, "email": "x@attack.example", "currency": "USD"}, "team-usd", 2, 700),
    "kaiju": ({"name": "Kaiju KK", "email": "ap@kaiju.example", "currency": "JPY", "timezone": "Asia/Tokyo"},
              "team-jpy", 3, 900),
    "gulf": ({"name": "Gulf Trading", "email": "ap@gulf.example", "currency": "KWD", "timezone": "Asia/Kuwait"},
             "team-kwd", 2, 2100),
}
RECENT_DAYS = 7  # one event per customer per day, k days and an hour ago


def month_start(day, back=0):
    """The first of the month `back` months before `day`'s month."""
    month = day.year * 12 + day.month - 1 - back
    return day.replace(year=month // 12, month=month % 12 + 1, day=1)


@pytest.fixture
def overview(server):
    admin = server.admin
    meter = {"key": "api_calls", "name": "API calls", "unit": "call", "aggregation": "sum"}
    assert admin.post("/v1/meters", meter).status == 201
    for plan in PLANS:
        reply = admin.post("/v1/plans", plan)
        assert reply.status == 201, reply
    now = datetime.now(timezone.utc)
    ids, posted = {}, []
    for key, (body, plan, months, calls) in CUSTOMERS.items():
        reply = admin.post("/v1/customers", body)
        assert reply.status == 201, reply
        ids[key] = customer = reply.json["id"]
        today = now.astimezone(ZoneInfo(body.get("timezone", "UTC"))).date()
        reply = admin.post("/v1/subscriptions", {"customer_id": customer, "plan": plan,
                                                 "start": month_start(today, months).isoformat()})
        assert reply.status == 201, reply
        events = [{"id": f"{key}-month-{back}", "meter": "api_calls", "quantity": calls * back,
                   "timestamp": iso(datetime.combine(month_start(today, back).replace(day=10), datetime.min.time(),
                                                     timezone.utc) + timedelta(hours=3))}
                  for back in range(1, months + 1)]
        events += [{"id": f"{key}-recent-{k}", "meter": "api_calls", "quantity": 10 + k,
                    "timestamp": iso(now - timedelta(days=k, hours=1))} for k in range(RECENT_DAYS)]
        reply = admin.post("/v1/events/batch", {"customer_id": customer, "events": events})
        assert reply.status == 200 and reply.json["accepted"] == len(events), reply
        posted += [at(event["timestamp"]) for event in events]

    reply = admin.post("/v1/invoices/run", {})
    assert reply.status == 200 and reply.json["created"] >= 10, reply
    for key, customer in ids.items():
        drafts = sorted(admin.get(f"/v1/invoices?customer_id={customer}&limit=100").json["data"],
                        key=lambda invoice: invoice["period_start"])
        for invoice in drafts[:-1] if key == "kaiju" else drafts:  # Kaiju's newest stays a draft
            # issued the day after its period ended (never later than now)
            issued = min(at(invoice["period_end"]) + timedelta(days=1, hours=3), now - timedelta(minutes=1))
            with clock.at(issued):
                reply = admin.post(f"/v1/invoices/{invoice['id']}/finalize", {})
            assert reply.status == 200 and reply.json["status"] == "issued", reply
        if key == "acme":
            oldest = admin.get(f"/v1/invoices/{drafts[0]['id']}").json
            reply = admin.post(f"/v1/invoices/{oldest['id']}/payments", {"amount": oldest["amount_due"], "method": "wire"})
            assert reply.status == 201 and reply.json["invoice"]["status"] == "paid", reply
        if key == "attack":
            reply = admin.post(f"/v1/invoices/{drafts[-1]['id']}/void", {"reason": "Sent by mistake"})
            assert reply.status == 200 and reply.json["status"] == "void", reply

    invoices = admin.get("/v1/invoices?limit=100").json["data"]
    assert {invoice["status"] for invoice in invoices} == {"draft", "issued", "paid", "void"}
    for person in (VIEWER, {**TENANT, "customer_id": ids["acme"]}):
        reply = admin.post("/v1/users", {**person, "password": PASSWORD})
        assert reply.status == 201, reply
    return {"ids": ids, "invoices": invoices, "events": posted}


# -- what the page should show, worked out from the invoices and events ---------------

def revenue_by_month(invoices, zone=ZONE):
    """{currency: {"YYYY-MM": total}} of issued and paid invoices by the local month they were issued."""
    months = {}
    for invoice in invoices:
        if invoice["status"] not in ("issued", "paid"):
            continue
        month = at(invoice["issued_at"]).astimezone(ZoneInfo(zone)).strftime("%Y-%m")
        per_month = months.setdefault(invoice["currency"], {})
        per_month[month] = add(per_month.get(month), invoice["total"])
    return months


def top_customers(invoices):
    """{currency: [(customer id, total)]}, largest first (ties: lower id first)."""
    sums = {}
    for invoice in invoices:
        if invoice["status"] in ("issued", "paid"):
            by_customer = sums.setdefault(invoice["currency"], {})
            by_customer[invoice["customer_id"]] = add(by_customer.get(invoice["customer_id"]), invoice["total"])
    return {currency: sorted(by_customer.items(), key=lambda item: (-decimal(item[1]), item[0]))
            for currency, by_customer in sums.items()}


def decimal(text):
    from decimal import Decimal
    return Decimal(text)


def add(total, amount):
    """Money strings added exactly, keeping the currency's digits ("188.10" + "49.00" = "237.10")."""
    return amount if total is None else str(decimal(total) + decimal(amount))


# -- reading the page ------------------------------------------------------------------

def kpis(dashboard):
    """{kpi: number} for counts and {kpi: {currency: amount}} for money, as the cards show them."""
    return dashboard.js("""Object.fromEntries([...document.querySelectorAll('#kpis [data-kpi]')].map((card) => {
        const value = card.querySelector('.kpi-value');
        if (value.dataset.value !== undefined) return [card.dataset.kpi, +value.dataset.value];
        return [card.dataset.kpi, Object.fromEntries([...value.querySelectorAll('li')].map((li) =>
            [li.dataset.currency, li.dataset.amount]))];
    }))""")


def revenue_chart(dashboard):
    """{currency: [[month, amount, currency of the bar]]} of the revenue charts' bars, oldest first."""
    return dashboard.js("""Object.fromEntries([...document.querySelectorAll('#revenue figure.revenue-currency')].map((figure) =>
        [figure.dataset.currency, [...figure.querySelectorAll('svg rect.bar')].map((bar) =>
            [bar.dataset.month, bar.dataset.amount, bar.dataset.currency])]))""")


def top_list(dashboard):
    return dashboard.js("""Object.fromEntries([...document.querySelectorAll('#top-customers .top-currency')].map((box) =>
        [box.dataset.currency, [...box.querySelectorAll('li')].map((li) =>
            [+li.dataset.customerId, li.dataset.amount, li.querySelector('a.name').textContent,
             li.querySelector('a.name').getAttribute('href'), li.querySelector('.amount').textContent])]))""")


def overview_loaded(dashboard):
    dashboard.wait("document.querySelector('main h1')?.textContent === 'Overview'")
    dashboard.wait("!!document.querySelector('#kpis [data-kpi=customers] .kpi-value[data-value]')")
    dashboard.wait("!!document.querySelector('#revenue .revenue-charts, #no-revenue')"
                   " && !!document.querySelector('#events-per-day svg, #no-events')"
                   " && !!document.querySelector('#top-customers ol, #no-top-customers')")
    # customer names arrive one request each
    dashboard.wait("[...document.querySelectorAll('#top-customers a.name')].every((a) => !a.textContent.startsWith('Customer #'))")


def in_tokyo(dashboard):
    """The browser's timezone from now on (what Intl.DateTimeFormat() resolves to)."""
    dashboard.browser.send("Emulation.setTimezoneOverride", {"timezoneId": ZONE})


def sign_in(dashboard, person=None, hash_=""):
    if person is None:
        dashboard.sign_in(hash_=hash_)
        dashboard.signed_in()
    else:
        dashboard.sign_in(email=person["email"], password=PASSWORD, hash_=hash_)
        who = f"{person['email']} ({person['role']})"
        dashboard.wait(f"document.querySelector('#who')?.textContent === {json.dumps(who)}")


# -- tests -----------------------------------------------------------------------------

def test_the_overview_is_the_admins_home_with_kpis_revenue_events_and_top_customers(dashboard, overview):
    server = dashboard.server
    in_tokyo(dashboard)
    sign_in(dashboard)
    overview_loaded(dashboard)
    assert dashboard.js("location.hash || '#/overview'") == "#/overview"
    assert dashboard.texts("#nav a:not([hidden])")[0] == "Overview"
    assert dashboard.text("#nav a[aria-current=page]") == "Overview"
    assert dashboard.js("document.title") == "Overview · Meterline"
    assert dashboard.text("#overview-zone strong") == ZONE

    # The key figures: those of /v1/analytics/overview in the browser's timezone.
    expected = server.admin.get(f"/v1/analytics/overview?timezone={ZONE}").json
    shown = kpis(dashboard)
    for key in ("customers", "active_subscriptions", "events_today", "active_sessions", "stored_bytes",
                "revenue_this_month", "outstanding", "overdue"):
        assert shown[key] == expected[key], key
    assert shown["customers"] == 4 and shown["active_subscriptions"] == 4
    this_month = datetime.now(ZoneInfo(ZONE)).strftime("%Y-%m")
    by_month = revenue_by_month(overview["invoices"])
    assert shown["revenue_this_month"] == {currency: months[this_month] for currency, months in sorted(by_month.items())
                                           if this_month in months}
    assert set(shown["outstanding"]) == {"USD", "JPY", "KWD"}
    assert dashboard.texts("#kpis [data-kpi=outstanding] li") == [f"{amount} {currency}" for currency, amount
                                                                   in expected["outstanding"].items()]
    assert dashboard.text("#kpis [data-kpi=customers] .kpi-value") == "4"

    # Revenue per month: a chart per currency, 12 bars each, the month totals of the issued and paid invoices.
    chart = revenue_chart(dashboard)
    assert list(chart) == ["JPY", "KWD", "USD"]
    zero = {"USD": "0.00", "JPY": "0", "KWD": "0.000"}
    for currency, bars in chart.items():
        assert len(bars) == 12
        assert {bar[2] for bar in bars} == {currency}  # one currency per chart, never added together
        assert bars[-1][0] == this_month
        months = [bar[0] for bar in bars]
        assert months == sorted(set(months))
        expected_months = by_month[currency]
        assert {month: amount for month, amount, _ in bars if amount != zero[currency]} == expected_months
    api = server.admin.get(f"/v1/analytics/revenue?interval=month&timezone={ZONE}").json
    assert {currency: dashboard.js(f"document.querySelector('#revenue figure[data-currency={currency}] .revenue-total').dataset.amount")
            for currency in chart} == api["totals"]
    # a bar's height follows its amount: the largest month is the tallest bar
    heights = dashboard.js("[...document.querySelectorAll('#revenue figure[data-currency=USD] rect.bar')]"
                           ".map((bar) => [+bar.getAttribute('height'), +bar.dataset.amount])")
    assert max(heights)[1] == max(amount for _, amount in heights)

    # Top customers per currency, largest first, with names (the attack stays text) and links.
    ids = {customer_id: key for key, customer_id in overview["ids"].items()}
    names = {key: CUSTOMERS[key][0]["name"] for key in CUSTOMERS}
    expected_top = top_customers(overview["invoices"])
    shown_top = top_list(dashboard)
    assert list(shown_top) == ["JPY", "KWD", "USD"]
    for currency, rows in shown_top.items():
        assert [(row[0], row[1]) for row in rows] == expected_top[currency]
        for customer_id, amount, name, href, text in rows:
            assert (name, href, text) == (names[ids[customer_id]], f"#/customers/{customer_id}", f"{amount} {currency}")
    assert [row[0] for row in shown_top["USD"]] == [overview["ids"]["acme"], overview["ids"]["attack"]]
    assert dashboard.count("img") == 0

    # Events per day: 30 local days, the total and each day's count as sent.
    days = dashboard.js("[...document.querySelectorAll('#events-per-day rect.bar')].map((bar) => [bar.dataset.day, +bar.dataset.count])")
    events = server.admin.get(f"/v1/analytics/events?timezone={ZONE}").json
    start, end = at(events["from"]), at(events["to"])
    sent = [moment for moment in overview["events"] if start <= moment < end]
    assert len(days) == 30
    assert int(dashboard.js("document.querySelector('#events-total').dataset.total")) == events["total"] == len(sent)
    assert sum(count for _, count in days) == len(sent)
    per_day = {}
    for moment in sent:
        day = moment.astimezone(ZoneInfo(ZONE)).date().isoformat()
        per_day[day] = per_day.get(day, 0) + 1
    assert {day: count for day, count in days if count} == per_day
    assert dashboard.text("#events-total").startswith(f"{len(sent)} events")

    snap(dashboard, "overview", 1280)
    dashboard.browser.send("Emulation.setDeviceMetricsOverride",
                           {"width": 375, "height": 812, "deviceScaleFactor": 2, "mobile": True})
    dashboard.open()  # drawn again at the phone's width
    overview_loaded(dashboard)
    assert fits_the_screen(dashboard)
    assert dashboard.js("[...document.querySelectorAll('main svg.chart')].every((svg) =>"
                        " Math.abs(svg.getBoundingClientRect().width - +svg.getAttribute('width')) < 1)")  # not shrunk
    assert revenue_chart(dashboard) == chart and top_list(dashboard) == shown_top
    snap(dashboard, "overview", 375)
    dashboard.assert_clean()


def test_a_viewer_sees_the_overview_a_customer_user_its_portal_and_a_customer_key_its_customers(dashboard, overview):
    server = dashboard.server
    in_tokyo(dashboard)
    sign_in(dashboard, VIEWER)
    overview_loaded(dashboard)
    assert dashboard.texts("#nav a:not([hidden])") == ["Overview", "Customers", "Invoices", "Resources", "Storage",
                                                       "Plans", "Meters", "Events", "Alerts", "Jobs", "Audit log"]
    expected = server.admin.get(f"/v1/analytics/overview?timezone={ZONE}").json
    assert kpis(dashboard)["outstanding"] == expected["outstanding"]
    assert list(revenue_chart(dashboard)) == ["JPY", "KWD", "USD"]
    dashboard.click("#sign-out")
    dashboard.wait("!!document.querySelector('#signin-form')")

    # A customer user: its portal is home, and the overview's address leads there too.
    sign_in(dashboard, TENANT)
    dashboard.wait("document.querySelector('main h1')?.textContent === 'Acme Corp'")
    assert dashboard.js("location.hash || '#/portal'") == "#/portal"
    dashboard.go("#/overview")
    dashboard.wait("location.hash === '#/portal'")
    dashboard.wait("document.querySelector('main h1')?.textContent === 'Acme Corp'")
    assert dashboard.count("#kpis, #revenue, #top-customers") == 0
    token = dashboard.js("sessionStorage.getItem('meterline.token')")
    for path in ("/v1/analytics/overview", "/v1/analytics/revenue", "/v1/analytics/events"):
        assert server.client(token).get(path).status == 403, path
    dashboard.click("#sign-out")
    dashboard.wait("!!document.querySelector('#signin-form')")

    # A customer-scoped key keeps the customers as its home, and no Overview.
    dashboard.click("details.key-option > summary")
    dashboard.fill("#key-form [name=key]", make_key(server, customer_id=overview["ids"]["acme"]))
    dashboard.click("#key-form button[type=submit]")
    dashboard.wait("document.querySelector('main h1')?.textContent === 'Customers'")
    assert "Overview" not in dashboard.texts("#nav a:not([hidden])")
    dashboard.go("#/overview")
    dashboard.wait("!!document.querySelector('#not-allowed')")
    dashboard.assert_clean()


def test_a_fresh_database_shows_zeros_and_says_what_will_appear(dashboard):
    in_tokyo(dashboard)
    sign_in(dashboard)
    overview_loaded(dashboard)
    shown = kpis(dashboard)
    assert {key: shown[key] for key in ("customers", "active_subscriptions", "events_today", "active_sessions",
                                        "stored_bytes")} == dict.fromkeys(
        ("customers", "active_subscriptions", "events_today", "active_sessions", "stored_bytes"), 0)
    assert (shown["revenue_this_month"], shown["outstanding"], shown["overdue"]) == ({}, {}, {})
    assert dashboard.text("#kpis [data-kpi=overdue] .kpi-value") == "Nothing overdue"
    assert dashboard.text("#kpis [data-kpi=stored_bytes] .kpi-value") == "0 bytes"
    assert "No revenue in the last 12 months" in dashboard.text("#no-revenue")
    assert "No events in the last 30 days" in dashboard.text("#no-events")
    assert dashboard.text("#no-top-customers").startswith("No customer")
    snap(dashboard, "overview-empty", 1280)
    dashboard.browser.send("Emulation.setDeviceMetricsOverride",
                           {"width": 375, "height": 812, "deviceScaleFactor": 2, "mobile": True})
    dashboard.open()
    overview_loaded(dashboard)
    snap(dashboard, "overview-empty", 375)
    dashboard.assert_clean()
