"""The servers' body budgets (billing/web/bodies.py): what requests hold of
them is taken and given back, a taker past what is free waits until enough
is given back (then goes on at once), and after its wait it is answered 503."""

import threading
import time

import pytest

from billing import errors
from billing.web import bodies


def test_amounts_are_capped_at_the_whole_budget():
    budget = bodies.Budget(100, "request bodies")
    assert budget.take(500, wait=0.1) == 100 and budget.free == 0
    budget.give(100)
    assert budget.free == 100


def test_a_waiting_taker_goes_on_as_soon_as_enough_is_given_back():
    budget = bodies.Budget(100, "request bodies")
    budget.take(80)
    taken = []
    waiter = threading.Thread(target=lambda: taken.append((budget.take(50, wait=10), time.monotonic())))
    waiter.start()
    deadline = time.monotonic() + 10
    while budget._waiting != 1:  # 20 free: it waits
        assert time.monotonic() < deadline, "the taker never waited"
        time.sleep(0.01)
    time.sleep(0.1)
    assert not taken
    given = time.monotonic()
    budget.give(80)
    waiter.join(5)
    assert taken and taken[0][0] == 50 and taken[0][1] - given < 1
    assert budget.free == 50 and budget._waiting == 0


def test_a_taker_that_waited_its_time_is_answered_503_and_holds_nothing():
    budget = bodies.Budget(100, "request bodies")
    budget.take(90)
    started = time.monotonic()
    with pytest.raises(errors.ServiceUnavailable) as refused:
        budget.take(20, wait=0.3)
    assert 0.25 <= time.monotonic() - started < 2
    assert refused.value.headers == {"Retry-After": "1"} and "request bodies" in str(refused.value)
    assert budget.free == 10 and budget._waiting == 0
