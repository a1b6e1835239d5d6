"""Archive files (billing/store/archive_files.py): each slice is one gzip
member appended to its month's file, and the manifest's SHA-256 is the
file's, kept up as members are added without reading the file again."""

import gzip
import hashlib
import os

from billing.store import archive_files

JUNE = 1_748_736_000_000_000  # 2025-06-01T00:00:00Z in µs


def _rows(start, count):
    return [{"seq": start + i, "customer_id": 1, "event_id": f"e{start + i}", "meter_id": 1, "ts": JUNE + i,
             "quantity": 1_000_000, "value": None, "matched": 1, "properties": "{}", "late": 0,
             "received_at": JUNE + i, "id_hash": start + i} for i in range(count)]


def test_members_follow_each_other_and_the_digest_is_the_files_without_rereading_it(tmp_path, monkeypatch):
    folder = str(tmp_path / "archive")
    manifest = archive_files.load_manifest(folder)
    reads = []

    def counting_open(path, mode="r", *args, **kwargs):
        if "r" in mode and path.endswith(".gz"):
            reads.append(path)
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(archive_files, "open", counting_open, raising=False)
    for n in range(5):
        entry = archive_files.append(folder, manifest, "2025-06", _rows(n * 100, 100), JUNE)
        with open(os.path.join(folder, entry["file"]), "rb") as reader:
            data = reader.read()
        assert (entry["bytes"], entry["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
        assert len(gzip.decompress(data).splitlines()) == (n + 1) * 100
    assert reads == []  # the file was never read back

    archive_files._RUNNING.clear()  # another process (a restart): the file is read once, then not again
    for n in range(5, 7):
        entry = archive_files.append(folder, manifest, "2025-06", _rows(n * 100, 100), JUNE)
    assert len(reads) == 1
    with open(os.path.join(folder, entry["file"]), "rb") as reader:
        assert entry["sha256"] == hashlib.sha256(reader.read()).hexdigest()
    assert archive_files.load_manifest(folder)["files"][0]["events"] == 700
