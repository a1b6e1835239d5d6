"""Object files on disk under `<data dir>/objects/`.

An upload streams into `tmp/<random>.part` in fixed-size chunks (hashed as it
goes), is fsynced, then renamed to `<2 hex>/<random>` — a server-chosen name,
never derived from the key — before the database row that points to it is
committed. So a reader never sees half an object: it opens the file its row
names, and an open file stays readable even if it is replaced meanwhile.

A deleted or replaced object's file is not removed at once: `retire()` moves
it to `trash/<name>.<unix seconds of the deletion>`, and `purge_trash()` (the
scheduler, and `sweep()` at start) removes it once `TRASH_GRACE_SECONDS` have
passed. A backup that copied the database just before the deletion still
finds the file there (`find()`). After a crash, `sweep()` at start removes
temporary files and moves to the trash any file no row points to (renamed but
never committed, or replaced but not yet moved).
"""

import hashlib
import os
import secrets

from .. import clock

CHUNK = 256 * 1024
TRASH = "trash"
TRASH_GRACE_SECONDS = 3600  # a deleted object's file is kept this long (for backups in progress)


class FileStore:
    def __init__(self, root, grace_seconds=TRASH_GRACE_SECONDS):
        self.root = root
        self.tmp = os.path.join(root, "tmp")
        self.trash = os.path.join(root, TRASH)  # made when a file first goes there
        self.grace_seconds = grace_seconds
        os.makedirs(self.tmp, exist_ok=True)

    def path(self, name):
        return os.path.join(self.root, name[:2], name)

    def new_upload(self):
        return Upload(self)

    def open(self, name):
        """The stored file for reading (FileNotFoundError if it is gone)."""
        return open(self.path(name), "rb")

    def retire(self, name):
        """The object no longer points to this file: move it to the trash,
        stamped with the deletion time; purge_trash() removes it after the grace."""
        os.makedirs(self.trash, exist_ok=True)
        stamp = int(clock.now().timestamp())
        try:
            os.rename(self.path(name), os.path.join(self.trash, f"{name}.{stamp}"))
        except FileNotFoundError:
            pass

    def find(self, name):
        """The path of a stored file, live or in the trash (None if it is gone)."""
        return find_file(self.root, name)

    def purge_trash(self):
        """Remove the trashed files deleted at least the grace period ago;
        returns how many were removed."""
        try:
            entries = list(os.scandir(self.trash))
        except FileNotFoundError:
            return 0
        cutoff = int(clock.now().timestamp()) - self.grace_seconds
        removed = 0
        for entry in entries:
            stamp = entry.name.rpartition(".")[2]
            if not stamp.isdigit() or int(stamp) <= cutoff:  # a name not ours: nothing keeps it
                try:
                    os.unlink(entry.path)
                    removed += 1
                except (FileNotFoundError, IsADirectoryError, PermissionError):
                    pass
        return removed

    def sweep(self, referenced):
        """At start: remove temporary files, move files whose name is not in
        `referenced` (a set) to the trash, and purge the trash; returns how
        many files were removed or moved."""
        removed = 0
        for entry in os.scandir(self.tmp):
            if entry.is_file():
                os.unlink(entry.path)
                removed += 1
        for folder in os.scandir(self.root):
            if not folder.is_dir() or folder.name == "tmp" or len(folder.name) != 2:
                continue
            for entry in os.scandir(folder.path):
                if entry.is_file() and entry.name not in referenced:
                    self.retire(entry.name)
                    removed += 1
        return removed + self.purge_trash()


def find_file(root, name):
    """The path of the file `name` under the objects folder `root`, live or in
    the trash (None if it is gone). Reads only: a backup calls it too."""
    live = os.path.join(root, name[:2], name)
    if os.path.exists(live):
        return live
    try:
        entries = list(os.scandir(os.path.join(root, TRASH)))
    except FileNotFoundError:
        return None
    for entry in entries:
        if entry.name.rpartition(".")[0] == name:
            return entry.path
    return None


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Upload:
    """One upload in progress: write(), then place() (or discard())."""

    def __init__(self, store):
        self.store = store
        self.name = secrets.token_hex(16)
        self.temp_path = os.path.join(store.tmp, self.name + ".part")
        self.file = open(self.temp_path, "xb")
        self.size = 0
        self.digest = hashlib.sha256()
        self.placed = False

    def write(self, data):
        self.file.write(data)
        self.digest.update(data)
        self.size += len(data)

    @property
    def etag(self):
        return self.digest.hexdigest()

    def place(self):
        """Make the bytes durable and move them to their final name."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        final = self.store.path(self.name)
        folder = os.path.dirname(final)
        os.makedirs(folder, exist_ok=True)
        os.rename(self.temp_path, final)
        _fsync_dir(folder)
        self.placed = True
        return self.name

    def discard(self):
        """Remove whatever was written (temporary or placed but not committed)."""
        if not self.file.closed:
            self.file.close()
        for path in (self.temp_path, self.store.path(self.name)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
