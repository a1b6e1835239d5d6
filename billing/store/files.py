"""Object files on disk under `<data dir>/objects/`.

An upload streams into `tmp/<random>.part` in fixed-size chunks (hashed as it
goes), is fsynced, then renamed to `<2 hex>/<random>` — a server-chosen name,
never derived from the key — before the database row that points to it is
committed. So a reader never sees half an object: it opens the file its row
names, and an open file stays readable even if it is replaced meanwhile.
After a crash, `sweep()` at start removes temporary files and any file no row
points to (renamed but never committed, or replaced but not yet removed).
"""

import hashlib
import os
import secrets

CHUNK = 256 * 1024


class FileStore:
    def __init__(self, root):
        self.root = root
        self.tmp = os.path.join(root, "tmp")
        os.makedirs(self.tmp, exist_ok=True)

    def path(self, name):
        return os.path.join(self.root, name[:2], name)

    def new_upload(self):
        return Upload(self)

    def open(self, name):
        """The stored file for reading (FileNotFoundError if it is gone)."""
        return open(self.path(name), "rb")

    def remove(self, name):
        try:
            os.unlink(self.path(name))
        except FileNotFoundError:
            pass

    def sweep(self, referenced):
        """Remove temporary files and files whose name is not in `referenced`
        (a set); returns how many were removed."""
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
                    os.unlink(entry.path)
                    removed += 1
        return removed


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
