import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from billing import clock  # noqa: E402
from tests.harness import RunningServer, temp_db  # noqa: E402


@pytest.fixture
def server(tmp_path):
    running = RunningServer(temp_db(tmp_path), env={"BILLING_MAX_EVENT_AGE_DAYS": "0"})
    yield running
    running.stop()


@pytest.fixture
def admin(server):
    return server.admin


@pytest.fixture(autouse=True)
def _unpin_clock():
    yield
    clock.pin(None)
