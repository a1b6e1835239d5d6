"""§12: server RSS stays ≤ 300 MB whatever an authenticated client sends.

Hostile JSON bodies (long arrays of numbers) are sent at once, with an admin
key, to a real `python3 server.py` process; its peak RSS (VmHWM) is read from
/proc afterwards. A body with more JSON values than any real request needs is
refused before it is decoded; bodies within that are decoded within a memory
budget, so many at once wait their turn instead of growing the process. The
largest real body, an event batch of MAX_BATCH events, is still accepted."""

import os
import signal
import threading

import pytest

from billing.api.events import MAX_BATCH
from billing.web import bodies
from tests.http.helpers import raw_exchange
from tests.test_server_process import start

KEY = "mk_memory_key_0123456789abcdef0123456789"
LIMIT_KIB = 300 * 1000
TEN_MIB = 10 * 1024 * 1024


def numbers(size):
    """Comma-separated JSON numbers, integers and decimals, `size` bytes long."""
    text = b"1,1.5,2,2.25," * (size // 13 + 1)
    return text[:size].rstrip(b",.")


def post(port, path, body, answers):
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    status, _, _ = raw_exchange(port, head + body, timeout=120, read_body=False)
    answers.append(status)


def all_at_once(port, requests):
    answers = []
    threads = [threading.Thread(target=post, args=(port, path, body, answers)) for path, body in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return answers


def peak_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.fixture
def process(tmp_path):
    proc, port, _ = start([], {"BILLING_DB": str(tmp_path / "billing.db"), "BILLING_ADMIN_KEY": KEY,
                               "BILLING_RATE_LIMIT": "1000000", "BILLING_MAX_EVENT_AGE_DAYS": "0"})
    yield proc, port
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except Exception:
        proc.kill()


def test_four_hostile_10_mib_bodies_at_once_stay_under_300_mb(process):
    proc, port = process
    requests = [("/v1/events/batch", b'{"events":[' + numbers(TEN_MIB - 12) + b"]}"),
                ("/v1/customers", b"[" + numbers(TEN_MIB - 2) + b"]"),
                ("/v1/events/batch", b'{"customer_id":1,"events":[' + numbers(TEN_MIB - 28) + b"]}"),
                ("/v1/events", b"[" + numbers(TEN_MIB - 2) + b"]")]
    assert all(len(body) <= TEN_MIB for _, body in requests)
    answers = all_at_once(port, requests)
    assert len(answers) == 4 and all(400 <= status < 500 for status in answers), answers
    peak = peak_kib(proc.pid)
    assert peak <= LIMIT_KIB, f"peak RSS {peak / 1000:.0f} MB"


def test_many_bodies_just_under_the_value_limit_at_once_stay_under_300_mb(process):
    """Each body is as costly to decode as the value limit allows (decimals in
    lists); eight at once would take ~400 MB if all were decoded together."""
    proc, port = process
    n = bodies.MAX_JSON_VALUES
    shapes = [b'{"events":[' + b"1.5," * (n - 4) + b"1]}", b"[" + b"1.5," * (n - 2) + b"1]",
              b'{"events":[' + b"[1.5]," * (n // 2 - 4) + b"1]}", b'{"a":[' + b'{"a":1.5},' * (n // 3 - 4) + b"1]}"]
    assert all(n - 10 <= bodies.json_values(body) <= n for body in shapes)
    requests = [(path, body) for path in ("/v1/events/batch", "/v1/customers") for body in shapes]
    answers = all_at_once(port, requests)
    assert len(answers) == 8 and all(400 <= status < 500 for status in answers), answers
    peak = peak_kib(proc.pid)
    assert peak <= LIMIT_KIB, f"peak RSS {peak / 1000:.0f} MB"


def largest_batch(properties):
    events = ",".join(
        '{"id":"evt-%08d-0123456789abcdef","meter":"api_calls","quantity":1.5,'
        '"timestamp":"2024-05-01T12:00:00.123456Z","properties":{%s}}'
        % (i, ",".join(f'"p{j}":"value-{j}"' if j % 2 else f'"p{j}":{j}.5' for j in range(properties)))
        for i in range(MAX_BATCH))
    return ('{"customer_id":1,"events":[' + events + "]}").encode()


def test_the_value_limit_leaves_room_for_the_largest_real_batch():
    body = largest_batch(20)  # MAX_BATCH events with 20 properties each
    assert len(body) <= bodies.MAX_BODY_BYTES
    assert bodies.json_values(body) <= bodies.MAX_JSON_VALUES


def test_a_batch_of_max_batch_events_is_accepted_and_a_body_past_the_value_limit_is_refused(process):
    proc, port = process
    answers = []
    post(port, "/v1/meters", b'{"key":"api_calls","name":"API calls","aggregation":"sum"}', answers)
    post(port, "/v1/customers", b'{"name":"Big","email":"big@example.com"}', answers)
    post(port, "/v1/events/batch", largest_batch(8), answers)
    assert answers == [201, 201, 200]
    over = b'{"customer_id":1,"events":[' + b"1," * bodies.MAX_JSON_VALUES + b"1]}"
    post(port, "/v1/events/batch", over, answers)
    assert answers[-1] == 413
    assert peak_kib(proc.pid) <= LIMIT_KIB
