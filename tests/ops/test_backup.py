"""Backups (§13): `python3 -m billing.backup DEST` against a real server that
keeps ingesting and replacing objects, `--verify DEST`, a restore, and what a
backup refuses."""

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time

import pytest

from billing import backup
from billing.config import Config
from tests.harness import Client, RunningServer, temp_db
from tests.helpers import sha256, wait_for
from tests.http.helpers import create_customer, create_meter, list_all, object_url, put_object
from tests.test_server_process import ROOT, start

ADMIN_KEY = "mk_backup_admin_key_0123456789abcdef"
ENV = {"BILLING_ADMIN_KEY": ADMIN_KEY, "BILLING_RATE_LIMIT": "1000000"}
BATCH = 100

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def run_backup(*args, env=None):
    """The command as a user runs it; (exit status, stdout, stderr)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    done = subprocess.run([sys.executable, "-m", "billing.backup", *map(str, args)], cwd=ROOT,
                          env={**clean, **(env or {})}, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout, done.stderr


def read_only(path):
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def copied(dest):
    """(event ids, [(customer_id, key, file, etag)]) of the database in a backup."""
    conn = read_only(dest / "billing.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        ids = {event_id for (event_id,) in conn.execute("SELECT event_id FROM events")}
        objects = conn.execute("SELECT customer_id, key, file, etag FROM objects").fetchall()
        # written in one transaction with each upload and delete: the copy is of one instant
        assert conn.execute("SELECT o.id, o.size FROM objects o ORDER BY o.id").fetchall() == conn.execute(
            "SELECT object_id, size FROM storage_spans WHERE end_s IS NULL ORDER BY object_id").fetchall()
    finally:
        conn.close()
    return ids, objects


class Load:
    """Ingest in batches and replace objects, each on its own thread, until stopped;
    every acknowledged batch is kept with the instant of its answer."""

    def __init__(self, port, customer_id):
        self.port, self.customer_id = port, customer_id
        self.acked = []  # (time.monotonic() of the answer, [event ids])
        self.sent = {}  # sha256 -> bytes of every object body the server acknowledged
        self.stop = threading.Event()
        self.errors = []
        self.threads = [threading.Thread(target=self._guard, args=(work,), daemon=True)
                        for work in (self._ingest, self._replace)]

    def _guard(self, work):
        client = Client(self.port, ADMIN_KEY)
        try:
            work(client)
        except Exception as exc:  # reported by the test
            self.errors.append(repr(exc))
        finally:
            client.close()

    def _ingest(self, client):
        n = 0
        while not self.stop.is_set():
            ids = [f"evt-{n}-{i}" for i in range(BATCH)]
            reply = client.post("/v1/events/batch", {"events": [
                {"id": i, "customer_id": self.customer_id, "meter": "api_calls", "quantity": 1} for i in ids]})
            assert reply.status == 200 and reply.json["accepted"] == BATCH, reply
            self.acked.append((time.monotonic(), ids))
            n += 1

    def _replace(self, client):
        n = 0
        while not self.stop.is_set():
            data = os.urandom(20_000 + n % 7 * 1000)
            reply = put_object(client, f"hot/{n % 3}", data, customer_id=self.customer_id)
            assert reply.status in (200, 201), reply
            self.sent[sha256(data)] = data
            if n % 5 == 4:
                assert client.delete(object_url(f"hot/{n % 3}", self.customer_id)).status == 200
            n += 1

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        return False


def test_a_backup_taken_while_the_server_ingests_is_consistent_verified_and_restores(tmp_path):
    data_dir = tmp_path / "data"
    db = data_dir / "billing.db"
    dest = tmp_path / "backups" / "first"
    env = {**ENV, "BILLING_DB": str(db)}
    proc, port, _ = start([], env)
    try:
        admin = Client(port, ADMIN_KEY)
        cid = create_customer(admin)["id"]
        create_meter(admin, key="api_calls")
        cold = {f"cold/{i}.bin": os.urandom(size) for i, size in enumerate((0, 1, 70_000, 600_000))}
        for key, data in cold.items():
            assert put_object(admin, key, data, customer_id=cid).status == 201
        with Load(port, cid) as load:
            wait_for(lambda: len(load.acked) >= 30 and len(load.sent) >= 10, timeout=60,
                     message="ingest and replacements under way")
            began = time.monotonic()
            status, out, err = run_backup("--step-pages", 8, dest, env={"BILLING_DB": str(db)})
            ended = time.monotonic()
            wait_for(lambda: any(at > ended for at, _ in load.acked), timeout=30, message="ingest after the backup")
        assert load.errors == []
        assert status == 0, err
        assert "ok" in out and err == ""
        during = [ids for at, ids in load.acked if began < at < ended]
        assert during, "the server should have stored events while the backup ran"
        before = {i for at, ids in load.acked if at < began for i in ids}

        ids, objects = copied(dest)
        assert before <= ids  # every event acknowledged before the backup began
        manifest = json.loads((dest / "manifest.json").read_text())
        assert manifest["event_count"] == len(ids) and manifest["object_count"] == len(objects)
        assert len(objects) >= len(cold)
        listed = {entry["path"]: entry for entry in manifest["files"]}
        for customer_id, key, name, etag in objects:
            body = (dest / "objects" / name[:2] / name).read_bytes()
            assert sha256(body) == etag == listed[f"objects/{name[:2]}/{name}"]["sha256"], key
            assert body == (cold[key] if key in cold else load.sent[etag]), key
        assert stat.S_IMODE(os.stat(dest).st_mode) == 0o700
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            stream.close()

    assert run_backup("--verify", dest)[0] == 0
    check_refusals_and_corruption(tmp_path, dest, db)
    check_restore(tmp_path, dest, cid, ids, objects, cold, load.sent)


def check_refusals_and_corruption(tmp_path, dest, db):
    # a backup into a folder that is not empty is refused, and changes nothing there
    manifest = (dest / "manifest.json").read_bytes()
    status, out, err = run_backup(dest, env={"BILLING_DB": str(db)})
    assert status == 2 and "not empty" in err and out == ""
    assert (dest / "manifest.json").read_bytes() == manifest

    # one corrupt object file: --verify fails and names it
    broken = tmp_path / "broken"
    shutil.copytree(dest, broken)
    victim = next(e["path"] for e in json.loads(manifest)["files"] if e["path"].startswith("objects/") and e["size"])
    path = broken / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    status, out, err = run_backup("--verify", broken)
    assert status == 1 and "FAILED" in err and victim in err and "corrupt" in err, err
    assert run_backup("--verify", dest)[0] == 0  # the original is untouched


def check_restore(tmp_path, dest, cid, ids, objects, cold, sent):
    """Restore as the README says: the backup's files in place, then start."""
    restored = tmp_path / "restored"
    shutil.copytree(dest, restored, ignore=shutil.ignore_patterns("manifest.json"))
    proc, port, _ = start(["--db", str(restored / "billing.db")], ENV)
    try:
        admin = Client(port, ADMIN_KEY)
        events = list_all(admin, f"/v1/events?customer_id={cid}&limit=1000")
        assert {e["id"] for e in events} == ids
        for customer_id, key, name, etag in objects:
            reply = admin.get(object_url(key, customer_id))
            assert reply.status == 200 and sha256(reply.raw) == etag, key
            assert reply.raw == (cold[key] if key in cold else sent[etag])
        admin.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        for stream in (proc.stdout, proc.stderr):
            stream.close()


# -- in one process: the grace period, the master key and archive, --verify's findings --

@pytest.fixture
def stopped(tmp_path):
    """A database with two objects of a customer, its server stopped: (config, customer id, {key: bytes})."""
    server = RunningServer(temp_db(tmp_path), env={"BILLING_RATE_LIMIT": "1000000"})
    cid = create_customer(server.admin)["id"]
    bodies = {"a.txt": b"alpha" * 1000, "b.bin": os.urandom(3000)}
    for key, data in bodies.items():
        assert put_object(server.admin, key, data, customer_id=cid).status == 201
    config = server.app.config
    server.stop()
    return config, cid, bodies


def test_a_file_deleted_after_the_database_copy_is_found_in_the_trash(tmp_path, monkeypatch):
    server = RunningServer(temp_db(tmp_path), env={"BILLING_RATE_LIMIT": "1000000"})
    try:
        cid = create_customer(server.admin)["id"]
        old, new = b"the version the copy names", b"a later version"
        assert put_object(server.admin, "replaced", old, customer_id=cid).status == 201
        assert put_object(server.admin, "deleted", b"soon gone", customer_id=cid).status == 201
        read_copy = backup.read_copy

        def then_change(path):  # right after the database copy: the server deletes and replaces
            found = read_copy(path)
            assert server.admin.delete(object_url("deleted", cid)).status == 200
            assert put_object(server.admin, "replaced", new, customer_id=cid).status == 200
            return found

        monkeypatch.setattr(backup, "read_copy", then_change)
        manifest, problems = backup.backup(server.app.config, str(tmp_path / "dest"))
    finally:
        monkeypatch.undo()
        server.stop()
    assert problems == []
    assert manifest["object_count"] == 2
    bodies = {sha256(old), sha256(b"soon gone")}
    assert {e["sha256"] for e in manifest["files"] if e["path"].startswith("objects/")} == bodies
    assert backup.verify(str(tmp_path / "dest"))[1] == []


def test_the_master_key_and_archive_files_are_copied_private(stopped, tmp_path):
    config, cid, bodies = stopped
    if not os.path.exists(config.master_key_path):
        with open(os.open(config.master_key_path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as file:
            file.write(os.urandom(32))
    os.makedirs(os.path.join(config.data_dir, "archive", "2025"))
    with open(os.path.join(config.data_dir, "archive", "2025", "events-2025-01.ndjson.gz"), "wb") as file:
        file.write(b"archived events")
    dest = tmp_path / "dest"
    manifest, problems = backup.backup(config, str(dest))
    assert problems == []
    key = open(config.master_key_path, "rb").read()
    assert (dest / "master.key").read_bytes() == key
    assert stat.S_IMODE(os.stat(dest / "master.key").st_mode) == 0o600
    assert (dest / "archive" / "2025" / "events-2025-01.ndjson.gz").read_bytes() == b"archived events"
    paths = {e["path"]: e for e in manifest["files"]}
    assert sorted(p for p in paths if not p.startswith("objects/")) == [
        "archive/2025/events-2025-01.ndjson.gz", "billing.db", "master.key"]
    assert len(paths) == 3 + len(bodies)
    assert paths["master.key"] == {"path": "master.key", "size": len(key), "sha256": sha256(key)}
    for folder, dirs, files in os.walk(dest):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, folder
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode) == 0o600, name
    assert backup.verify(str(dest))[1] == []


def test_verify_names_what_is_missing_or_wrong(stopped, tmp_path):
    config, cid, bodies = stopped
    dest = tmp_path / "dest"
    manifest, problems = backup.backup(config, str(dest))
    assert problems == [] and manifest["schema_version"] > 0
    assert backup.verify(str(dest))[1] == []
    files = [e["path"] for e in manifest["files"] if e["path"].startswith("objects/")]
    os.unlink(dest / files[0])  # a file gone
    edited = {**manifest, "files": [e for e in manifest["files"] if e["path"] != files[1]]}
    (dest / "manifest.json").write_text(json.dumps(edited))  # an object's file not listed
    problems = backup.verify(str(dest))[1]
    assert any(p.startswith(f"{files[0]}: missing") for p in problems), problems
    assert any(f"its file {files[1]} is not in the backup" in p for p in problems), problems

    (dest / "manifest.json").unlink()
    status, out, err = run_backup("--verify", dest)
    assert status == 1 and "manifest.json is missing" in err


def test_a_corrupt_database_fails_the_check_even_when_the_manifest_agrees(stopped, tmp_path):
    config, cid, bodies = stopped
    dest = tmp_path / "dest"
    manifest = backup.backup(config, str(dest))[0]
    db = dest / "billing.db"
    conn = read_only(db)
    page_size, = conn.execute("PRAGMA page_size").fetchone()
    root, = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'objects_key'").fetchone()
    conn.close()
    data = bytearray(db.read_bytes())
    end = root * page_size  # the index's one page: its cells (the keys) sit at the page's end
    assert b"a.txt" in data[end - page_size:end]
    at = data.index(b"a.txt", end - page_size)
    data[at:at + 5] = b"z.txt"  # the index names a key its table does not hold
    db.write_bytes(bytes(data))
    entry = next(e for e in manifest["files"] if e["path"] == "billing.db")
    entry["sha256"] = hashlib.sha256(data).hexdigest()
    (dest / "manifest.json").write_text(json.dumps(manifest))
    problems = backup.verify(str(dest))[1]
    assert len(problems) == 1 and problems[0].startswith("billing.db: integrity_check: "), problems
    assert "objects_key" in problems[0]


def test_what_a_backup_refuses(stopped, tmp_path):
    config, cid, bodies = stopped
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "something").write_text("kept")
    status, out, err = run_backup(occupied, env={"BILLING_DB": config.db_path})
    assert status == 2 and "not empty" in err
    assert os.listdir(occupied) == ["something"]
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert run_backup(a_file, env={"BILLING_DB": config.db_path})[0] == 2
    nowhere = tmp_path / "nowhere"
    status, out, err = run_backup(nowhere, env={"BILLING_DB": str(tmp_path / "missing.db")})
    assert status == 2 and "no database" in err
    assert not nowhere.exists() and not (tmp_path / "missing.db").exists()
    # an empty folder is fine, and becomes private
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o755)
    status, out, err = run_backup(empty, env={"BILLING_DB": config.db_path})
    assert status == 0, err
    assert stat.S_IMODE(os.stat(empty).st_mode) == 0o700
    assert Config.from_env({"BILLING_DB": config.db_path}).data_dir == config.data_dir
