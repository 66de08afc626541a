"""Small file-system helpers shared by everything that writes atomically."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` survive a power cut (a Pi gets unplugged)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, mode: int = 0o644, before_replace=None) -> None:
    """Replace `path` with `data` all at once: a temporary file in the same folder, created with
    `mode` from the start (a private key is never readable by others, not even for a moment),
    fsynced, renamed into place, the rename fsynced. A crash leaves the old file or the new one.
    `before_replace` runs once the new data is safely on disk, just before the rename (the
    config edit keeps the old file as .bak there)."""
    path = Path(path)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")   # 0600
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    fsync_directory(path.parent)


def file_signature(path) -> tuple[int, int, int] | None:
    """(mtime in ns, inode, size): what changes when a file is edited in place or replaced by a
    rename; None when it cannot be read. The daemon and the web UI reload the config on a change."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)
