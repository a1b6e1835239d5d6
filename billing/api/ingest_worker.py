"""An ingest worker process: validates batch bodies into event rows.

    python3 -m billing.api.ingest_worker    (started by billing/api/ingest_pool.py)

It runs `event_rows.batch_rows` on the body's bytes — the very code a
request thread runs for a small batch — against a snapshot of the catalog,
and answers the rows, or the problems, to the server. It never opens the
database and has no clock: the server sends the catalog whenever it changed
and, with each body, the instant the events are received.

The protocol, on stdin and stdout: frames of a 4-byte big-endian length and
a `marshal`ed tuple (only the server that started this process writes to
it). In: ("catalog", meters, customers) — the fields of each MeterInfo and
CustomerInfo, in order; ("parse", body, now_us, age_days, scope);
("ping",). Out, for each parse: ("rows", rows) | ("invalid", details,
message) | ("failed", reason); ("pong",). The process ends at the end of
stdin (the server closed it, or died).

"failed" hands the body back to the request thread, whose answer is the
reference: a body that is not JSON (rare: its 400 is worded there), and
anything nested deeper than this process allows. JSON decoding and
encoding count nesting against the interpreter's recursion limit from the
caller's stack depth, which differs between this process and a request
thread; here the limit is lower (RECURSION_LIMIT), so whatever this
process accepts a request thread accepts too, and what it refuses for
depth the request thread decides. (That holds on Python 3.11. From 3.12
C code keeps its own limit, which this one does not lower: a body nested
within a few levels of it — hundreds deep — may then be stored through a
worker and refused (400) in a request thread, or the other way round.)
"""

import marshal
import os
import signal
import sys
import traceback

from .. import jsonutil
from ..errors import BadRequest, ValidationError
from .catalog import CustomerInfo, MeterInfo, by_external_id
from .event_rows import Ingest, IngestView, batch_rows

HEADER = 4
MAX_FRAME = 256 * 1024 * 1024  # a longer length is a broken stream, not a frame
RECURSION_LIMIT = 700          # the interpreter's default is 1,000 (see the module)


def read_frame(stream):
    """The next frame's value, or None at the end of the stream."""
    header = stream.read(HEADER)
    if len(header) < HEADER:
        return None
    size = int.from_bytes(header, "big")
    if size > MAX_FRAME:
        raise ValueError(f"a frame of {size} bytes: the stream is broken")
    data = stream.read(size)
    if len(data) < size:
        return None
    return marshal.loads(data)


def write_frame(stream, data):
    """Writes one frame of `data` (a marshalled value)."""
    stream.write(len(data).to_bytes(HEADER, "big"))
    stream.write(data)
    stream.flush()


class Snapshot:
    """The catalog as the server sent it: what `Ingest` asks of a catalog."""

    def __init__(self, meters, customers):
        self._meters = {fields[1]: MeterInfo(*fields) for fields in meters}
        self._customers = {fields[0]: CustomerInfo(*fields) for fields in customers}
        self._external = by_external_id(self._customers)
        self._view = IngestView.of(self._meters, self._customers)

    def ingest_view(self):
        return self._view

    def meter(self, key):
        return self._meters.get(key)

    def customer(self, customer_id):
        return self._customers.get(customer_id)

    def customer_by_external(self, external_id):
        return self._external.get(external_id)


def parse(catalog, body, now_us, age_days, scope):
    """The answer to one body."""
    try:
        rows = batch_rows(jsonutil.decode_object(body), Ingest(catalog, now_us, age_days, scope))
    except ValidationError as exc:
        return ("invalid", exc.details, exc.message)
    except BadRequest as exc:  # not JSON, or nested past this process's limit: the request thread answers
        return ("failed", exc.message)
    except Exception:  # too deep to encode, or a bug: the request thread validates it and answers
        return ("failed", traceback.format_exc())
    return ("rows", [tuple(row) for row in rows])


def _encoded(answer):
    try:
        return marshal.dumps(answer)
    except ValueError:  # a value marshal cannot carry: the server validates this body itself
        return marshal.dumps(("failed", traceback.format_exc()))


def serve(source, sink):
    catalog = Snapshot((), ())
    while True:
        message = read_frame(source)
        if message is None:
            return
        kind = message[0]
        if kind == "catalog":
            catalog = Snapshot(message[1], message[2])
        elif kind == "parse":
            write_frame(sink, _encoded(parse(catalog, *message[1:])))
        elif kind == "ping":
            write_frame(sink, marshal.dumps(("pong",)))


def main():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle; it closes this process
    sys.setrecursionlimit(RECURSION_LIMIT)
    source, sink = os.fdopen(0, "rb"), os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # nothing but frames on the pipe: any other output goes to stderr
    sys.stdout = sys.stderr
    serve(source, sink)


if __name__ == "__main__":
    main()
