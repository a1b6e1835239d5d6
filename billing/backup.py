"""Backups (§13): a consistent copy of a live server's data, and its check.

    python3 -m billing.backup [--db PATH] [--step-pages N] DEST   # back up into DEST (new or empty)
    python3 -m billing.backup --verify DEST         # check a backup

The database and data directory are found as the server finds them
(BILLING_DB or --db, BILLING_DATA_DIR). DEST is created 0700 and receives:

    <database name>           the database, copied with the sqlite3 backup API
    master.key                the master key file, when there is one (0600)
    objects/<2 hex>/<name>    every object file the copied database refers to
    archive/...               every file under <data dir>/archive/, when it exists
    manifest.json             written last: each file's path, size and SHA-256,
                              the time of the copy, the schema version and the
                              number of events

The database is copied STEP_PAGES pages at a time from a connection that holds
one read transaction for the whole copy. In WAL mode a reader never blocks the
writer, so the server goes on committing while the copy runs; the held read
transaction fixes the snapshot, so the copy is of one instant and no step
starts over because the server wrote meanwhile (without it the backup API
restarts after every write of another connection, and never ends under steady
ingest). The copy is switched to a rollback journal, so it is one
self-contained file until a server opens it again.

Object files are copied after the database, from the live folder or, for an
object deleted or replaced since the snapshot, from the trash, where a
retired file stays for a grace period (billing.store.files). Every copied
object file is checked against the ETag (SHA-256) and size its row records.

Exit status: 0 done; 1 the backup is incomplete or the check failed (each
problem is named on stderr); 2 a usage or configuration error (DEST not empty,
no database), nothing written.
"""

import argparse
import hashlib
import json
import os
import sqlite3
import sys
import time
import urllib.parse

from . import clock
from .config import Config, ConfigError
from .domain import times
from .store.files import find_file

MANIFEST = "manifest.json"
MASTER_KEY = "master.key"
FORMAT = 1
STEP_PAGES = 1024  # pages copied per backup step (4 MiB with 4 KiB pages)
STEP_PAUSE = 0.001  # seconds between steps: the server's own disk writes go first
CHUNK = 1024 * 1024
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Refused before anything was written."""


# -- DEST ------------------------------------------------------------------------

def prepare_dest(dest):
    """Create DEST (0700), or take an empty existing folder; refuse anything else."""
    if os.path.lexists(dest):
        if not os.path.isdir(dest) or os.path.islink(dest):
            raise UsageError(f"{dest} exists and is not a folder; a backup needs a new or empty folder")
        entries = os.listdir(dest)
        if entries:
            raise UsageError(f"{dest} is not empty ({len(entries)} entries); a backup never overwrites: "
                             "give a new or empty folder")
    else:
        os.makedirs(dest, mode=0o700)
    os.chmod(dest, 0o700)


def _make_folders(folder):
    """`folder` and any missing parent, each 0700."""
    if os.path.isdir(folder):
        return
    _make_folders(os.path.dirname(folder))
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass


def _open_new(path):
    """A new file in the backup (0600, never an existing one)."""
    _make_folders(os.path.dirname(os.path.abspath(path)))
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def _fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _uri(path, mode):
    return f"file:{urllib.parse.quote(os.path.abspath(path))}?mode={mode}"


# -- the database ----------------------------------------------------------------

def copy_database(source, target, step_pages=STEP_PAGES, pause=STEP_PAUSE):
    """Copy the live database `source` to the new file `target` as of one
    instant; returns that instant (aware UTC datetime)."""
    if not os.path.isfile(source):
        raise UsageError(f"no database at {source}")
    src = sqlite3.connect(_uri(source, "rw"), uri=True, isolation_level=None)  # never creates one
    try:
        src.execute("PRAGMA busy_timeout = 5000")
        src.execute("BEGIN")
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the read transaction: the snapshot
        taken = clock.now()
        with _open_new(target):
            pass  # claimed 0600 before SQLite writes into it
        dst = sqlite3.connect(target, isolation_level=None)
        try:
            src.backup(dst, pages=step_pages, progress=lambda *_: time.sleep(pause) if pause else None)
            dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            dst.close()
        src.execute("COMMIT")
    finally:
        src.close()
    _fsync_path(target)
    return taken


def read_copy(path):
    """What the manifest says of a copied database, and the object files it refers to."""
    conn = sqlite3.connect(_uri(path, "ro"), uri=True)
    try:
        cursor = conn.cursor()
        cursor.row_factory = sqlite3.Row
        version = cursor.execute("PRAGMA user_version").fetchone()["user_version"]
        events = cursor.execute("SELECT count(*) AS n FROM events").fetchone()["n"]
        objects = cursor.execute("SELECT customer_id, key, file, size, etag FROM objects ORDER BY id").fetchall()
    finally:
        conn.close()
    return version, events, [dict(row) for row in objects]


# -- files -----------------------------------------------------------------------

def copy_file(source, target):
    """Copy `source` into the new file `target`; returns (size, sha256 hex)."""
    digest, size = hashlib.sha256(), 0
    with open(source, "rb") as reader, _open_new(target) as writer:
        while True:
            data = reader.read(CHUNK)
            if not data:
                break
            digest.update(data)
            size += len(data)
            writer.write(data)
        writer.flush()
        os.fsync(writer.fileno())
    return size, digest.hexdigest()


def object_path(name):
    return f"objects/{name[:2]}/{name}"


def copy_objects(objects_dir, dest, objects, entries, problems):
    """Copy each object's file (live, or retired to the trash since the snapshot)."""
    for row in objects:
        relative = object_path(row["file"])
        label = f"object {row['customer_id']}/{row['key']} ({relative})"
        for _ in range(3):  # retired between the look-up and the open: look again
            source = find_file(objects_dir, row["file"])
            if source is None:
                break
            try:
                size, sha = copy_file(source, os.path.join(dest, relative))
                break
            except FileNotFoundError:  # the source's open: the target was not made yet
                source = None
        if source is None:
            problems.append(f"{label}: its file is gone from {objects_dir}")
            continue
        entries.append({"path": relative, "size": size, "sha256": sha})
        if (size, sha) != (row["size"], row["etag"]):
            problems.append(f"{label}: the stored file does not match its row "
                            f"(size {size}, SHA-256 {sha}; the row says {row['size']}, {row['etag']})")


def copy_tree(source_root, dest, prefix, entries):
    """Every regular file under `source_root`, into DEST/<prefix>/…"""
    if not os.path.isdir(source_root):
        return
    for folder, dirs, names in os.walk(source_root):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(folder, name)
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            relative = "/".join([prefix, *os.path.relpath(path, source_root).split(os.sep)])
            size, sha = copy_file(path, os.path.join(dest, *relative.split("/")))
            entries.append({"path": relative, "size": size, "sha256": sha})


def _fsync_folders(dest):
    for folder, _, _ in os.walk(dest):
        _fsync_path(folder)


# -- backup ----------------------------------------------------------------------

def backup(config, dest, step_pages=STEP_PAGES):
    """Fill DEST; returns (manifest, problems). Raises UsageError before writing anything."""
    db_name = os.path.basename(config.db_path)
    if not os.path.isfile(config.db_path):
        raise UsageError(f"no database at {config.db_path}")
    prepare_dest(dest)
    started = time.monotonic()
    taken = copy_database(config.db_path, os.path.join(dest, db_name), step_pages)
    version, events, objects = read_copy(os.path.join(dest, db_name))
    size, sha = _hash(os.path.join(dest, db_name))
    entries, problems = [{"path": db_name, "size": size, "sha256": sha}], []
    if os.path.isfile(config.master_key_path):
        size, sha = copy_file(config.master_key_path, os.path.join(dest, MASTER_KEY))
        entries.append({"path": MASTER_KEY, "size": size, "sha256": sha})
    copy_objects(config.objects_dir, dest, objects, entries, problems)
    copy_tree(config.archive_dir, dest, "archive", entries)
    manifest = {"format": FORMAT, "created_at": times.format_instant(taken), "database": db_name,
                "schema_version": version, "event_count": events, "object_count": len(objects),
                "duration_ms": round((time.monotonic() - started) * 1000), "files": entries}
    write_manifest(dest, manifest)
    _fsync_folders(dest)
    return manifest, problems


def write_manifest(dest, manifest):
    temp = os.path.join(dest, MANIFEST + ".part")
    with _open_new(temp) as out:
        out.write((json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
        out.flush()
        os.fsync(out.fileno())
    os.rename(temp, os.path.join(dest, MANIFEST))


def _hash(path):
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as reader:
        while True:
            data = reader.read(CHUNK)
            if not data:
                return size, digest.hexdigest()
            digest.update(data)
            size += len(data)


# -- verify ----------------------------------------------------------------------

def load_manifest(dest):
    path = os.path.join(dest, MANIFEST)
    try:
        with open(path, "rb") as reader:
            manifest = json.loads(reader.read().decode("utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path} is missing: not a backup, or one that did not finish") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or \
            not isinstance(manifest.get("files"), list):
        raise UsageError(f"{path} is not a manifest of format {FORMAT}")
    return manifest


def _safe(relative):
    parts = relative.split("/") if isinstance(relative, str) else [""]
    return relative and not relative.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def check_files(dest, manifest, problems):
    """Every file of the manifest is there with its size and SHA-256; returns {path: entry}."""
    listed = {}
    for entry in manifest["files"]:
        relative = entry.get("path") if isinstance(entry, dict) else None
        if not _safe(relative):
            problems.append(f"manifest: a bad file entry {entry!r}")
            continue
        listed[relative] = entry
        try:
            size, sha = _hash(os.path.join(dest, *relative.split("/")))
        except FileNotFoundError:
            problems.append(f"{relative}: missing")
            continue
        if size != entry.get("size"):
            problems.append(f"{relative}: {size} bytes, the manifest says {entry.get('size')}")
        elif sha != entry.get("sha256"):
            problems.append(f"{relative}: SHA-256 {sha} differs from the manifest's {entry.get('sha256')} "
                            "(the file is corrupt)")
    return listed


def check_database(dest, manifest, listed, problems):
    """integrity_check, the manifest's counts, and a file for every object row."""
    name = manifest.get("database")
    path = os.path.join(dest, name) if _safe(name) else None
    if path is None or name not in listed or not os.path.isfile(path):
        problems.append(f"database {name!r}: not in the backup")
        return
    try:
        conn = sqlite3.connect(_uri(path, "ro"), uri=True)
        try:
            cursor = conn.cursor()
            cursor.row_factory = sqlite3.Row
            result = [row["integrity_check"] for row in cursor.execute("PRAGMA integrity_check")]
        finally:
            conn.close()
        version, events, objects = read_copy(path)
    except sqlite3.DatabaseError as exc:
        problems.append(f"{name}: cannot be read as a database: {exc}")
        return
    if result != ["ok"]:
        problems.append(f"{name}: integrity_check: " + "; ".join(result[:10]))
    if (version, events) != (manifest.get("schema_version"), manifest.get("event_count")):
        problems.append(f"{name}: schema {version} with {events} events; the manifest says "
                        f"{manifest.get('schema_version')} with {manifest.get('event_count')}")
    for row in objects:
        entry = listed.get(object_path(row["file"]))
        label = f"object {row['customer_id']}/{row['key']}"
        if entry is None:
            problems.append(f"{label}: its file {object_path(row['file'])} is not in the backup")
        elif (entry.get("size"), entry.get("sha256")) != (row["size"], row["etag"]):
            problems.append(f"{label}: {object_path(row['file'])} does not match the object's size and ETag")


def verify(dest):
    """Problems found in the backup at DEST (an empty list: it is sound), and its manifest."""
    manifest = load_manifest(dest)
    problems = []
    listed = check_files(dest, manifest, problems)
    check_database(dest, manifest, listed, problems)
    return manifest, problems


# -- the command -------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python3 -m billing.backup",
                                     description="Back up Meterline's database, master key and files "
                                                 "into a new folder, or check such a backup.")
    parser.add_argument("dest", metavar="DEST", help="the backup folder (new or empty)")
    parser.add_argument("--verify", action="store_true", help="check the backup in DEST instead")
    parser.add_argument("--db", default=None, help="database file (default data/billing.db or $BILLING_DB)")
    parser.add_argument("--step-pages", type=int, default=STEP_PAGES, metavar="N",
                        help=f"database pages copied per step (default {STEP_PAGES})")
    return parser.parse_args(argv)


def _report(kind, dest, manifest, problems, out, err):
    files = manifest["files"]
    total = sum(e.get("size", 0) for e in files if isinstance(e, dict) and isinstance(e.get("size"), int))
    summary = (f"{len(files)} files, {total} bytes; {manifest.get('event_count')} events, "
               f"{manifest.get('object_count')} objects, schema {manifest.get('schema_version')}, "
               f"taken {manifest.get('created_at')}")
    if problems:
        print(f"{kind} {dest} FAILED ({len(problems)} problems):", file=err)
        for problem in problems:
            print(f"  {problem}", file=err)
        print(f"  ({summary})", file=err)
        return EXIT_FAILED
    print(f"{kind} {dest} ok: {summary}", file=out)
    return EXIT_OK


def main(argv=None, out=None, err=None):
    out, err = out or sys.stdout, err or sys.stderr
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.verify:
        try:
            manifest, problems = verify(args.dest)
        except (UsageError, OSError, sqlite3.Error) as exc:
            print(f"backup {args.dest} FAILED: {exc}", file=err)
            return EXIT_FAILED
        return _report("backup", args.dest, manifest, problems, out, err)
    try:
        config = Config.from_env(db_path=args.db)
        if args.step_pages < 1:
            raise UsageError("--step-pages must be at least 1")
        manifest, problems = backup(config, args.dest, args.step_pages)
    except (UsageError, ConfigError) as exc:
        print(f"backup: {exc}", file=err)
        return EXIT_USAGE
    except (OSError, sqlite3.Error) as exc:
        print(f"backup into {args.dest} FAILED: {type(exc).__name__}: {exc}", file=err)
        return EXIT_FAILED
    return _report("backed up into", args.dest, manifest, problems, out, err)


if __name__ == "__main__":
    sys.exit(main())
