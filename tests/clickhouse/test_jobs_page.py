"""The Jobs page's ClickHouse card in headless Chromium (§13): the backlog
waiting to be shipped and ClickHouse's last error while it is down, then
nothing waiting and the last shipment once it is back."""

import pytest

from billing.api.clickhouse import ClickHouseError
from tests.browser.test_dashboard import Dashboard, browser  # noqa: F401  (the shared fixture)
from tests.browser.test_invoice_workflow import snap
from tests.clickhouse.helpers import calls_customer, start


@pytest.fixture
def server(tmp_path, clickhouse):
    running = start(tmp_path, clickhouse)
    yield running
    running.stop()


CARD = "document.querySelector('#clickhouse-shipping')"


def card_item(dashboard, key):
    return dashboard.js(f"{CARD}?.querySelector('[data-key={key}]')?.textContent ?? null")


def test_the_jobs_page_shows_the_backlog_and_the_last_error_then_the_shipment(browser, server, clickhouse, tmp_path):
    dashboard = Dashboard(browser, server, str(tmp_path / "shots"))
    clickhouse.stop()
    calls_customer(server, 30)
    with pytest.raises(ClickHouseError):
        server.app.shipper.run_once()
    dashboard.sign_in(hash_="#/jobs")
    dashboard.signed_in()
    dashboard.wait(f"!!{CARD}")
    assert dashboard.js(f"{CARD}.querySelector('h2').textContent") == "ClickHouse"
    assert card_item(dashboard, "backlog") == "30 events waiting to be shipped"
    assert card_item(dashboard, "last_shipped_at") == "Last shipment: none yet"
    assert card_item(dashboard, "last_error").startswith("Last ClickHouse error")
    assert "cannot reach http://127.0.0.1:" in card_item(dashboard, "last_error")
    assert dashboard.js(f"{CARD}.querySelector('[data-key=last_error]').className") == "bad"
    snap(dashboard, "jobs-clickhouse-down", 1280)

    clickhouse.start()
    assert server.app.shipper.run_once() == 30
    dashboard.go("#/overview")
    dashboard.go("#/jobs")
    dashboard.wait(f"{CARD}?.querySelector('[data-key=backlog]')?.textContent === 'Nothing waiting to be shipped'")
    assert card_item(dashboard, "last_shipped_at").startswith("Last shipment: ")
    assert card_item(dashboard, "last_shipped_at") != "Last shipment: none yet"
    assert card_item(dashboard, "last_error").startswith("Earlier ClickHouse error")  # over: not in red
    assert dashboard.js(f"{CARD}.querySelector('[data-key=last_error]').className") == "none"
    snap(dashboard, "jobs-clickhouse", 375)
    dashboard.assert_clean()


def test_without_clickhouse_the_jobs_page_has_no_card(browser, tmp_path):
    plain = start(tmp_path)
    try:
        dashboard = Dashboard(browser, plain, str(tmp_path / "shots"))
        dashboard.sign_in(hash_="#/jobs")
        dashboard.signed_in()
        dashboard.wait("!!document.querySelector('table.jobs')")
        dashboard.wait("!!document.querySelector('table.jobs td.empty')")
        assert dashboard.js(f"{CARD} === null")
        dashboard.assert_clean()
    finally:
        plain.stop()
