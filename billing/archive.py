"""The archive command (§13 "Raw event retention"): the files of raw events
the server archived (BILLING_EVENT_RETENTION_DAYS) under <data dir>/archive/.

    python3 -m billing.archive [--db PATH] [--data-dir DIR] list          # the manifest, a file a line
    python3 -m billing.archive [--db PATH] [--data-dir DIR] verify        # every file against the manifest
    python3 -m billing.archive [--db PATH] [--data-dir DIR] restore FILE  # its events back into the database

The database and data directory are found as the server finds them
(BILLING_DB or --db, BILLING_DATA_DIR or --data-dir, else the database's
folder). `verify` checks each file's size and SHA-256 against the manifest,
that every line is an archived event and that the count matches. `restore`
verifies the file, then puts its events back into the database under their
own seqs, in short transactions: an event already stored (by seq) or
retracted since is skipped, so a restore run twice (or after a crash) never
duplicates one; the rollups already count the events, so no figure changes.
It then marks the file restored in the manifest (the file stays; events of
its month archived later go to a new file). Run `restore` while the server is
stopped, and raise or unset BILLING_EVENT_RETENTION_DAYS first, or the next
pass archives the events again.

Exit status: 0 done; 1 a check or the restore failed (each problem named on
stderr); 2 a usage error (no database, a file the manifest does not name).
"""

import argparse
import os
import sqlite3
import sys

from . import clock
from .config import Config, ConfigError
from .domain import times
from .store import archive, archive_files
from .store.db import Database

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Refused before anything was changed."""


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python3 -m billing.archive",
                                     description="List, check or restore Meterline's archived raw events.")
    parser.add_argument("command", choices=("list", "verify", "restore"))
    parser.add_argument("file", nargs="?", metavar="FILE", help="restore: the archive file's name (as listed)")
    parser.add_argument("--db", default=None, help="database file (default data/billing.db or $BILLING_DB)")
    parser.add_argument("--data-dir", default=None, help="data directory (default $BILLING_DATA_DIR, "
                                                         "else the database's folder)")
    return parser.parse_args(argv)


def _config(args):
    config = Config.from_env(db_path=args.db)
    if args.data_dir:
        config.data_dir = args.data_dir
    return config


def list_files(folder, out):
    manifest = archive_files.load_manifest(folder)
    for entry in manifest["files"]:
        state = f"restored {entry['restored_at']}" if entry.get("restored_at") else "archived"
        if entry.get("pending_from") is not None:
            state += ", deletion pending"
        print(f"{entry['file']}  {entry['events']} events  {entry['first_ts']} – {entry['last_ts']}  "
              f"{entry['bytes']} bytes  sha256 {entry['sha256']}  {state}", file=out)
    print(f"{len(manifest['files'])} files, {sum(e['events'] for e in manifest['files'])} events", file=out)


def verify(folder):
    """The problems of the archive (an empty list: every file matches its manifest entry)."""
    manifest = archive_files.load_manifest(folder)
    return [problem for problem in (archive_files.verify_entry(folder, e) for e in manifest["files"]) if problem]


def restore(config, name):
    """Put the events of the archive file `name` back; returns (events read, events restored)."""
    folder = config.archive_dir
    manifest = archive_files.load_manifest(folder)
    entry = archive_files.entry_of(manifest, name)
    if entry is None:
        raise UsageError(f"{name}: not in {os.path.join(folder, archive_files.MANIFEST)}")
    if entry.get("restored_at"):
        raise UsageError(f"{name}: already restored ({entry['restored_at']})")
    if not os.path.isfile(config.db_path):
        raise UsageError(f"no database at {config.db_path}")
    problem = archive_files.verify_entry(folder, entry)
    if problem:
        raise archive_files.ArchiveError(problem)
    db = Database(config.db_path, readers=1, background=False)
    read = restored = 0
    try:
        batch = []
        for record in archive_files.read_events(folder, entry):
            batch.append(record)
            if len(batch) == archive.RESTORE_CHUNK:
                read, restored = read + len(batch), restored + _restore_batch(db, batch)
                batch = []
        if batch:
            read, restored = read + len(batch), restored + _restore_batch(db, batch)
    finally:
        db.close()
    archive_files.mark_restored(folder, manifest, entry, times.to_micros(clock.now()))
    return read, restored


def _restore_batch(db, batch):
    with db.transaction() as conn:
        return archive.restore_chunk(conn, batch)


def main(argv=None, out=None, err=None):
    out, err = out or sys.stdout, err or sys.stderr
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = _config(args)
        if args.command == "list":
            list_files(config.archive_dir, out)
            return EXIT_OK
        if args.command == "verify":
            problems = verify(config.archive_dir)
            for problem in problems:
                print(f"archive FAILED: {problem}", file=err)
            if not problems:
                print(f"archive {config.archive_dir} ok", file=out)
            return EXIT_FAILED if problems else EXIT_OK
        if not args.file:
            raise UsageError("restore needs FILE: the name of an archive file (see `list`)")
        read, restored = restore(config, args.file)
        print(f"restored {restored} events of {read} from {args.file} ({read - restored} were stored already "
              "or retracted)", file=out)
        return EXIT_OK
    except (UsageError, ConfigError) as exc:
        print(f"archive: {exc}", file=err)
        return EXIT_USAGE
    except (archive_files.ArchiveError, OSError, EOFError, ValueError, sqlite3.Error) as exc:
        print(f"archive {args.command} FAILED: {exc}", file=err)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
