"""A deleted or replaced object's file is kept for a grace period (§13): it
waits in `objects/trash/` (stamped with the deletion time) so that a backup
whose database copy still names it finds it, and goes once the grace has
passed — at the scheduler's run or at start. Quota counts live objects only."""

import os
import pytest

from billing import clock
from billing.domain import times
from billing.store.files import TRASH_GRACE_SECONDS
from tests.harness import RunningServer
from tests.http.helpers import (create_customer, object_url, pin, put_object, stored_files, temp_db,
                                temp_files)

T0 = "2025-06-01T12:00:00Z"
ENV = {"BILLING_RATE_LIMIT": "1000000"}


@pytest.fixture
def srv(tmp_path):
    pin(T0)
    running = RunningServer(temp_db(tmp_path), env=ENV)
    yield running
    running.stop()


def trash(srv_or_root):
    """{file name in the trash: bytes}."""
    root = srv_or_root.app.config.objects_dir if hasattr(srv_or_root, "app") else srv_or_root
    folder = os.path.join(root, "trash")
    if not os.path.isdir(folder):
        return {}
    return {name: open(os.path.join(folder, name), "rb").read() for name in os.listdir(folder)}


def file_of(srv, customer_id, key):
    return srv.app.db.row("SELECT file FROM objects WHERE customer_id = ? AND key = ?", (customer_id, key))["file"]


def stamp():
    return int(clock.now().timestamp())


def run_jobs(srv):
    reply = srv.admin.post("/v1/jobs/run", {})
    assert reply.status == 200 and reply.json["outcome"] == "ok", reply
    return reply.json["details"]


def test_a_deleted_objects_file_waits_in_the_trash_for_the_grace_period(srv):
    cid = create_customer(srv.admin)["id"]
    data = os.urandom(5000)
    assert put_object(srv.admin, "a.bin", data, customer_id=cid).status == 201
    name = file_of(srv, cid, "a.bin")
    deleted_at = stamp()
    assert srv.admin.delete(object_url("a.bin", cid)).status == 200

    assert stored_files(srv) == {}  # gone from the store at once
    assert srv.admin.get(object_url("a.bin", cid)).status == 404
    assert trash(srv) == {f"{name}.{deleted_at}": data}  # but kept, whole, for a backup in progress
    assert srv.app.files.find(name) == os.path.join(srv.app.config.objects_dir, "trash", f"{name}.{deleted_at}")

    clock.advance(seconds=TRASH_GRACE_SECONDS - 1)
    assert run_jobs(srv)["object_files_purged"] == 0
    assert trash(srv) == {f"{name}.{deleted_at}": data}
    clock.advance(seconds=1)
    assert run_jobs(srv)["object_files_purged"] == 1
    assert trash(srv) == {} and srv.app.files.find(name) is None


def test_a_replaced_file_waits_too_and_the_quota_counts_live_objects_only(srv):
    cid = create_customer(srv.admin, storage_quota_bytes=1000)["id"]
    first, second = os.urandom(1000), os.urandom(1000)
    assert put_object(srv.admin, "a", first, customer_id=cid).status == 201
    old = file_of(srv, cid, "a")
    assert put_object(srv.admin, "a", second, customer_id=cid).status == 200
    assert trash(srv) == {f"{old}.{stamp()}": first}
    assert srv.admin.get(object_url("a", cid)).raw == second
    assert len(stored_files(srv)) == 1

    assert put_object(srv.admin, "b", b"x", customer_id=cid).status == 409  # 1000 live bytes: full
    clock.advance(seconds=10)
    newer = file_of(srv, cid, "a")
    assert srv.admin.delete(object_url("a", cid)).status == 200
    assert trash(srv) == {f"{old}.{stamp() - 10}": first, f"{newer}.{stamp()}": second}
    assert put_object(srv.admin, "b", os.urandom(1000), customer_id=cid).status == 201  # the trash is not counted
    listing = srv.admin.get(f"/v1/objects?customer_id={cid}").json
    assert listing["total_bytes"] == 1000 and [o["key"] for o in listing["data"]] == ["b"]

    clock.advance(seconds=TRASH_GRACE_SECONDS - 10)  # the first retired an hour ago, the second not yet
    assert run_jobs(srv)["object_files_purged"] == 1
    assert list(trash(srv)) == [f"{newer}.{stamp() - TRASH_GRACE_SECONDS + 10}"]


def test_start_moves_unreferenced_files_to_the_trash_and_purges_expired_ones(tmp_path):
    pin(T0)
    first = RunningServer(temp_db(tmp_path), env=ENV)
    root = first.app.config.objects_dir
    cid = create_customer(first.admin)["id"]
    assert put_object(first.admin, "kept", b"kept", customer_id=cid).status == 201
    assert put_object(first.admin, "gone", b"gone", customer_id=cid).status == 201
    kept, gone = file_of(first, cid, "kept"), file_of(first, cid, "gone")
    assert first.admin.delete(object_url("gone", cid)).status == 200
    first.stop()
    # a file renamed into place whose row was never committed (a crash between the two)
    stray = "ab" + "0" * 30
    os.makedirs(os.path.join(root, "ab"), exist_ok=True)
    with open(os.path.join(root, "ab", stray), "wb") as file:
        file.write(b"stray")

    deleted_at = int(times.parse_instant(T0).timestamp())
    for minutes, expected in ((30, {f"{gone}.{deleted_at}": b"gone", f"{stray}.{deleted_at + 1800}": b"stray"}),
                              (61, {f"{stray}.{deleted_at + 1800}": b"stray"}),
                              (91, {})):
        pin(T0)
        clock.advance(minutes=minutes)
        again = RunningServer(temp_db(tmp_path), env=ENV)
        try:
            assert trash(again) == expected, minutes
            assert stored_files(again) == {os.path.join(kept[:2], kept): 4} and temp_files(again) == []
            assert again.admin.get(object_url("kept", cid)).raw == b"kept"
        finally:
            again.stop()
