"""Sign-in throttling (§9): failed sign-ins are counted per (e-mail, client
address) — 10 in 15 minutes — and per client address — 100 in 5 minutes,
whatever the e-mails. Past either limit the next attempt is a 429 with
`Retry-After`. Never per e-mail alone: the right password from an address
with no recent failures always works, so nobody can lock a user out from
elsewhere.

Time comes from `billing.clock`, so tests pin it instead of waiting.
"""

import ipaddress
import math
import threading
from collections import OrderedDict

from .. import clock
from ..errors import RateLimited

PAIR_LIMIT, PAIR_SECONDS = 10, 15 * 60
ADDRESS_LIMIT, ADDRESS_SECONDS = 100, 5 * 60
MAX_KEYS = 50_000  # per table; see SlidingWindow.expire


def _seconds():
    return clock.now().timestamp()


def _parse(text):
    """An address from header or socket text (IPv4-mapped IPv6 as IPv4), or None."""
    try:
        address = ipaddress.ip_address(text.strip())
    except (ValueError, AttributeError):
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def _trusted(address, proxies):
    return any(address in network for network in proxies)


def client_address(peer, forwarded, proxies):
    """The address a request is counted against.

    `peer` is the socket's peer, `forwarded` the X-Forwarded-For header (or
    None; when the header is repeated the server keeps its last line, the one
    the nearest proxy wrote), `proxies` the ip_networks of
    BILLING_TRUSTED_PROXIES.

    An untrusted peer is the answer, whatever it sends. A trusted peer's
    X-Forwarded-For is walked from the right, past addresses that are
    themselves trusted proxies; the first untrusted address is the client.
    An entry that is not a bare IP address (a name, a port, `unknown`, junk)
    ends the walk: nothing to its left can be vouched for, so the last
    trusted hop reached (the peer, or the trusted proxy named just right of
    the bad entry) is used — every client behind a misbehaving proxy then
    shares that proxy's count, which throttles more, never less. With no
    header, or only trusted entries, the last trusted hop reached is used
    too. Nothing else is read (no X-Real-IP, no Forwarded)."""
    address = _parse(peer)
    if address is None:
        return str(peer)
    if not proxies or not _trusted(address, proxies) or not forwarded:
        return str(address)
    for entry in reversed(forwarded.split(",")):
        hop = _parse(entry)
        if hop is None:
            break
        address = hop
        if not _trusted(hop, proxies):
            break
    return str(address)


class SlidingWindow:
    """Failures per key within a sliding window of `seconds`.

    Each key keeps only its newest `limit` failure times (oldest first): the
    key is blocked while the oldest of them is younger than the window, and
    may try again once it ages out. Keys are ordered by their newest failure,
    so the ones that have gone quiet are at the front and expire there, in
    amortised O(1) per call — never a pass over the table."""

    def __init__(self, limit, seconds, max_keys=MAX_KEYS):
        self.limit = limit
        self.seconds = seconds
        self.max_keys = max_keys
        self.keys = OrderedDict()  # key -> [failure times], oldest first

    def __len__(self):
        return len(self.keys)

    def expire(self, now):
        """Drop keys whose newest failure has left the window, then the
        oldest beyond `max_keys`. The cap only drops live counts when more
        than `max_keys` other keys failed since; every counted failure costs
        a scrypt run (about 50 ms of a core), so that takes longer than the
        window itself and the cap in practice only bounds memory."""
        keys = self.keys
        while keys:
            newest = keys[next(iter(keys))][-1]
            if now - newest < self.seconds:
                break
            keys.popitem(last=False)
        while len(keys) > self.max_keys:
            keys.popitem(last=False)

    def wait(self, key, now):
        """Seconds until `key` may try again (0: it may now)."""
        times = self.keys.get(key)
        if times is None or len(times) < self.limit:
            return 0
        return max(0, self.seconds - (now - times[0]))

    def add(self, key, now):
        times = self.keys.get(key)
        if times is None:
            times = self.keys[key] = []
        else:
            self.keys.move_to_end(key)
        times.append(now)
        if len(times) > self.limit:
            del times[0]

    def discard(self, key, at):
        """Take back one failure counted at `at` (a sign-in that succeeded)."""
        times = self.keys.get(key)
        if times and at in times:
            times.remove(at)
            if not times:
                del self.keys[key]

    def clear(self, key):
        self.keys.pop(key, None)


class SignInThrottle:
    """The two §9 windows behind one lock. An attempt is counted as a
    failure when it starts (`reserve`), before scrypt runs, so guesses sent
    in parallel count too; `succeeded` takes it back."""

    def __init__(self, now=_seconds, max_keys=MAX_KEYS):
        self.now = now
        self.pairs = SlidingWindow(PAIR_LIMIT, PAIR_SECONDS, max_keys)
        self.addresses = SlidingWindow(ADDRESS_LIMIT, ADDRESS_SECONDS, max_keys)
        self._lock = threading.Lock()

    def reserve(self, email, address):
        """Count an attempt by `email` from `address`; 429 (RateLimited) with
        the seconds until an attempt is allowed when either window is full.
        Returns the ticket `succeeded` needs."""
        now = self.now()
        pair = (email, address)
        with self._lock:
            wait = max(self.pairs.wait(pair, now), self.addresses.wait(address, now))
            if not wait:
                self.pairs.add(pair, now)
                self.addresses.add(address, now)
            self.pairs.expire(now)
            self.addresses.expire(now)
        if wait:
            seconds = max(1, math.ceil(wait))
            raise RateLimited(f"Too many failed sign-in attempts; try again in {seconds} seconds.", seconds)
        return pair, now

    def succeeded(self, ticket):
        """The attempt was right: the pair's failures are forgotten and the
        attempt no longer counts against the address (its other failures
        still do, so signing in to one's own account does not reset them)."""
        (email, address), at = ticket
        with self._lock:
            self.pairs.clear((email, address))
            self.addresses.discard(address, at)
