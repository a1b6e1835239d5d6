"""Objects survive `kill -9` (§12): the real `python3 server.py` is killed while
uploads are acknowledged, in flight and half sent; after a restart on the same
database every acknowledged object is intact, nothing partial is visible, no
file is left that no row points to, and no quota stays reserved."""

import hashlib
import http.client
import json
import os
import secrets
import signal
import sqlite3
import threading

import pytest

from tests.helpers import sha256, wait_for
from tests.http.helpers import RawConnection, object_url, request_head
from tests.test_server_process import start

ADMIN_KEY = "mk_durable_objects_key_0123456789"
QUOTA = 24 * 1024 * 1024
FLIGHT_SIZE = 512 * 1024

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


class Api:
    """http.client on one keep-alive connection, JSON or raw bytes."""

    def __init__(self, port, token):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.auth = {"Authorization": f"Bearer {token}"}

    def call(self, method, path, body=None, headers=None, **kw):
        headers = {**self.auth, **(headers or {})}
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=body, headers=headers, **kw)
        response = self.conn.getresponse()
        data = response.read()
        return response.status, response.headers, data

    def json(self, method, path, body=None):
        status, _, data = self.call(method, path, body)
        return status, json.loads(data) if data else None

    def close(self):
        self.conn.close()


def list_objects(api):
    status, page = api.json("GET", "/v1/objects?limit=1000")
    assert status == 200, page
    assert page["next_cursor"] is None
    return page


def part_files(objects_dir):
    tmp = os.path.join(objects_dir, "tmp")
    return [n for n in os.listdir(tmp) if n.endswith(".part") and os.path.getsize(os.path.join(tmp, n)) > 0]


def object_files(objects_dir):
    """Names of the stored object files (under the two-hex-digit folders; not
    the deleted ones waiting in the trash)."""
    found = set()
    for entry in os.scandir(objects_dir):
        if entry.is_dir() and entry.name not in ("tmp", "trash"):
            found |= {f.name for f in os.scandir(entry.path)}
        elif entry.is_file():
            found.add(entry.name)
    return found


def test_objects_survive_kill_9_whole_or_not_at_all(tmp_path):
    db = tmp_path / "billing.db"
    objects_dir = str(tmp_path / "objects")
    env = {"BILLING_DB": str(db), "BILLING_ADMIN_KEY": ADMIN_KEY, "BILLING_RATE_LIMIT": "1000000"}
    proc, port, _ = start([], env)
    partial_sockets, flight_threads = [], []
    acknowledged = {}  # key -> sha256 of the bytes the client sent
    attempts = {}  # in-flight keys -> [sha256 of each attempt, in order]
    last_ack = {}  # in-flight keys -> index of the last acknowledged attempt
    stop = threading.Event()
    try:
        admin = Api(port, ADMIN_KEY)
        status, customer = admin.json("POST", "/v1/customers", {"name": "Durable", "email": "durable@example.com",
                                                                "storage_quota_bytes": QUOTA})
        assert status == 201, customer
        status, key = admin.json("POST", "/v1/api-keys", {"name": "tenant", "customer_id": customer["id"]})
        assert status == 201, key
        token = key["key"]
        tenant = Api(port, token)

        # acknowledged uploads: new ones, a replaced one, an empty one, one chunked
        for name, size in (("ack/empty", 0), ("ack/one", 1), ("ack/small.txt", 1000), ("ack/medium.bin", 300_000),
                           ("ack/large.bin", 1_500_000), ("ack/résumé.pdf", 70_000)):
            data = os.urandom(size)
            status, _, reply = tenant.call("PUT", object_url(name), data)
            assert status == 201, reply
            acknowledged[name] = sha256(data)
        data = os.urandom(400_000)
        status, _, reply = tenant.call("PUT", object_url("ack/medium.bin"), data)
        assert status == 200, reply
        acknowledged["ack/medium.bin"] = sha256(data)
        data = os.urandom(600_000)
        status, _, reply = tenant.call("PUT", object_url("ack/chunked.bin"),
                                       (data[i:i + 100_000] for i in range(0, len(data), 100_000)),
                                       {"Transfer-Encoding": "chunked"}, encode_chunked=True)
        assert status == 201, reply
        acknowledged["ack/chunked.bin"] = sha256(data)

        # half-sent uploads, parked mid-body: three by Content-Length, two chunked (one replacing a key)
        for i, (name, framing) in enumerate((("partial/a", "length"), ("partial/b", "length"),
                                             ("ack/small.txt", "length"), ("partial/c", "chunked"),
                                             ("ack/large.bin", "chunked"))):
            conn = RawConnection(port)
            partial_sockets.append(conn)
            body = os.urandom(700_000)
            if framing == "length":
                conn.send(request_head("PUT", object_url(name), {"Authorization": f"Bearer {token}",
                                                                 "Content-Length": 2 * len(body)}) + body)
            else:
                conn.send(request_head("PUT", object_url(name), {"Authorization": f"Bearer {token}",
                                                                 "Transfer-Encoding": "chunked"})
                          + b"%x\r\n%s\r\n" % (len(body), body))
        wait_for(lambda: len(part_files(objects_dir)) == len(partial_sockets), timeout=20,
                 message="every half-sent upload to be streaming")

        # uploads in flight when the server dies: each thread keeps replacing three keys
        def fly(t):
            api = Api(port, token)
            n = 0
            try:
                while not stop.is_set():
                    name = f"flight/{t}-{n % 3}"
                    body = os.urandom(FLIGHT_SIZE)
                    attempts.setdefault(name, []).append(sha256(body))
                    pieces = (body[i:i + 65_536] for i in range(0, FLIGHT_SIZE, 65_536))
                    status, _, _ = api.call("PUT", object_url(name), pieces,
                                            {"Content-Length": str(FLIGHT_SIZE)})
                    if status in (200, 201):
                        last_ack[name] = len(attempts[name]) - 1
                    n += 1
            except (OSError, http.client.HTTPException):
                pass  # the server was killed
            finally:
                api.close()

        flight_threads = [threading.Thread(target=fly, args=(t,), daemon=True) for t in range(3)]
        for thread in flight_threads:
            thread.start()
        wait_for(lambda: len(last_ack) >= 6, timeout=30, message="in-flight uploads to be acknowledged")

        # the half-sent uploads hold their reservations: the free quota cannot be taken now
        free = QUOTA - list_objects(tenant)["total_bytes"]
        with RawConnection(port) as conn:
            conn.send(request_head("PUT", object_url("too-much"), {"Authorization": f"Bearer {token}",
                                                                   "Content-Length": free,
                                                                   "Expect": "100-continue"}))
            refused = conn.read_response()
            assert refused.status == 409 and refused.error_code == "quota_exceeded", refused
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        stop.set()
        for conn in partial_sockets:
            conn.close()
        for thread in flight_threads:
            thread.join(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            stream.close()

    assert part_files(objects_dir), "the kill should have left half-written uploads behind"
    # a file renamed into place whose row was never committed (the kill between the two)
    stray = secrets.token_hex(16)
    os.makedirs(os.path.join(objects_dir, stray[:2]), exist_ok=True)
    with open(os.path.join(objects_dir, stray[:2], stray), "wb") as file:
        file.write(b"never committed")

    proc, port, _ = start([], env)
    try:
        tenant = Api(port, token)
        page = list_objects(tenant)
        stored = {o["key"]: o for o in page["data"]}

        # nothing partial is visible: the half-sent keys are absent, or as they were acknowledged
        assert not any(k.startswith("partial/") for k in stored), sorted(stored)
        for name, sent in acknowledged.items():
            assert stored[name]["etag"] == sent, name
        for name, tried in attempts.items():
            if name in stored:  # whole: the last acknowledged attempt or a later one that committed
                assert stored[name]["etag"] in tried[last_ack.get(name, 0):], name
            else:
                assert name not in last_ack, name
        assert set(stored) <= set(acknowledged) | set(attempts)
        for name, meta in stored.items():
            status, headers, body = tenant.call("GET", object_url(name))
            assert status == 200, (name, body)
            assert len(body) == meta["size"]
            assert sha256(body) == meta["etag"] == headers["ETag"].strip('"'), name

        # temporary files are swept, and every file on disk is an object's (and the other way round)
        assert os.listdir(os.path.join(objects_dir, "tmp")) == []
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            referenced = {row[0] for row in conn.execute("SELECT file FROM objects")}
        finally:
            conn.close()
        assert len(referenced) == len(stored)
        assert object_files(objects_dir) == referenced
        assert stray not in object_files(objects_dir)

        # no reservation outlived the process: the whole free quota can be taken
        free = QUOTA - page["total_bytes"]
        assert free > 0
        filler = os.urandom(1024 * 1024)
        digest = hashlib.sha256()

        def fill():
            left = free
            while left:
                piece = filler[:min(left, len(filler))]
                digest.update(piece)
                left -= len(piece)
                yield piece

        status, _, reply = tenant.call("PUT", object_url("after/fill.bin"), fill(), {"Content-Length": str(free)})
        assert status == 201, reply
        assert json.loads(reply)["etag"] == digest.hexdigest()
        assert list_objects(tenant)["total_bytes"] == QUOTA
        tenant.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            stream.close()
