"""Archive files (§13 "Raw event retention"): raw events moved out of SQLite
into `<data dir>/archive/`, one gzip NDJSON file per UTC month of their
timestamps (`events-YYYY-MM.ndjson.gz`), and `manifest.json` beside them.

Each archive pass appends one gzip member per slice of events to the file of
their month (a multi-member gzip file reads as one stream), fsyncs it, then
records the file's new size, event count, first and last timestamps and
SHA-256 in the manifest, written atomically (temp file, fsync, rename, fsync
of the folder). Only then are the events deleted from SQLite; until that is
done the entry keeps `pending_from`, the offset of the members whose events
may still be stored, and the next pass finishes the deletion first. So a
crash at any point neither loses nor duplicates an event:

- before the manifest names the new bytes: the file is cut back to the size
  the manifest records (or removed, when the manifest does not name it);
  nothing was deleted from SQLite yet;
- after it: the next pass deletes the events of the pending members that are
  still stored, then clears `pending_from`.

A restored file (`python3 -m billing.archive restore`) stays where it is,
marked `restored_at` in the manifest; events of its month archived later go
to a new file, `events-YYYY-MM.2.ndjson.gz` (then .3, …).

An event is one JSON line of the events table's columns (`ts`, `quantity`,
`received_at` in µs and integer millionths, `value` as stored, `properties`
as its stored JSON text) plus `timestamp` (RFC 3339) for people reading it.
"""

import gzip
import hashlib
import json
import os
from datetime import datetime, timedelta, timezone

ARCHIVE_DIR = "archive"
MANIFEST = "manifest.json"
FORMAT = 1
PREFIX, SUFFIX = "events-", ".ndjson.gz"
COLUMNS = ("seq", "customer_id", "event_id", "meter_id", "ts", "quantity", "value", "matched", "properties",
           "late", "received_at", "id_hash")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_READ_CHUNK = 1024 * 1024
PACE_ROWS = 250  # rows encoded between two calls of append's `pace`


class ArchiveError(Exception):
    """The archive folder or a file in it is not what the manifest says."""


def folder_of(data_dir):
    return os.path.join(data_dir, ARCHIVE_DIR)


def instant(us):
    """RFC 3339 (UTC, µs when not whole seconds) of µs since the epoch."""
    return (_EPOCH + timedelta(microseconds=us)).isoformat().replace("+00:00", "Z")


def month_of(ts_us):
    """The UTC month of an instant: "YYYY-MM"."""
    return instant(ts_us)[:7]


def _fsync_folder(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the manifest -----------------------------------------------------------------

def load_manifest(folder):
    """The manifest ({"format", "files": [entry, …]}); an empty one when there is none."""
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path, "rb") as reader:
            manifest = json.loads(reader.read().decode("utf-8"))
    except FileNotFoundError:
        return {"format": FORMAT, "files": []}
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), list):
        raise ArchiveError(f"{path} is not an archive manifest of format {FORMAT}")
    return manifest


def save_manifest(folder, manifest):
    """Write the manifest atomically: temp file, fsync, rename, fsync of the folder."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    temp = os.path.join(folder, MANIFEST + ".tmp")
    with open(temp, "wb") as out:
        out.write((json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, os.path.join(folder, MANIFEST))
    _fsync_folder(folder)


def entry_of(manifest, name):
    """The manifest's entry of the file `name`, or None."""
    return next((e for e in manifest["files"] if e.get("file") == name), None)


def current_entry(manifest, month):
    """The entry of the month's file that receives new events (not restored), or None."""
    return next((e for e in manifest["files"] if e.get("month") == month and not e.get("restored_at")), None)


# -- files --------------------------------------------------------------------------

def _hash_of(path, size=None):
    """(bytes read, a sha256 object over them): the file's first `size` bytes (all without `size`)."""
    digest, done = hashlib.sha256(), 0
    with open(path, "rb") as reader:
        while size is None or done < size:
            data = reader.read(_READ_CHUNK if size is None else min(_READ_CHUNK, size - done))
            if not data:
                break
            digest.update(data)
            done += len(data)
    return done, digest


def file_digest(path, size=None):
    """(bytes, SHA-256 hex) of the file's first `size` bytes (all without `size`)."""
    done, digest = _hash_of(path, size)
    return done, digest.hexdigest()


# path → (bytes, sha256 object over them) of the files this process appended
# to: the next member adds its bytes to a copy, so a month's file is read
# once per process, not once per slice
_RUNNING = {}


def _digest_after(path, size, member):
    """(bytes, SHA-256 hex) of the file once `member` follows its first `size` bytes."""
    known = _RUNNING.get(path)
    if known is not None and known[0] == size:
        digest = known[1].copy()
    elif size == 0:
        digest = hashlib.sha256()
    else:
        done, digest = _hash_of(path, size)
        if done != size:
            raise ArchiveError(f"{path} holds {done} bytes, the manifest says {size}")
    digest.update(member)
    _RUNNING[path] = (size + len(member), digest.copy())
    return size + len(member), digest.hexdigest()


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _line(row):
    record = {name: row[name] for name in COLUMNS}
    record["timestamp"] = instant(row["ts"])
    return _ENCODER.encode(record) + "\n"


def _encode(rows, pace):
    """The NDJSON text of `rows`, `pace()` called after every PACE_ROWS of them."""
    parts = []
    for start in range(0, len(rows), PACE_ROWS):
        parts.append("".join(_line(row) for row in rows[start:start + PACE_ROWS]))
        if pace is not None:
            pace()
    return "".join(parts)


def append(folder, manifest, month, rows, now_us, pace=None):
    """Append `rows` (mappings of COLUMNS, of one month) as one gzip member to
    the month's file, fsync it and record it in the manifest (saved) with
    `pending_from` at the member's offset; returns the entry. `pace` (if
    given) is called between pieces of the encoding work."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    entry = current_entry(manifest, month)
    if entry is None:
        entry = {"file": _new_name(manifest, month), "month": month, "events": 0, "first_ts": None,
                 "last_ts": None, "bytes": 0, "sha256": hashlib.sha256().hexdigest(), "pending_from": None,
                 "archived_at": None, "restored_at": None}
        manifest["files"].append(entry)
        manifest["files"].sort(key=lambda e: e["file"])
    path = os.path.join(folder, entry["file"])
    member = gzip.compress(_encode(rows, pace).encode("utf-8"), mtime=0)
    with open(path, "ab") as out:
        out.truncate(entry["bytes"])  # what a crash left past the recorded size was never recorded
        out.seek(entry["bytes"])
        out.write(member)
        out.flush()
        os.fsync(out.fileno())
    _fsync_folder(folder)
    first, last = min(row["ts"] for row in rows), max(row["ts"] for row in rows)
    if entry["pending_from"] is None:
        entry["pending_from"] = entry["bytes"]
    entry["bytes"], entry["sha256"] = _digest_after(path, entry["bytes"], member)
    entry["events"] += len(rows)
    entry["first_ts"] = instant(first) if entry["first_ts"] is None else min(entry["first_ts"], instant(first), key=_key)
    entry["last_ts"] = instant(last) if entry["last_ts"] is None else max(entry["last_ts"], instant(last), key=_key)
    entry["archived_at"] = instant(now_us)
    save_manifest(folder, manifest)
    return entry


def _key(text):
    """Sort key of an RFC 3339 text written by `instant`."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def settled(folder, manifest, entry):
    """The entry's pending events are deleted from SQLite: clear `pending_from`."""
    entry["pending_from"] = None
    save_manifest(folder, manifest)


def recover(folder, manifest):
    """Undo what a crash left unrecorded: cut each file back to the size its
    entry records, remove event files no entry names; returns the entries
    whose deletion from SQLite is pending (to be finished first)."""
    if not os.path.isdir(folder):
        return []
    named = {e["file"] for e in manifest["files"]}
    for name in os.listdir(folder):
        if name.startswith(PREFIX) and name.endswith(SUFFIX) and name not in named:
            os.remove(os.path.join(folder, name))  # written before the manifest named it: nothing deleted yet
    for entry in manifest["files"]:
        path = os.path.join(folder, entry["file"])
        if not entry.get("restored_at") and os.path.isfile(path) and os.path.getsize(path) > entry["bytes"]:
            with open(path, "r+b") as out:
                out.truncate(entry["bytes"])
                os.fsync(out.fileno())
    return [e for e in manifest["files"] if e.get("pending_from") is not None and not e.get("restored_at")]


class _Limited:
    """The next `size` bytes of a binary file, for gzip to read."""

    def __init__(self, raw, size):
        self.raw, self.left = raw, size

    def read(self, count=-1):
        count = self.left if count is None or count < 0 else min(count, self.left)
        data = self.raw.read(count)
        self.left -= len(data)
        return data


def read_events(folder, entry, offset=0):
    """The events (dicts of COLUMNS, each line checked) of the entry's file
    from the member at `offset` up to the size the manifest records, read a
    piece at a time."""
    with open(os.path.join(folder, entry["file"]), "rb") as raw:
        raw.seek(offset)
        with gzip.open(_Limited(raw, entry["bytes"] - offset), "rt", encoding="utf-8") as reader:
            for line in reader:
                yield check_line(line)


def check_line(line):
    """The event of one NDJSON line; ValueError when it is not one."""
    record = json.loads(line)
    if not isinstance(record, dict) or any(name not in record for name in COLUMNS):
        raise ValueError("not an archived event (a column is missing)")
    if not all(isinstance(record[name], int) for name in ("seq", "customer_id", "meter_id", "ts", "quantity")):
        raise ValueError("seq, customer_id, meter_id, ts and quantity must be integers")
    return record


def verify_entry(folder, entry):
    """The problem with one file of the manifest, or None: its size and SHA-256,
    every line an event, as many as recorded."""
    path = os.path.join(folder, entry.get("file") or "")
    if not entry.get("file") or not os.path.isfile(path):
        return f"{entry.get('file')}: missing"
    size, sha = file_digest(path)
    if (size, sha) != (entry.get("bytes"), entry.get("sha256")):
        return (f"{entry['file']}: {size} bytes, SHA-256 {sha}; the manifest says {entry.get('bytes')} bytes, "
                f"SHA-256 {entry.get('sha256')} (the file is corrupt)")
    count = 0
    try:
        with gzip.open(path, "rt", encoding="utf-8") as reader:
            for number, line in enumerate(reader, 1):
                try:
                    check_line(line)
                except ValueError as exc:
                    return f"{entry['file']}: line {number} is not an archived event: {exc}"
                count += 1
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        return f"{entry['file']}: not a readable gzip file: {exc}"
    if count != entry.get("events"):
        return f"{entry['file']}: {count} events, the manifest says {entry.get('events')}"
    return None


def mark_restored(folder, manifest, entry, now_us):
    """Mark a restored file in the manifest: events of its month archived
    later go to a new file (the file itself stays, for reference)."""
    entry.update(restored_at=instant(now_us), pending_from=None)
    save_manifest(folder, manifest)


def _new_name(manifest, month):
    """The first name of the month's files no entry has: events-YYYY-MM, then .2, .3, …"""
    taken = {e["file"] for e in manifest["files"]}
    number = 1
    while True:
        name = f"{PREFIX}{month}{'' if number == 1 else f'.{number}'}{SUFFIX}"
        if name not in taken:
            return name
        number += 1
