#!/usr/bin/env python3
"""Object storage benchmark (SPEC §8): upload and download throughput of the
objects API against plain Python file I/O in the same run, and the server's
memory.

    python3 bench/storage.py                        # 4 clients, 3 rounds: 1-2 minutes
    python3 bench/storage.py --rounds 5 --large-count 4 --keep

Standard library only; run by hand (pytest does not collect it). All traffic
goes to 127.0.0.1.

Setup. Starts `server.py --quiet --no-scheduler` as a subprocess on a free
port, with a fresh database and data directory in a temp dir
(BILLING_DATA_DIR=<temp>/data, so objects land in <temp>/data/objects/;
BILLING_MAX_OBJECT_BYTES = 256 MiB). Creates one customer per client with
`storage_quota_bytes` = --quota-gib (default 1 TiB: the quota reservation runs
but never refuses; 0 = no quota) and a customer-scoped API key for each
(POST /v1/api-keys {"name", "customer_id"}); each client acts as its own
tenant. The temp dir is removed at the end (--keep keeps it).

Clients. --clients threads (default 4), each with its own keep-alive
http.client connection (a new one per phase: the server closes connections
idle for 15 s). Request bodies are slices of one random 64 MiB buffer per
client, sent as a memoryview with one sendall (nothing is built or copied per
request); downloads are read with HTTPResponse.readinto into a reused 1 MiB
buffer. Each phase shows the CPU seconds of the server process and of this
process: the client threads use a small fraction of a core (sendall,
recv_into, write, fsync and read release the GIL), so threads, not processes,
drive the load.

Warm-up. Every client PUTs and GETs 4 x 1 MiB and 1 x 64 MiB objects (the
SHA-256 of each download is checked against its ETag), and the reference
writes and reads a few files, before any clock runs.

Timed, for 1 MiB objects (--small-count per client) and then 64 MiB objects
(--large-count per client), --rounds rounds each; within a round the API phase
and its reference run back to back on the same bytes, in alternating order
(the disk of a VM is noisy; both sides see the same moment). The figures are
the medians over the rounds, and ours ÷ ref is median ÷ median.

  ours upload    PUT /v1/objects/{key}, Content-Length, new keys every round.
                 "body" = request start until the last byte was handed to the
                 kernel; "after" = from then until the response (the server's
                 fsync, rename, directory fsync and SQLite commit).
  ref write      the same bytes, same number of files, same threads, into
                 <temp>/ref/ on the same file system: open(path, "xb");
                 write() in 256 KiB slices (the server's chunk size,
                 billing.store.files.CHUNK); flush(); os.fsync(); close().
                 No hashing, no rename. "body" = the write loop, "after" = the
                 fsync.
  ours download  GET /v1/objects/{key} of the round's objects.
  ref read       open(path, "rb", buffering=0), readinto a reused 256 KiB
                 buffer to EOF, for the round's reference files.
  Both downloads read warm page cache (the files were just written; nothing
  drops caches).

Extra rows (--no-extra skips), to split the ratios:
  file layer     billing.store.files.FileStore in this process, no HTTP and no
                 SQLite: the write loop + SHA-256 of each chunk, fsync, rename
                 into a 2-hex folder, fsync of that folder.
  loopback       a separate minimal Python process serving the reference files
                 over a loopback TCP connection with socket.sendfile (what the
                 server does) and a 60 s socket timeout (as the server's), no
                 HTTP: the ceiling of a Python sendfile download on this box.
  chunked        64 MiB uploads with Transfer-Encoding: chunked (256 KiB chunks).

Memory. A sampler thread reads VmRSS from /proc/<server pid>/status every
50 ms; idle = the median over 1 s after setup (before the warm-up); peak = the
largest sample inside the 64 MiB upload phases; VmHWM (the kernel's
high-water mark over the whole run, warm-up included) at the end.
"""

import argparse
import hashlib
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ingest  # noqa: E402  (ServerProcess, api, percentile, ROOT)

sys.path.insert(0, ingest.ROOT)
from billing.store.files import CHUNK, FileStore  # noqa: E402  (the server's chunk size and file layer)

MiB = 1024 * 1024
SMALL = 1 * MiB
LARGE = 64 * MiB
READ_BUFFER = 1 * MiB


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# -- memory sampler ----------------------------------------------------------

class RssSampler(threading.Thread):
    def __init__(self, pid, interval=0.05):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples = []  # (perf_counter, VmRSS kB)
        self.stop_flag = threading.Event()

    def read(self):
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    out[name] = int(value.split()[0])
        return out

    def run(self):
        while not self.stop_flag.is_set():
            try:
                self.samples.append((time.perf_counter(), self.read()["VmRSS"]))
            except (OSError, KeyError):
                return
            self.stop_flag.wait(self.interval)

    def between(self, start, end):
        return [kb for t, kb in self.samples if start <= t <= end]


# -- HTTP client -------------------------------------------------------------

def connect(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.connect()
    return conn


def put_object(conn, token, key, body, chunked=False):
    """PUT one object (body: a memoryview). Returns (JSON answer, perf_counter when the last byte was sent)."""
    conn.putrequest("PUT", f"/v1/objects/{key}", skip_accept_encoding=True)
    conn.putheader("Authorization", f"Bearer {token}")
    conn.putheader("Content-Type", "application/octet-stream")
    if chunked:
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        sock = conn.sock
        for at in range(0, len(body), CHUNK):
            piece = body[at:at + CHUNK]
            sock.sendall(b"%x\r\n" % len(piece))
            sock.sendall(piece)
            sock.sendall(b"\r\n")
        sock.sendall(b"0\r\n\r\n")
    else:
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        conn.send(body)  # one sock.sendall of the memoryview, no copy
    sent = time.perf_counter()
    resp = conn.getresponse()
    payload = resp.read()
    if resp.status not in (200, 201):
        raise RuntimeError(f"PUT {key}: {resp.status} {payload[:300]!r}")
    return json.loads(payload), sent


def get_object(conn, token, key, buffer, digest=None):
    """GET one object into the reused buffer; returns its length."""
    conn.putrequest("GET", f"/v1/objects/{key}", skip_accept_encoding=True)
    conn.putheader("Authorization", f"Bearer {token}")
    conn.endheaders()
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"GET {key}: {resp.status} {resp.read()[:300]!r}")
    expected = resp.length
    view = memoryview(buffer)
    total = 0
    while True:
        n = resp.readinto(view)
        if not n:
            break
        if digest is not None:
            digest.update(view[:n])
        total += n
    if total != expected:
        raise RuntimeError(f"GET {key}: {total} bytes of {expected}")
    return total


# -- plain-Python reference --------------------------------------------------

def ref_write(path, body):
    """Returns perf_counter when the write loop ended (before the fsync)."""
    with open(path, "xb") as f:
        for at in range(0, len(body), CHUNK):
            f.write(body[at:at + CHUNK])
        f.flush()
        written = time.perf_counter()
        os.fsync(f.fileno())
    return written


def ref_read(path, buffer):
    total = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buffer)
            if not n:
                break
            total += n
    return total


def filelayer_write(store, body):
    upload = store.new_upload()
    for at in range(0, len(body), CHUNK):
        upload.write(body[at:at + CHUNK])
    written = time.perf_counter()
    upload.place()
    return written


# A minimal sendfile server in its own process: "<path>\n" -> "<size>\n" + the
# bytes, per keep-alive connection, with the server's 60 s socket timeout.
LOOPBACK_SERVER = r"""
import os, socket, sys, threading
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print(listener.getsockname()[1], flush=True)
def serve(conn):
    conn.settimeout(60)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rfile = conn.makefile("rb")
    while True:
        line = rfile.readline()
        if not line:
            return
        with open(line.decode().strip(), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            conn.sendall(b"%d\n" % size)
            conn.sendfile(f, 0, size)
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


class LoopbackClient:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=300)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb")

    def get(self, path, buffer):
        self.sock.sendall(path.encode() + b"\n")
        size = int(self.rfile.readline())
        view = memoryview(buffer)
        got = 0
        while got < size:
            n = self.rfile.readinto(view[:min(len(view), size - got)])
            if not n:
                raise RuntimeError("loopback: short read")
            got += n
        return got

    def close(self):
        self.rfile.close()
        self.sock.close()


# -- running a phase ---------------------------------------------------------

class Phase:
    """work(slot, state, split) on `clients` threads released together; wall
    time is from the release to the last thread's end. `split` collects
    (first part, second part) seconds per object."""

    def __init__(self, name, server, sampler):
        self.name = name
        self.server = server
        self.sampler = sampler

    def run(self, clients, work, prepare=None):
        gate = threading.Barrier(clients + 1)
        errors = []
        moved = [0] * clients
        splits = [[] for _ in range(clients)]

        def thread(slot):
            state = None
            try:
                state = prepare(slot) if prepare else None
                gate.wait()
                moved[slot] = work(slot, state, splits[slot])
            except Exception as exc:  # reported after the phase
                errors.append(exc)
                gate.abort()
            finally:
                if state is not None and hasattr(state, "close"):
                    state.close()

        threads = [threading.Thread(target=thread, args=(slot,)) for slot in range(clients)]
        for t in threads:
            t.start()
        server_cpu = self.server.cpu_seconds()
        client_cpu = time.process_time()
        try:
            gate.wait()
        except threading.BrokenBarrierError:
            pass
        began = time.perf_counter()
        for t in threads:
            t.join()
        ended = time.perf_counter()
        if errors:
            raise RuntimeError(f"{self.name}: {errors[0]!r}") from errors[0]
        seconds = ended - began
        rss = self.sampler.between(began, ended)
        parts = [x for per in splits for x in per]
        total = sum(moved)
        result = {
            "phase": self.name, "objects": len(parts), "mib": total / MiB, "seconds": seconds,
            "mib_s": total / MiB / seconds,
            "first_ms_p50": ingest.percentile([a for a, _ in parts], 50) * 1000 if parts else None,
            "second_ms_p50": ingest.percentile([b for _, b in parts], 50) * 1000 if parts else None,
            "whole_ms_p50": ingest.percentile([a + b for a, b in parts], 50) * 1000 if parts else None,
            "server_cpu_s": self.server.cpu_seconds() - server_cpu,
            "client_cpu_s": time.process_time() - client_cpu,
            "server_rss_peak_kb": max(rss) if rss else None,
        }
        log(f"  {self.name:<40} {result['mib']:6.0f} MiB in {seconds:6.2f} s = {result['mib_s']:7.1f} MiB/s"
            f"  (server CPU {result['server_cpu_s']:5.2f} s, this process {result['client_cpu_s']:5.2f} s)")
        return result


def median_of(results):
    return {
        "mib_s": statistics.median(r["mib_s"] for r in results),
        "all": [r["mib_s"] for r in results],
        "mib": sum(r["mib"] for r in results),
        "seconds": sum(r["seconds"] for r in results),
        "first_ms_p50": statistics.median(r["first_ms_p50"] for r in results),
        "second_ms_p50": statistics.median(r["second_ms_p50"] for r in results),
        "whole_ms_p50": statistics.median(r["whole_ms_p50"] for r in results),
        "server_cpu_per_gib": sum(r["server_cpu_s"] for r in results) / (sum(r["mib"] for r in results) / 1024),
        "client_cpu_per_gib": sum(r["client_cpu_s"] for r in results) / (sum(r["mib"] for r in results) / 1024),
        "cpu_cores": (sum(r["server_cpu_s"] + r["client_cpu_s"] for r in results)
                      / sum(r["seconds"] for r in results)),
        "server_rss_peak_kb": max((r["server_rss_peak_kb"] or 0) for r in results),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--small-count", type=int, default=64, help="1 MiB objects per client per round")
    parser.add_argument("--large-count", type=int, default=3, help="64 MiB objects per client per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quota-gib", type=int, default=1024, help="each tenant's storage quota (0 = none)")
    parser.add_argument("--no-extra", action="store_true", help="skip the file-layer, loopback and chunked rows")
    parser.add_argument("--profile", metavar="OUT.prof", help="run the server under bench/profserver.py")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory")
    args = parser.parse_args()
    clients = args.clients
    started = time.perf_counter()
    load_before = os.getloadavg()[0]

    work = tempfile.mkdtemp(prefix="meterline-storage-")
    data_dir = os.path.join(work, "data")
    ref_dir = os.path.join(work, "ref")
    os.makedirs(data_dir)
    os.makedirs(ref_dir)
    os.environ["BILLING_DATA_DIR"] = data_dir  # read by the server subprocess only
    os.environ["BILLING_MAX_OBJECT_BYTES"] = str(256 * MiB)
    os.environ["BILLING_RATE_LIMIT"] = "1000000"  # the clients use customer keys: throughput, not the limit

    log(f"temp dir {work}; {LARGE // MiB} MiB of random bytes per client")
    # one random buffer per client: a 64 MiB object is the whole buffer, the
    # 1 MiB objects are consecutive slices of it (wrapping)
    buffers = [memoryview(os.urandom(LARGE)) for _ in range(clients)]

    def small_body(slot, i):
        at = (i * SMALL) % LARGE
        return buffers[slot][at:at + SMALL]

    def large_body(slot, i):
        return buffers[slot]

    server = ingest.ServerProcess(os.path.join(data_dir, "storage.db"), os.path.join(work, "server.log"),
                                  profile_out=args.profile)
    sampler = RssSampler(server.proc.pid)
    loopback = None
    try:
        # -- setup: a customer and a customer-scoped key per client
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        tokens = []
        for slot in range(clients):
            status, customer = ingest.api(conn, "POST", "/v1/customers", {
                "name": f"Storage bench {slot}", "email": f"storage{slot}@example.com",
                **({"storage_quota_bytes": args.quota_gib * 1024 ** 3} if args.quota_gib else {})})
            assert status == 201, customer
            assert customer["storage_quota_bytes"] == (args.quota_gib * 1024 ** 3 if args.quota_gib else None)
            status, key = ingest.api(conn, "POST", "/v1/api-keys",
                                     {"name": f"storage bench {slot}", "customer_id": customer["id"]})
            assert status == 201, key
            tokens.append(key["key"])
        conn.close()
        sampler.start()
        time.sleep(1.0)
        now = time.perf_counter()
        idle_kb = statistics.median(sampler.between(now - 1.0, now))
        log(f"server pid {server.proc.pid}, port {server.port}; idle VmRSS {idle_kb / 1024:.1f} MB")
        fresh = lambda slot: connect(server.port)  # noqa: E731  (a new keep-alive connection per phase)

        # -- warm-up
        log("warm-up")

        def warm(slot, conn, split):
            buf = bytearray(READ_BUFFER)
            moved = 0
            for i, body in enumerate([small_body(slot, i) for i in range(4)] + [buffers[slot]]):
                meta, _ = put_object(conn, tokens[slot], f"warm/{i}", body)
                digest = hashlib.sha256()
                moved += get_object(conn, tokens[slot], f"warm/{i}", buf, digest)
                if digest.hexdigest() != meta["etag"] or meta["size"] != len(body) \
                        or meta["etag"] != hashlib.sha256(body).hexdigest():
                    raise RuntimeError(f"warm/{i}: the download differs from the upload")
            return moved

        Phase("warm-up (PUT + GET, SHA-256 checked)", server, sampler).run(clients, warm, prepare=fresh)
        os.makedirs(os.path.join(ref_dir, "warm"))
        for slot in range(clients):
            for i in range(4):
                path = os.path.join(ref_dir, "warm", f"{slot}-{i}")
                ref_write(path, small_body(slot, i))
                ref_read(path, bytearray(CHUNK))

        if not args.no_extra:
            loopback = subprocess.Popen([sys.executable, "-c", LOOPBACK_SERVER], stdout=subprocess.PIPE)
            loopback_port = int(loopback.stdout.readline())

        # -- timed rounds
        def run_size(label, size, count, body_of):
            phases = {"up": [], "write": [], "down": [], "read": [], "loopback": []}
            for r in range(args.rounds):
                folder = os.path.join(ref_dir, f"{label}-r{r}")
                os.makedirs(folder)
                keys = lambda slot, i: f"{label}/r{r}/{i}"  # noqa: E731
                paths = lambda slot, i: os.path.join(folder, f"{slot}-{i}")  # noqa: E731

                def upload(slot, conn, split):
                    for i in range(count):
                        began = time.perf_counter()
                        meta, sent = put_object(conn, tokens[slot], keys(slot, i), body_of(slot, i))
                        split.append((sent - began, time.perf_counter() - sent))
                        assert meta["size"] == size, meta
                    return count * size

                def write(slot, _, split):
                    for i in range(count):
                        began = time.perf_counter()
                        written = ref_write(paths(slot, i), body_of(slot, i))
                        split.append((written - began, time.perf_counter() - written))
                    return count * size

                def download(slot, conn, split):
                    buf = bytearray(READ_BUFFER)
                    for i in range(count):
                        began = time.perf_counter()
                        assert get_object(conn, tokens[slot], keys(slot, i), buf) == size
                        split.append((time.perf_counter() - began, 0.0))
                    return count * size

                def read(slot, _, split):
                    buf = bytearray(CHUNK)
                    for i in range(count):
                        began = time.perf_counter()
                        assert ref_read(paths(slot, i), buf) == size
                        split.append((time.perf_counter() - began, 0.0))
                    return count * size

                def read_loopback(slot, client, split):
                    buf = bytearray(READ_BUFFER)
                    for i in range(count):
                        began = time.perf_counter()
                        assert client.get(paths(slot, i), buf) == size
                        split.append((time.perf_counter() - began, 0.0))
                    return count * size

                log(f"{label}, round {r + 1} of {args.rounds}")
                writes = [("up", Phase(f"ours: upload {label}", server, sampler), upload, fresh),
                          ("write", Phase(f"ref: write {label} (fsync per file)", server, sampler), write, None)]
                reads = [("down", Phase(f"ours: download {label}", server, sampler), download, fresh),
                         ("read", Phase(f"ref: read {label}", server, sampler), read, None)]
                if loopback is not None:
                    reads.append(("loopback", Phase(f"loopback sendfile {label} (no HTTP)", server, sampler),
                                  read_loopback, lambda slot: LoopbackClient(loopback_port)))
                if r % 2:
                    writes.reverse()
                    reads.reverse()
                for name, phase, fn, prepare in writes + reads:
                    phases[name].append(phase.run(clients, fn, prepare=prepare))
            return {name: median_of(results) for name, results in phases.items() if results}

        small = run_size("1MiB", SMALL, args.small_count, small_body)
        large = run_size("64MiB", LARGE, args.large_count, large_body)

        extra = {}
        if not args.no_extra:
            log("extra")
            store = FileStore(os.path.join(work, "filelayer"))

            def layer_writer(size, count, body_of):
                def write(slot, _, split):
                    for i in range(count):
                        began = time.perf_counter()
                        written = filelayer_write(store, body_of(slot, i))
                        split.append((written - began, time.perf_counter() - written))
                    return count * size
                return write

            extra["layer_small"] = median_of([Phase("file layer: 1MiB (+sha256, rename)", server, sampler).run(
                clients, layer_writer(SMALL, args.small_count, small_body))])
            extra["layer_large"] = median_of([Phase("file layer: 64MiB (+sha256, rename)", server, sampler).run(
                clients, layer_writer(LARGE, args.large_count, large_body))])

            def upload_chunked(slot, conn, split):
                for i in range(args.large_count):
                    began = time.perf_counter()
                    meta, sent = put_object(conn, tokens[slot], f"chunked/{i}", buffers[slot], chunked=True)
                    split.append((sent - began, time.perf_counter() - sent))
                    assert meta["size"] == LARGE, meta
                return args.large_count * LARGE

            extra["chunked"] = median_of([Phase("ours: upload 64MiB chunked", server, sampler).run(
                clients, upload_chunked, prepare=fresh)])

        time.sleep(0.2)
        final = sampler.read()
        sampler.stop_flag.set()
        sample_count = len(sampler.samples)
        all_peak_kb = max(kb for _, kb in sampler.samples)
    finally:
        if loopback is not None:
            loopback.kill()
            loopback.wait()
        server.stop()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    report(args, small, large, extra, idle_kb, final, sample_count, all_peak_kb, time.perf_counter() - started,
           (load_before, os.getloadavg()[0]))


def report(args, small, large, extra, idle_kb, final, sample_count, all_peak_kb, elapsed, load):
    clients = args.clients
    rows = [("upload 1 MiB", small["up"], small["write"]), ("download 1 MiB", small["down"], small["read"]),
            ("upload 64 MiB", large["up"], large["write"]), ("download 64 MiB", large["down"], large["read"])]
    mb = lambda kb: kb / 1024  # noqa: E731
    print()
    print(f"Object storage: {clients} concurrent clients (threads, one keep-alive http.client connection each),"
          f" {os.cpu_count()} cores, Python {sys.version.split()[0]}; {args.rounds} rounds of"
          f" {args.small_count} x 1 MiB and {args.large_count} x 64 MiB objects per client;"
          f" quota {'none' if not args.quota_gib else f'{args.quota_gib} GiB'}; {elapsed:.0f} s in all;"
          f" 1-min load average {load[0]:.2f} before, {load[1]:.2f} after (other work on the box skews all rows)")
    print("MiB/s = median over rounds (all rounds in brackets); ours/ref = median / median.")
    print()
    head = (f"{'':<16} {'ours MiB/s':>10} {'ref MiB/s':>10} {'ours/ref':>8}   {'ours, each round':<22}"
            f" {'ref, each round':<22}")
    print(head)
    print("-" * len(head))
    for name, ours, ref in rows:
        each = lambda m: " ".join(f"{x:.0f}" for x in m["all"])  # noqa: E731
        print(f"{name:<16} {ours['mib_s']:>10.1f} {ref['mib_s']:>10.1f} {ours['mib_s'] / ref['mib_s']:>8.2f}"
              f"   {each(ours):<22} {each(ref):<22}")
    print()
    print("per object, p50 ms (upload: body sent | after the last byte until the answer;"
          " ref write: write loop | fsync; download/read: whole)")
    for name, ours, ref in rows:
        if name.startswith("upload"):
            print(f"  {name:<16} ours {ours['first_ms_p50']:8.1f} | {ours['second_ms_p50']:7.1f}"
                  f"    ref {ref['first_ms_p50']:8.1f} | {ref['second_ms_p50']:7.1f}")
        else:
            print(f"  {name:<16} ours {ours['whole_ms_p50']:8.1f}              ref {ref['whole_ms_p50']:8.1f}")
    print()
    print("CPU seconds per GiB moved (server process | this process), and cores busy on average:")
    for name, ours, ref in rows:
        print(f"  {name:<16} ours {ours['server_cpu_per_gib']:5.2f} | {ours['client_cpu_per_gib']:5.2f}"
              f" ({ours['cpu_cores']:.2f} cores)    ref {ref['client_cpu_per_gib']:5.2f}"
              f" ({ref['cpu_cores']:.2f} cores)")
    if extra:
        print()
        print("extra rows:")
        for label, layer, ours, ref in (("1 MiB", extra["layer_small"], small["up"], small["write"]),
                                        ("64 MiB", extra["layer_large"], large["up"], large["write"])):
            print(f"  file layer in-process (no HTTP, no SQLite), {label:<6}: {layer['mib_s']:7.1f} MiB/s ="
                  f" {layer['mib_s'] / ref['mib_s']:.2f} x ref write;"
                  f" ours upload = {ours['mib_s'] / layer['mib_s']:.2f} x file layer")
        for label, ours, loop in (("1 MiB", small["down"], small["loopback"]),
                                  ("64 MiB", large["down"], large["loopback"])):
            print(f"  loopback sendfile, no HTTP (other process), {label:<6}: {loop['mib_s']:7.1f} MiB/s;"
                  f" ours download = {ours['mib_s'] / loop['mib_s']:.2f} x loopback")
        chunked = extra["chunked"]
        print(f"  upload 64 MiB with Transfer-Encoding: chunked: {chunked['mib_s']:7.1f} MiB/s ="
              f" {chunked['mib_s'] / large['write']['mib_s']:.2f} x ref write (one round; RSS peak"
              f" {mb(chunked['server_rss_peak_kb']):.1f} MB)")
    print()
    print(f"server RSS: idle {mb(idle_kb):.1f} MB; peak during the 64 MiB uploads"
          f" {mb(large['up']['server_rss_peak_kb']):.1f} MB; peak of all {sample_count} samples (50 ms)"
          f" {mb(all_peak_kb):.1f} MB; VmHWM {mb(final['VmHWM']):.1f} MB; VmRSS at the end {mb(final['VmRSS']):.1f} MB")
    print()
    print("Markdown:")
    print()
    spread = lambda m: f"{min(m['all']):.0f}–{max(m['all']):.0f}"  # noqa: E731
    print(f"| objects, {clients} clients | Meterline MiB/s (rounds) | plain Python MiB/s (rounds)"
          " | Meterline ÷ plain |")
    print("|---|---:|---:|---:|")
    for name, ours, ref in rows:
        print(f"| {name} | **{ours['mib_s']:.0f}** ({spread(ours)}) | {ref['mib_s']:.0f} ({spread(ref)}) |"
              f" **{ours['mib_s'] / ref['mib_s']:.2f}** |")
    print()
    print(f"Server RSS: {mb(idle_kb):.0f} MB idle, {mb(large['up']['server_rss_peak_kb']):.0f} MB peak during the"
          f" 64 MiB uploads (VmRSS sampled every 50 ms), VmHWM {mb(final['VmHWM']):.0f} MB over the run.")
    print(f"Plain Python, same bytes, same {clients} threads, same file system: upload = open(path, 'xb'),"
          " write() in 256 KiB slices, flush, os.fsync, close per file; download = open(path, 'rb',"
          " buffering=0), readinto a 256 KiB buffer to EOF (warm page cache on both sides)."
          f" Median of {args.rounds} rounds.")


if __name__ == "__main__":
    main()
