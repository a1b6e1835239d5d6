import os
import sys
from collections import Counter

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


def pytest_terminal_summary(terminalreporter):
    """Skipped tests grouped by reason: what this run did not check, and the
    package that would check it (tests/tools.py)."""
    reasons = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    if reasons:
        terminalreporter.section("not checked on this machine")
        for reason, count in reasons.most_common():
            terminalreporter.line(f"{count:>4} skipped: {reason}")
