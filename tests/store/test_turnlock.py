"""The writer's lock is taken in turn (billing/store/turnlock.py): a thread
releasing it hands it to the thread that waited longest, so a background loop
of short transactions never keeps the group-commit writer (and the requests
behind it) waiting for more than the one transaction under way."""

import threading

import pytest

from billing.store.db import Database
from billing.store.turnlock import TurnLock
from tests.helpers import wait_for


def queue_behind(lock, name, log):
    """A thread that takes `lock` once it is its turn, logs `name`, and lets go;
    started and waiting when this returns."""
    before = lock.waiting()

    def take():
        with lock:
            log.append(name)

    thread = threading.Thread(target=take)
    thread.start()
    wait_for(lambda: lock.waiting() == before + 1, message=f"{name} did not queue for the lock")
    return thread


def test_the_lock_goes_to_the_waiting_threads_in_the_order_they_asked_before_the_releaser_gets_it_back():
    lock, log = TurnLock(), []
    lock.acquire()
    first = queue_behind(lock, "first", log)
    second = queue_behind(lock, "second", log)
    lock.release()
    with lock:  # the releasing thread asks again at once: it comes after both
        log.append("releaser")
    first.join(10)
    second.join(10)
    assert log == ["first", "second", "releaser"]
    assert lock.waiting() == 0


def test_it_is_reentrant_and_only_its_holder_may_release_it():
    lock, log = TurnLock(), []
    held, go_on = threading.Event(), threading.Event()

    def holder():
        with lock:
            with lock:  # its own lock again: no wait for itself
                log.append("twice")
            held.set()  # still held once
            go_on.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(10), "taking the lock a second time hung"
    with pytest.raises(RuntimeError):
        lock.release()  # by a thread that does not hold it
    other = queue_behind(lock, "other", log)  # the holder still has it: the other waits
    assert log == ["twice"]
    go_on.set()
    thread.join(10)
    other.join(10)
    assert log == ["twice", "other"]


def test_a_thread_that_commits_and_begins_again_at_once_lets_the_waiting_transaction_in_first(tmp_path):
    """What a background loop of short transactions (settling, shipping) does
    to the group-commit writer waiting for its turn."""
    db = Database(str(tmp_path / "t.db"))
    try:
        with db.transaction() as conn:
            conn.execute("CREATE TABLE steps (n INTEGER PRIMARY KEY, who TEXT NOT NULL)")

        def request():
            with db.transaction() as conn:
                conn.execute("INSERT INTO steps (who) VALUES ('request')")

        waiting = None
        for step in range(3):  # a loop: commit, begin again at once
            with db.transaction() as conn:
                conn.execute("INSERT INTO steps (who) VALUES ('loop')")
                if waiting is None:
                    waiting = threading.Thread(target=request)
                    waiting.start()
                    wait_for(lambda: db._write_lock.waiting() == 1, message="the request never asked for the writer")
        waiting.join(10)
        order = [who for (who,) in db.query("SELECT who FROM steps ORDER BY n")]
        assert order == ["loop", "request", "loop", "loop"]
    finally:
        db.close()
