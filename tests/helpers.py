"""Helpers shared by tests in more than one folder of tests/ (the HTTP-only
ones are in tests/http/helpers.py): instants, e-mails, ports, digests, polling."""

import hashlib
import socket
import time
from datetime import datetime, timezone
from email import policy
from email.parser import BytesParser


def at(text):
    """An RFC 3339 instant ('…Z' or with an offset) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso(moment):
    """An aware datetime as RFC 3339 in UTC, to the second: 2025-09-16T21:05:00Z."""
    return moment.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def day_at(day, hour=0):
    """`hour` o'clock UTC on the date `day`, as iso() writes it."""
    return iso(datetime(day.year, day.month, day.day, hour, tzinfo=timezone.utc))


def parse_email(data):
    """An e-mail (bytes, as sent or written to the outbox) as an EmailMessage."""
    return BytesParser(policy=policy.default).parsebytes(data)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def wait_for(condition, timeout=10, message="condition", interval=0.005):
    """Poll `condition()` every `interval` s until it is true (returns its value);
    fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)
