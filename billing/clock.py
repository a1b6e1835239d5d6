"""The one clock. Everything time-dependent asks `now()`, so tests can pin it."""

import threading
from datetime import datetime, timedelta, timezone

_lock = threading.Lock()
_pinned = None


def now():
    """The current instant as an aware UTC datetime (pinned in tests)."""
    pinned = _pinned
    if pinned is not None:
        return pinned
    return datetime.now(timezone.utc)


def pin(instant):
    """Freeze the clock at `instant` (aware datetime), or unfreeze with None."""
    global _pinned
    with _lock:
        if instant is not None and instant.tzinfo is None:
            raise ValueError("pinned time must be timezone-aware")
        _pinned = instant.astimezone(timezone.utc) if instant else None


def advance(**delta):
    """Move a pinned clock forward by a timedelta's keyword arguments."""
    global _pinned
    with _lock:
        if _pinned is None:
            raise RuntimeError("advance() needs a pinned clock")
        _pinned = _pinned + timedelta(**delta)


class at:
    """`with clock.at(instant):` the clock reads `instant` inside the block and
    what it read before afterwards (the demo replays past months this way)."""

    def __init__(self, instant):
        self.instant = instant
        self.saved = None

    def __enter__(self):
        self.saved = _pinned
        pin(self.instant)
        return self.instant

    def __exit__(self, *exc):
        pin(self.saved)
        return False
