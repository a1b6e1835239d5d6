"""Ingest worker processes: large batches validated beside the server.

Validating a batch (decoding its JSON, checking every event, hashing its
ids) is Python work, and one process runs one thread of Python at a time.
While request threads validated batches, the writer thread — which spends
most of its time inside SQLite, without the interpreter lock — waited for
that lock after each statement, so the server used one core of two and
batch ingest stopped near 45,000 events/s (bench/ingest.py). With
BILLING_INGEST_WORKERS set (0 by default: SPEC §1 asks for one process), a
batch body of at least `MIN_BYTES` is therefore sent to a worker process
(`billing/api/ingest_worker.py`), which answers its rows; the request
thread waits on a pipe, without the lock, and the writer stores the rows
as before. Small batches and single events are validated in the request
thread: a round trip through a pipe would cost them more than it saves.

The workers start at the first large batch (that batch and those arriving
before they answer are validated in the request thread). A worker is used
by one request at a time; a request waits for a free one. Each worker is
sent the catalog (meters and customers) again whenever it changed
(`Catalog.snapshot`), before the next body. A worker that dies, or does
not answer within ANSWER_SECONDS (it is killed), is replaced in the
background — no more often than every RETRY_SECONDS — and the batch it held
is validated in the request thread, so a request never fails because of a
worker. `close()` ends them; a worker also ends when the server dies (the
end of its stdin).
"""

import dataclasses
import marshal
import os
import queue
import subprocess
import sys
import threading
import time

from ..errors import ValidationError
from .ingest_worker import read_frame, write_frame

MIN_BYTES = 32 * 1024  # a batch body this large goes to a worker (about 150 events)
START_SECONDS = 30     # a worker that does not answer its first ping by then is not used
ANSWER_SECONDS = 30    # nor one that takes longer over an exchange (10,000 events take about 0.1 s)
RETRY_SECONDS = 5      # a missing worker is started again at most this often
WATCH_SECONDS = 0.1    # how often deadlines are looked at
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Worker:
    def __init__(self):
        # a session of its own: the terminal's Ctrl-C is the server's; the worker ends with its stdin
        self.process = subprocess.Popen([sys.executable, "-m", "billing.api.ingest_worker"], cwd=ROOT,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        self.generation = None  # of the catalog it holds

    def ask(self, frames):
        """Sends the frames (marshalled values); returns the answer to the
        last (EOFError if the worker ended: killed by the watch, below)."""
        for data in frames:
            write_frame(self.process.stdin, data)
        answer = read_frame(self.process.stdout)
        if answer is None:
            raise EOFError("the ingest worker ended")
        return answer

    def stop(self):
        """Kills it (it holds nothing) and closes its pipes once a user of them let go."""
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:  # a write that could not be flushed to the dead process
                pass


class _Watch:
    """One thread that kills a worker whose exchange outlasts its deadline:
    a write blocked on the worker's full pipe then fails (BrokenPipeError),
    a read ends (EOFError)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._due = {}  # worker → time.monotonic() deadline of its exchange
        self._stop = threading.Event()
        self._thread = None

    def ask(self, worker, frames, seconds):
        with self._lock:
            self._due[worker] = time.monotonic() + seconds
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ingest-watch", daemon=True)
                self._thread.start()
        try:
            return worker.ask(frames)
        finally:
            with self._lock:
                self._due.pop(worker, None)

    def _run(self):
        while not self._stop.wait(WATCH_SECONDS):
            now = time.monotonic()
            with self._lock:
                overdue = [worker for worker, due in self._due.items() if due <= now]
            for worker in overdue:
                worker.process.kill()

    def stop(self):
        self._stop.set()


class IngestPool:
    def __init__(self, workers, min_bytes=MIN_BYTES):
        self.size = workers
        self.min_bytes = min_bytes
        self._idle = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers = []       # every live worker, idle or in use
        self._spawning = []      # threads starting one worker each
        self._started = False    # the first large batch starts them
        self._last_spawn = None  # time.monotonic() of the last start
        self._closed = False
        self._catalog = None     # (generation, the catalog frame)
        self.served = 0          # bodies a worker answered
        self._watch = _Watch()

    def takes(self, size):
        """Whether a body of `size` bytes goes to a worker."""
        return self.size > 0 and size >= self.min_bytes

    def start(self):
        """Starts the workers and returns once they answer (or could not start)."""
        self._begin()
        with self._lock:
            spawning = list(self._spawning)
        for thread in spawning:
            thread.join()

    def _begin(self):
        with self._lock:
            if self._started:
                return
            self._started = True
        for _ in range(self.size):
            self._spawn()

    def _spawn(self):
        """Starts one worker in the background (nothing once closed)."""
        with self._lock:
            if self._closed:
                return
            thread = threading.Thread(target=self._add, name="ingest-worker-start", daemon=True)
            self._spawning.append(thread)
            self._last_spawn = time.monotonic()
        thread.start()

    def _refill(self):
        """Starts a worker in place of one lost, if the last start is RETRY_SECONDS ago."""
        with self._lock:
            missing = self.size - len(self._workers) - len(self._spawning)
            due = self._last_spawn is None or time.monotonic() - self._last_spawn >= RETRY_SECONDS
        if missing > 0 and due:
            self._spawn()

    def _add(self):
        """(in a _spawn thread) A new worker, idle once it has answered a ping."""
        try:
            worker = _Worker()
        except OSError:
            worker = None
        try:
            if worker is not None:
                self._watch.ask(worker, [marshal.dumps(("ping",))], START_SECONDS)
        except (OSError, EOFError, ValueError):
            worker.stop()
            worker = None
        with self._lock:
            self._spawning.remove(threading.current_thread())
            if worker is not None and self._closed:
                worker.stop()
                return
            if worker is not None:
                self._workers.append(worker)
        if worker is not None:
            self._idle.put(worker)

    def rows(self, body, ingest):
        """The EventRows of the batch body (bytes) as a worker validated them
        with what the validator `ingest` (event_rows.Ingest) holds — its
        catalog, instant, age limit and scope — raising the ValidationError
        `event_rows.batch_rows` raises; None when no worker answered it (the
        caller validates it itself)."""
        snapshot = ingest.catalog.snapshot()
        worker = self._checkout()
        if worker is None:
            return None
        try:
            answer = self._watch.ask(worker, [*self._catalog_frames(worker, snapshot),
                                              marshal.dumps(("parse", body, ingest.now_us, ingest.age_days, ingest.scope))],
                                     ANSWER_SECONDS)
        except (OSError, EOFError, ValueError):  # it died or hung: another in its place; the body is validated here
            self._replace(worker)
            return None
        except BaseException:  # mid-exchange: its stream is in no known state
            self._replace(worker)
            raise
        self._idle.put(worker)
        if answer[0] == "failed":
            return None  # validated in the request thread, which answers it
        with self._lock:
            self.served += 1
        if answer[0] == "invalid":
            raise ValidationError(answer[1], answer[2])
        return answer[1]

    def _checkout(self):
        """An idle worker (waiting for one while all are busy), or None when
        none runs: the first call starts them and answers None."""
        if self.size <= 0 or self._closed:
            return None
        if not self._started:
            self._begin()
            return None
        self._refill()
        while True:
            with self._lock:
                if self._closed or not self._workers:
                    return None  # none started yet or none could, or closing
                starting = bool(self._spawning)
            try:
                return self._idle.get(timeout=1.0)
            except queue.Empty:
                if starting:
                    return None  # more are starting: not worth the wait

    def _catalog_frames(self, worker, snapshot):
        """The catalog frame when the worker holds another generation than the
        snapshot's (encoded once per generation), else nothing."""
        generation, meters, customers = snapshot
        if worker.generation == generation:
            return ()
        cached = self._catalog
        if cached is None or cached[0] != generation:
            frame = marshal.dumps(("catalog", [dataclasses.astuple(m) for m in meters.values()],
                                   [dataclasses.astuple(c) for c in customers.values()]))
            cached = self._catalog = (generation, frame)
        worker.generation = generation
        return (cached[1],)

    def _replace(self, worker):
        """Ends the worker; another starts in the background (the request goes on)."""
        worker.stop()
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
        self._refill()

    def pids(self):
        """The live workers' process ids (for the benchmarks' memory and CPU figures)."""
        with self._lock:
            return [worker.process.pid for worker in self._workers]

    def close(self):
        """Ends every worker (a request using one falls back to validating itself)."""
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
            spawning = list(self._spawning)
        for thread in spawning:  # each ends its worker once it sees the pool closed
            thread.join()
        for worker in workers:
            worker.stop()
        self._watch.stop()
