"""Group commit: how the writer thread runs a group of queued jobs in one
transaction (billing/store/db.py queues them and runs this).

Each job is a `Job`: a plain one (`fn(conn)`) runs inside its own SAVEPOINT,
so one failing job rolls back alone (a job alone in its transaction needs
none). Consecutive jobs of one `combine` (Database.submit_merged: single
events, event batches) are handed to one call, inside one SAVEPOINT; if
that call fails, each item runs alone in its own, so a bad item still fails
alone. A group of one `combine`'s jobs only needs no SAVEPOINT: the call
runs in the transaction itself, and if it fails every item runs alone in
the next (each SAVEPOINT is a call into SQLite, which gives up the
interpreter lock). A merged call that answers the wrong number of results is a bug, not a
refusal: every job of the group gets the error. Every caller is answered
after the COMMIT that holds its rows (or with its error).
"""

import threading


class Job:
    """A queued write; `done` is a lock held until the writer has answered
    (a bare lock: cheaper for the writer to release than an Event to set)."""
    __slots__ = ("fn", "combine", "item", "done", "result", "error")

    def __init__(self, fn, combine=None, item=None):
        self.fn = fn
        self.combine, self.item = combine, item
        self.done = threading.Lock()
        self.done.acquire()
        self.result = None
        self.error = None


def _runs(group):
    """The group's jobs in order, consecutive jobs of one `combine` together."""
    run = [group[0]]
    for job in group[1:]:
        if job.combine is not None and job.combine is run[-1].combine:
            run.append(job)
        else:
            yield run
            run = [job]
    yield run


def all_one_combine(group):
    """Whether every job of the group is of one `combine`."""
    combine = group[0].combine
    return combine is not None and all(job.combine is combine for job in group)


def _run_alone(conn, job):
    conn.execute("SAVEPOINT job")
    try:
        job.result = job.fn(conn)
    except Exception as exc:  # this job alone is undone
        conn.execute("ROLLBACK TO job")
        job.error = exc
    conn.execute("RELEASE job")


def _run_merged(conn, run):
    """One `combine` call for the run's items; False (nothing kept) if it failed."""
    conn.execute("SAVEPOINT merged")
    try:
        results = run[0].combine(conn, [job.item for job in run])
    except Exception:  # an item the call refuses (a customer archived meanwhile): each alone, below
        conn.execute("ROLLBACK TO merged")
        conn.execute("RELEASE merged")
        return False
    conn.execute("RELEASE merged")
    _check_count(results, run)
    for job, result in zip(run, results):
        job.result = result
    return True


class _WrongCount(ValueError):
    """A merged call answered a result count other than its items': a bug, not
    a refusal, so every job of the group gets it."""


def _check_count(results, run):
    if len(results) != len(run):
        raise _WrongCount(f"a merged call answered {len(results)} results for {len(run)} items")


def run_group(transaction, group):
    """Run the jobs of `group` in `transaction()` (the Database's), set each
    one's result or error, then answer every caller."""
    if len(group) > 1 and all_one_combine(group):
        if not _run_combined(transaction, group):
            _run_jobs(transaction, group, merge=False)  # it failed: each alone (or the commit failed: again)
    else:
        _run_jobs(transaction, group)
    for job in group:
        job.done.release()


def _run_combined(transaction, group):
    """A group of one `combine`'s jobs in one call, without the SAVEPOINT
    and RELEASE around it (each a call into SQLite, which gives up the
    interpreter lock); False when that failed (a refused item, or the
    commit), and nothing of it is kept."""
    try:
        with transaction() as conn:
            results = group[0].combine(conn, [job.item for job in group])
            _check_count(results, group)
    except _WrongCount as exc:  # rolled back; answered as the SAVEPOINT path answers it
        for job in group:
            job.error = exc
        return True
    except Exception:
        return False
    for job, result in zip(group, results):
        job.result = result
    return True


def _run_jobs(transaction, group, merge=True):
    """The group's jobs in one transaction, each run of one `combine` in one
    call (each alone if that fails, or when not `merge`), every other job alone."""
    try:
        with transaction() as conn:
            if len(group) == 1:  # alone in its transaction: no SAVEPOINT needed to fail alone
                group[0].result = group[0].fn(conn)
            else:
                for run in _runs(group):
                    if len(run) == 1 or not merge or not _run_merged(conn, run):
                        for job in run:
                            _run_alone(conn, job)
    except Exception as exc:  # the COMMIT itself failed (or a lone job): nobody's rows are stored
        for job in group:
            if job.error is None:
                job.error, job.result = exc, None
