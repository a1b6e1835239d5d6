"""The writer's lock, taken in turn.

`threading.RLock` is not fair: a thread that releases it and asks again at
once (a background loop of short transactions: settling, shipping, regrouping)
takes it back before a waiting thread has even woken up, so the waiting one —
the group-commit writer with requests behind it — can wait for the whole loop
instead of one transaction of it. `TurnLock` hands the lock over on release
to the thread that has waited longest, so every waiting thread gets its turn
after at most the transactions queued before it.

Written in Python, it has steps between which an exception raised by a
signal handler would leave a waiter unwoken; the server's handlers only
start a thread (server.py), so none is raised there.
"""

import collections
import threading


class TurnLock:
    """A re-entrant lock granted in the order asked (first come, first served)."""

    def __init__(self):
        self._guard = threading.Lock()
        self._owner = None   # thread ident holding the lock, or None
        self._depth = 0
        self._waiting = collections.deque()  # (thread ident, its turn: a held Lock)

    def acquire(self):
        me = threading.get_ident()
        with self._guard:
            if self._owner == me:
                self._depth += 1
                return True
            if self._owner is None:
                self._owner, self._depth = me, 1
                return True
            turn = threading.Lock()
            turn.acquire()
            self._waiting.append((me, turn))
        try:
            turn.acquire()  # released by the owner that hands the lock over to this thread
        except BaseException:  # interrupted while waiting: leave the queue, or pass on a turn just given
            with self._guard:
                handed = self._owner == me
                if not handed:
                    self._waiting.remove((me, turn))
            if handed:
                self.release()
            raise
        return True

    def release(self):
        with self._guard:
            if self._owner != threading.get_ident():
                raise RuntimeError("cannot release a lock this thread does not hold")
            self._depth -= 1
            if self._depth:
                return
            if self._waiting:
                self._owner, turn = self._waiting.popleft()
                self._depth = 1
                turn.release()
            else:
                self._owner = None

    def waiting(self):
        """How many threads wait for the lock."""
        with self._guard:
            return len(self._waiting)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
