"""One real clickhouse-server for the whole test session (tests/clickhouse/server.py),
on free ports with its data in a temporary folder. Without the program the
tests skip, naming the package; in CI (CI set) they fail instead."""

import pytest

from tests import tools
from tests.clickhouse.server import ClickHouseServer, binary

REASON = "clickhouse-server is not installed (apt-get install clickhouse-server)"


@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory):
    if binary() is None:
        if tools.in_ci():
            pytest.fail(f"{REASON}; CI needs every tool", pytrace=False)
        pytest.skip(REASON)
    server = ClickHouseServer(tmp_path_factory.mktemp("clickhouse")).start()
    yield server
    server.stop()


@pytest.fixture
def clickhouse(clickhouse_server):
    """The session's server, running (a test that stopped it gets it started again)."""
    if clickhouse_server.process is None:
        clickhouse_server.start()
    yield clickhouse_server
    if clickhouse_server.process is None:
        clickhouse_server.start()
