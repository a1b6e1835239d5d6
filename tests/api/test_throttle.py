"""The sign-in throttle's and the rate limit's tables on their own: the
client address rule, the windows, and memory that stays bounded without a
pass over the table on each call."""

import ipaddress
import time
from types import SimpleNamespace

import pytest

from billing.api import ratelimit, throttle
from billing.errors import RateLimited

PROXIES = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"),
           ipaddress.ip_network("2001:db8::/32"))


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize("peer,forwarded,expected", [
    ("203.0.113.7", "198.51.100.1", "203.0.113.7"),           # an untrusted peer's header is ignored
    ("127.0.0.1", None, "127.0.0.1"),                          # a trusted peer without a header
    ("127.0.0.1", "198.51.100.1", "198.51.100.1"),
    ("127.0.0.1", " 192.0.2.1 ,198.51.100.1 ", "198.51.100.1"),  # the right-most untrusted entry
    ("127.0.0.1", "192.0.2.1, 198.51.100.1, 10.2.3.4", "198.51.100.1"),  # past inner trusted proxies
    ("127.0.0.1", "10.0.0.1, 10.2.3.4", "10.0.0.1"),          # only proxies: the farthest one reached
    ("127.0.0.1", "192.0.2.1, junk", "127.0.0.1"),            # a bad entry: the last trusted hop reached
    ("127.0.0.1", "192.0.2.1, junk, 10.2.3.4", "10.2.3.4"),
    ("127.0.0.1", "198.51.100.1:443", "127.0.0.1"),           # ports are not bare addresses
    ("127.0.0.1", "", "127.0.0.1"),
    ("::ffff:127.0.0.1", "198.51.100.1", "198.51.100.1"),     # IPv4-mapped peers are IPv4
    ("127.0.0.1", "2001:db8::5, 2001:0DB9::1", "2001:db9::1"),  # IPv6, written one way
    ("127.0.0.1", "2001:db9::1, 2001:db8::5", "2001:db9::1"),
])
def test_client_address(peer, forwarded, expected):
    assert throttle.client_address(peer, forwarded, PROXIES) == expected


def test_without_trusted_proxies_the_peer_is_the_client():
    assert throttle.client_address("127.0.0.1", "198.51.100.1", ()) == "127.0.0.1"


def test_limits_and_retry_after():
    clock = Clock()
    table = throttle.SignInThrottle(now=clock)
    for _ in range(10):
        table.reserve("a@example.com", "192.0.2.1")
    with pytest.raises(RateLimited) as raised:
        table.reserve("a@example.com", "192.0.2.1")
    assert raised.value.headers["Retry-After"] == "900"
    table.reserve("a@example.com", "192.0.2.2")  # never per e-mail alone
    clock.now += 899.5
    with pytest.raises(RateLimited) as raised:
        table.reserve("a@example.com", "192.0.2.1")
    assert raised.value.headers["Retry-After"] == "1"  # rounded up, never 0
    clock.now += 0.5
    table.reserve("a@example.com", "192.0.2.1")


def test_a_success_takes_back_its_own_attempt_only():
    clock = Clock()
    table = throttle.SignInThrottle(now=clock)
    for number in range(99):
        table.reserve(f"{number}@example.com", "192.0.2.1")
    ticket = table.reserve("me@example.com", "192.0.2.1")
    table.succeeded(ticket)
    table.reserve("x@example.com", "192.0.2.1")  # the 100th failure
    with pytest.raises(RateLimited):
        table.reserve("me@example.com", "192.0.2.1")


def test_the_tables_stay_bounded_under_100000_addresses():
    clock = Clock()
    table = throttle.SignInThrottle(now=clock)
    started = time.perf_counter()
    for number in range(100_000):
        clock.now += 0.001  # 100,000 failures in 100 s: every one inside both windows
        table.reserve("admin@localhost", str(ipaddress.IPv4Address(0x0A000000 + number)))
    elapsed = time.perf_counter() - started
    assert len(table.pairs) == throttle.MAX_KEYS and len(table.addresses) == throttle.MAX_KEYS
    # the newest are kept: the latest address is still counted, the first long forgotten
    assert len(table.addresses.keys["10.1.134.159"]) == 1 and "10.0.0.0" not in table.addresses.keys
    assert elapsed < 10, elapsed  # constant work per call (a pass over the table each time would take minutes)
    clock.now += throttle.PAIR_SECONDS
    table.reserve("admin@localhost", "192.0.2.1")
    assert len(table.pairs) == 1 and len(table.addresses) == 1  # everything older expired, from the front


def test_quiet_keys_expire_as_the_clock_moves():
    clock = Clock()
    table = throttle.SignInThrottle(now=clock)
    for number in range(1000):
        table.reserve(f"{number}@example.com", f"192.0.2.{number % 200}")
    assert len(table.pairs) == 1000 and len(table.addresses) == 200
    clock.now += throttle.ADDRESS_SECONDS
    table.reserve("late@example.com", "198.51.100.1")
    assert len(table.addresses) == 1 and len(table.pairs) == 1001  # the pairs' window is longer
    clock.now += throttle.PAIR_SECONDS - throttle.ADDRESS_SECONDS
    table.reserve("later@example.com", "198.51.100.1")
    assert len(table.pairs) == 2


# -- the rate limit --------------------------------------------------------------

def customer(label_id, customer_id=7):
    return SimpleNamespace(label=f"key:{label_id}", customer_id=customer_id)


def test_bucket_burst_refill_and_retry_after():
    clock = Clock()
    limiter = ratelimit.RateLimiter(5, now=clock)
    for _ in range(10):
        limiter.check(customer(1))
    with pytest.raises(RateLimited) as raised:
        limiter.check(customer(1))
    assert raised.value.headers["Retry-After"] == "1"
    limiter.check(customer(2))  # its own bucket
    clock.now += 0.25  # a token and a quarter back
    limiter.check(customer(1))
    with pytest.raises(RateLimited):
        limiter.check(customer(1))
    clock.now += 100  # never more than the burst
    for _ in range(10):
        limiter.check(customer(1))
    with pytest.raises(RateLimited):
        limiter.check(customer(1))


def test_staff_are_not_limited():
    limiter = ratelimit.RateLimiter(1, now=Clock())
    for _ in range(1000):
        limiter.check(customer(1, customer_id=None))
    assert len(limiter) == 0


def test_buckets_stay_bounded():
    clock = Clock()
    limiter = ratelimit.RateLimiter(100, now=clock, max_buckets=1000)
    for number in range(200_000):
        clock.now += 0.0001  # 20,000 credentials a second, each once
        limiter.check(customer(number))
    assert len(limiter) == 1000  # the cap
    clock.now += 2
    limiter.check(customer("last"))
    assert len(limiter) == 1  # idle buckets are full again, so forgotten
