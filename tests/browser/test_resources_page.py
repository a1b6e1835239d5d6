"""The resources page (§6, §11) and the live stream (live.js) in headless
Chromium, against a real in-process server with a temp DB.

Set-up goes through the HTTP API (customers in USD and EUR, "Room A" with a
capacity of 2); people sign in through the form as finance and as a viewer and
click. Updates must come from `GET /v1/stream` while it is open (faster than
the 5 s polling could), and from polling every 5 s while the server refuses
new streams (the test holds all MAX_STREAMS of them). Each test ends by
checking that the page logged no console error, threw nothing and broke no
CSP rule. Screenshots at 1280 and 375 px go to /tmp/shots/.
"""

import json
import re
import socket
import time
from datetime import datetime, timedelta, timezone

import pytest

from billing import clock
from billing.web.stream import MAX_STREAMS
from tests.browser.test_dashboard import INJECTION, browser, dashboard  # noqa: F401  (the shared fixtures)
from tests.browser.test_invoice_workflow import snap
from tests.harness import ADMIN_KEY

PASSWORD = "rooms-password-1"
PEOPLE = {
    "finance": {"email": "fin@rooms.example", "name": "Fiona Finance", "role": "finance"},
    "viewer": {"email": "viewer@rooms.example", "name": "Vic Viewer", "role": "viewer"},
}
# Room A's history: (days ago, start hour UTC, minutes) → 90.00 and 45.00 USD at 0.50 a minute.
HISTORY = ((2, 9, 180), (1, 13, 90))
STREAM_WAIT = 4.5  # seconds: under one 5 s poll (and the page does not poll at all while the stream is live)
POLL_WAIT = 7      # one 5 s poll plus the requests it makes


@pytest.fixture
def rooms(server):
    admin = server.admin
    for person in PEOPLE.values():
        reply = admin.post("/v1/users", {**person, "password": PASSWORD})
        assert reply.status == 201, reply
    customers = {}
    for key, body in (("acme", {"name": "Acme Corp", "email": "ops@acme.example"}),
                      ("globex", {"name": "Globex", "email": "ops@globex.example"}),
                      ("euro", {"name": "Euro GmbH", "email": "ops@euro.example", "currency": "EUR"})):
        reply = admin.post("/v1/customers", body)
        assert reply.status == 201, reply
        customers[key] = reply.json["id"]
    resources = {}
    for key, body in (("room", {"name": "Room A", "description": "Meeting room, 2 seats", "capacity": 2,
                                "price_per_minute": "0.50", "currency": "USD"}),
                      ("lab", {"name": INJECTION, "capacity": 1, "price_per_minute": "0.2", "currency": "EUR",
                               "max_duration_minutes": 120})):
        reply = admin.post("/v1/resources", body)
        assert reply.status == 201, reply
        resources[key] = reply.json["id"]
    midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    for days, hour, minutes in HISTORY:  # sessions in the past: the server's clock is pinned for them
        begin = midnight - timedelta(days=days) + timedelta(hours=hour)
        with clock.at(begin):
            reply = admin.post("/v1/sessions", {"resource_id": resources["room"], "customer_id": customers["globex"],
                                                "user": "earlier"})
            assert reply.status == 201, reply
        with clock.at(begin + timedelta(minutes=minutes)):
            stopped = admin.post(f"/v1/sessions/{reply.json['id']}/stop")
            assert stopped.status == 200 and stopped.json["cost"] == f"{minutes // 2}.00", stopped
    return {"customers": customers, "resources": resources}


# -- helpers -------------------------------------------------------------------------

def sign_in(dashboard, who, hash_="#/resources"):
    person = PEOPLE[who]
    dashboard.sign_in(email=person["email"], password=PASSWORD, hash_=hash_)
    who_text = f"{person['email']} ({person['role']})"
    dashboard.wait(f"document.querySelector('#who')?.textContent === {json.dumps(who_text)}")


def card(resource_id):
    return f"article.resource[data-id='{resource_id}']"


def occupancy(dashboard, resource_id):
    """(active, capacity, full) as the card shows them."""
    return dashboard.js(f"""(() => {{
        const card = document.querySelector("{card(resource_id)}");
        const box = card.querySelector('.occupancy');
        return [+box.dataset.active, +box.dataset.capacity, card.classList.contains('full')
                && !!box.querySelector('svg.meter-bar.full') && !!box.querySelector('.full-badge'),
                box.querySelector('.occupancy-count').textContent];
    }})()""")


def wait_active(dashboard, resource_id, count, timeout=10):
    dashboard.wait(f"document.querySelector(\"{card(resource_id)} .occupancy\")?.dataset.active === '{count}'"
                   f" && document.querySelectorAll(\"{card(resource_id)} table.sessions tbody tr[data-session]\").length"
                   f" === {count}", timeout)


def live_state(dashboard):
    return dashboard.js("[document.querySelector('#live-status').dataset.state,"
                        " document.querySelector('#live-status .live-label').textContent,"
                        " !document.querySelector('#live-status').hidden]")


def start_from_page(dashboard, resource_id, customer_id, user):
    form = f"{card(resource_id)} form.start-session"
    dashboard.fill(f"{form} [name=customer_id]", str(customer_id))
    dashboard.fill(f"{form} [name=user]", user)
    dashboard.js(f"document.querySelector(\"{card(resource_id)} .start .message\").hidden = true")
    dashboard.click(f"{form} button[type=submit]")
    return dashboard.wait(f"(() => {{ const line = document.querySelector(\"{card(resource_id)} .start .message\");"
                          " return !line.hidden && !document.querySelector("
                          f"\"{form} button:disabled\") && [line.className, line.textContent, line.dataset.code || null]; }})()")


def active_sessions(server, resource_id):
    return server.admin.get(f"/v1/sessions?active=true&resource_id={resource_id}").json["data"]


def hold_streams(port, count):
    """Open `count` live streams with raw sockets (and keep them open), from
    127.0.0.2: the browser's own connections come from 127.0.0.1, and one
    address may hold at most 64 connections."""
    held = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.2", 0))
            held.append(sock)
            sock.sendall((f"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
                          f"Authorization: Bearer {ADMIN_KEY}\r\n\r\n").encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                assert chunk, "the stream closed at once"
                head += chunk
            assert head.startswith(b"HTTP/1.1 200"), head[:200]
    except BaseException:
        release(held)
        raise
    return held


def release(held):
    for sock in held:
        try:
            sock.close()
        except OSError:
            pass


# -- tests ---------------------------------------------------------------------------

def test_finance_creates_starts_and_stops_sessions_live(dashboard, rooms):
    server = dashboard.server
    room = rooms["resources"]["room"]
    acme, globex, euro = (rooms["customers"][key] for key in ("acme", "globex", "euro"))
    dashboard.allowed_failures.update({("/v1/sessions", 409), (f"/v1/resources/{room}", 409)})
    sign_in(dashboard, "finance")
    assert "Resources" in dashboard.texts("#nav a:not([hidden])")
    assert dashboard.text("#nav a[aria-current=page]") == "Resources"
    dashboard.wait(f"!!document.querySelector(\"{card(room)} .occupancy\")")
    dashboard.wait("document.querySelector('#live-status')?.dataset.state === 'live'")
    assert live_state(dashboard) == ["live", "live", True]
    assert occupancy(dashboard, room) == [0, 2, False, "0 / 2"]
    assert dashboard.text(f"{card(room)} .price .per-minute") == "0.50 USD"
    assert dashboard.text(f"{card(room)} .description") == "Meeting room, 2 seats"
    # The start form offers the customers who pay in the resource's currency only.
    options = dashboard.texts(f"{card(room)} form.start-session [name=customer_id] option")
    assert options == [f"Acme Corp (#{acme})", f"Globex (#{globex})"]
    lab = rooms["resources"]["lab"]
    assert dashboard.texts(f"{card(lab)} form.start-session [name=customer_id] option") == [f"Euro GmbH (#{euro})"]
    assert dashboard.text(f"{card(lab)} h2") == INJECTION and dashboard.count("main img") == 0
    assert "null" not in dashboard.text("main")
    # The chart of the last 7 days: one bar slot per day, on a 0–100 % axis.
    assert dashboard.count(f"{card(room)} .utilization svg.chart-bar rect.bar") == 7
    assert dashboard.texts(f"{card(room)} .utilization .axis-y text")[-2:] == ["100", "%"]
    tips = dashboard.texts(f"{card(room)} .utilization rect.bar title")
    assert sum(1 for tip in tips if not tip.endswith(": 0.00 %")) == len(HISTORY), tips
    assert ": 6.25 %" in " ".join(tips)  # 180 of 2 × 1,440 minutes
    assert dashboard.text(f"{card(room)} .billing-totals") == "All time: 2 sessions, 270 min, 135.00 USD"
    assert dashboard.texts(f"{card(room)} table.billing td.cost") == ["45.00 USD", "90.00 USD"]

    # Create a resource through the form.
    dashboard.click("#new-resource > summary")
    dashboard.fill("#create-resource [name=name]", "Studio B")
    dashboard.fill("#create-resource [name=capacity]", "3")
    dashboard.fill("#create-resource [name=price_per_minute]", "1.20")
    dashboard.fill("#create-resource [name=currency]", "usd")
    dashboard.fill("#create-resource [name=description]", "Podcast studio")
    dashboard.click("#create-resource button[type=submit]")
    dashboard.wait("document.querySelector('#new-resource .message.ok')?.textContent.includes('Studio B')")
    studio = next(item for item in server.admin.get("/v1/resources").json["data"] if item["name"] == "Studio B")
    assert (studio["capacity"], studio["price_per_minute"], studio["currency"]) == (3, "1.20", "USD")
    dashboard.wait(f"!!document.querySelector(\"{card(studio['id'])} .occupancy\")")
    assert occupancy(dashboard, studio["id"]) == [0, 3, False, "0 / 3"]
    dashboard.allowed_failures.add(("/v1/resources", 409))
    dashboard.fill("#create-resource [name=name]", "Studio B")
    dashboard.fill("#create-resource [name=price_per_minute]", "1")
    dashboard.click("#create-resource button[type=submit]")
    dashboard.wait("document.querySelector('#new-resource .message.error')?.textContent.includes('already exists')")

    # Two sessions from the page fill Room A: 2 / 2, in the "full" colour.
    kind, text, _ = start_from_page(dashboard, room, acme, "alice")
    assert kind == "message ok" and text.startswith("Started session #") and "Acme Corp" in text, text
    wait_active(dashboard, room, 1)
    kind, text, _ = start_from_page(dashboard, room, globex, "bob")
    assert kind == "message ok", text
    wait_active(dashboard, room, 2)
    assert occupancy(dashboard, room) == [2, 2, True, "2 / 2"]
    assert dashboard.js(f"getComputedStyle(document.querySelector(\"{card(room)} svg.meter-bar .fill\")).fill") \
        == "rgb(180, 35, 24)"  # var(--error)
    running = active_sessions(server, room)
    assert sorted(item["user"] for item in running) == ["alice", "bob"]

    # A third start: the server's capacity_full message, and still 2 sessions.
    kind, text, code = start_from_page(dashboard, room, acme, "carol")
    assert kind == "message error" and code == "capacity_full", (kind, text, code)
    assert "Room A is full: 2 of 2 in use." in text
    assert len(active_sessions(server, room)) == 2

    # The running timers tick on the client, and the cost so far has the currency's digits.
    alice = next(item for item in running if item["user"] == "alice")
    row = f"{card(room)} tr[data-session='{alice['id']}']"
    first = dashboard.js(f"+document.querySelector(\"{row} .elapsed\").dataset.seconds")
    dashboard.wait(f"+document.querySelector(\"{row} .elapsed\").dataset.seconds >= {first + 2}", timeout=5)
    assert re.fullmatch(r"\d+:\d\d:\d\d", dashboard.text(f"{row} .elapsed"))
    assert re.fullmatch(r"\d+\.\d\d USD", dashboard.text(f"{row} .cost-so-far"))
    assert dashboard.text(f"{row} .customer a") == "Acme Corp" and dashboard.text(f"{row} .user") == "alice"

    # A session started through the API appears without a reload, over the stream.
    assert live_state(dashboard)[0] == "live"
    started = time.monotonic()
    reply = server.admin.post("/v1/sessions", {"resource_id": studio["id"], "customer_id": globex, "user": "api"})
    assert reply.status == 201, reply
    wait_active(dashboard, studio["id"], 1, timeout=STREAM_WAIT)
    assert time.monotonic() - started < STREAM_WAIT
    assert dashboard.text(f"#resources-summary") == "3 resources · 3 sessions running"

    # Change the capacity in the edit form; deleting a resource in use shows the server's 409.
    dashboard.click(f"{card(studio['id'])} details.edit > summary")
    dashboard.fill(f"{card(studio['id'])} form.edit-resource [name=capacity]", "4")
    dashboard.click(f"{card(studio['id'])} form.edit-resource button[type=submit]")
    dashboard.wait(f"document.querySelector(\"{card(studio['id'])} details.edit .message.ok\")?.textContent === 'Saved “Studio B”.'")
    assert occupancy(dashboard, studio["id"]) == [1, 4, False, "1 / 4"]
    assert server.admin.get(f"/v1/resources/{studio['id']}").json["capacity"] == 4
    dashboard.click(f"{card(room)} details.edit > summary")
    dashboard.click(f"{card(room)} button.delete")
    dashboard.click(f"{card(room)} .confirm-delete button.confirm")
    message = dashboard.wait(f"document.querySelector(\"{card(room)} details.edit .message.error\")?.textContent")
    assert "has 2 active sessions; stop them first" in message, message
    assert server.admin.get(f"/v1/resources/{room}").status == 200
    dashboard.click(f"{card(room)} details.edit > summary")  # close it again

    snap(dashboard, "resources-full", 1280)
    snap(dashboard, "resources-full", 375)

    # Stop alice's session from the page: the bar drops, the history shows it with its cost.
    dashboard.click(f"{row} button.stop")
    wait_active(dashboard, room, 1)
    assert occupancy(dashboard, room) == [1, 2, False, "1 / 2"]
    stopped = server.admin.get(f"/v1/sessions/{alice['id']}").json
    assert stopped["status"] == "stopped" and stopped["cost"] is not None
    dashboard.wait(f"!!document.querySelector(\"{card(room)} table.billing tr[data-session='{alice['id']}']\")")
    record = f"{card(room)} table.billing tr[data-session='{alice['id']}']"
    assert dashboard.text(f"{record} .cost") == f"{stopped['cost']} USD"
    assert dashboard.text(f"{record} .customer a") == "Acme Corp"
    assert dashboard.text(f"{record} .user") == "alice"
    totals = server.admin.get(f"/v1/billing-records?resource_id={room}").json["totals"]["USD"]
    assert dashboard.text(f"{card(room)} .billing-totals .total[data-currency=USD] strong") == f"{totals['amount']} USD"
    assert "All time: 3 sessions, " in dashboard.text(f"{card(room)} .billing-totals")
    assert dashboard.text(f"{card(room)} > .message.ok").startswith(f"Stopped session #{alice['id']} after ")

    # Stopped through the API (another desk): the page follows over the stream.
    bob = next(item for item in running if item["user"] == "bob")
    started = time.monotonic()
    assert server.admin.post(f"/v1/sessions/{bob['id']}/stop").status == 200
    wait_active(dashboard, room, 0, timeout=STREAM_WAIT)
    dashboard.wait(f"!!document.querySelector(\"{card(room)} table.billing tr[data-session='{bob['id']}']\")",
                   timeout=STREAM_WAIT)
    assert time.monotonic() - started < STREAM_WAIT
    assert dashboard.js(f"document.querySelector(\"{card(room)} .none-running\").hidden") is False

    snap(dashboard, "resources", 1280)
    snap(dashboard, "resources", 375)

    # The events page reads the same stream's stats (events per second).
    dashboard.go("#/events")
    dashboard.wait("/^\\d+ events?\\/s$/.test(document.querySelector('#events-rate')?.textContent || '')"
                   " && !document.querySelector('#events-rate').hidden")
    assert live_state(dashboard)[0] == "live"
    # A new event shows up as soon as the next `stats` counts it, not after a 5 s poll.
    assert server.admin.post("/v1/meters", {"key": "calls", "name": "Calls", "unit": "call",
                                            "aggregation": "sum"}).status == 201
    started = time.monotonic()
    reply = server.admin.post("/v1/events", {"id": "live-tail-1", "customer_id": acme, "meter": "calls", "quantity": 3,
                                             "timestamp": datetime.now(timezone.utc).isoformat()})
    assert reply.status == 201, reply
    dashboard.wait("document.querySelector('table.events tbody tr[data-event]')?.dataset.event === 'live-tail-1'",
                   timeout=STREAM_WAIT)
    assert time.monotonic() - started < STREAM_WAIT
    snap(dashboard, "events-live", 1280)
    snap(dashboard, "events-live", 375)
    dashboard.assert_clean()


def test_a_viewer_sees_occupancy_but_no_controls(dashboard, rooms):
    server = dashboard.server
    room = rooms["resources"]["room"]
    reply = server.admin.post("/v1/sessions", {"resource_id": room, "customer_id": rooms["customers"]["acme"],
                                               "user": "<b>dave</b>"})
    assert reply.status == 201, reply
    sign_in(dashboard, "viewer")
    assert "Resources" in dashboard.texts("#nav a:not([hidden])")
    wait_active(dashboard, room, 1)
    dashboard.wait("document.querySelector('#live-status')?.dataset.state === 'live'")
    assert occupancy(dashboard, room) == [1, 2, False, "1 / 2"]
    assert dashboard.text(f"{card(room)} table.sessions .user") == "<b>dave</b>"
    assert dashboard.count("main b, main img") == 0
    assert dashboard.count("#new-resource, #create-resource, form.start-session, button.stop, details.edit,"
                           " button.delete") == 0
    assert "null" not in dashboard.text("main")  # a left-out control leaves nothing behind
    # A session started elsewhere still shows up live for the viewer.
    reply = server.admin.post("/v1/sessions", {"resource_id": room, "customer_id": rooms["customers"]["globex"]})
    assert reply.status == 201, reply
    wait_active(dashboard, room, 2, timeout=STREAM_WAIT)
    assert occupancy(dashboard, room)[2] is True
    snap(dashboard, "resources-viewer", 375)
    dashboard.go("#/customers")  # the same for the customers and meters pages
    dashboard.wait("document.querySelectorAll('table.customers tbody tr[data-id]').length === 3")
    assert dashboard.count("#create-customer") == 0 and "null" not in dashboard.text("main")
    dashboard.go("#/meters")
    dashboard.wait("!!document.querySelector('table.meters tbody tr')")
    assert dashboard.count("#create-meter") == 0 and "null" not in dashboard.text("main")
    dashboard.assert_clean()


def test_without_a_stream_the_page_polls_and_reconnects_later(dashboard, rooms):
    server = dashboard.server
    room = rooms["resources"]["room"]
    acme = rooms["customers"]["acme"]
    dashboard.allowed_failures.add(("/v1/stream", 503))
    held = hold_streams(server.port, MAX_STREAMS)
    try:
        refused = server.admin.get("/v1/stream")
        assert refused.status == 503 and refused.error_code, refused
        sign_in(dashboard, "finance")
        dashboard.wait(f"!!document.querySelector(\"{card(room)} .occupancy\")")
        dashboard.wait("document.querySelector('#live-status')?.dataset.state === 'polling'")
        assert live_state(dashboard) == ["polling", "polling", True]
        assert "503" in dashboard.js("document.querySelector('#live-status').title")

        # Changes made elsewhere still reach the page, by polling, within about 6 s.
        reply = server.admin.post("/v1/sessions", {"resource_id": room, "customer_id": acme, "user": "poll"})
        assert reply.status == 201, reply
        wait_active(dashboard, room, 1, timeout=POLL_WAIT)
        assert server.admin.post(f"/v1/sessions/{reply.json['id']}/stop").status == 200
        wait_active(dashboard, room, 0, timeout=POLL_WAIT)
        dashboard.wait(f"!!document.querySelector(\"{card(room)} table.billing tr[data-session='{reply.json['id']}']\")",
                       timeout=POLL_WAIT)
        # Actions on the page itself do not wait for a poll.
        kind, text, _ = start_from_page(dashboard, room, acme, "eve")
        assert kind == "message ok", text
        wait_active(dashboard, room, 1, timeout=2)
        snap(dashboard, "resources-polling", 1280)
    finally:
        release(held)

    # Once streams are free again, the page reconnects (with backoff: at most ~15 s) and is live.
    dashboard.wait("document.querySelector('#live-status')?.dataset.state === 'live'", timeout=25)
    assert live_state(dashboard) == ["live", "live", True]
    reply = server.admin.post("/v1/sessions", {"resource_id": room, "customer_id": acme, "user": "late"})
    assert reply.status == 201, reply
    wait_active(dashboard, room, 2, timeout=STREAM_WAIT)
    dashboard.assert_clean()
