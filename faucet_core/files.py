"""Files and folders of their owner's alone: the cache and saved plans hold the rows.

Folders are made 0700 and files 0600 whatever the umask; a file is written under a
temporary name and renamed, so a reader never sees half of it; a lock file makes
processes take turns. A folder of a process's own (a scratch copy, a spill folder) is
held for as long as the process lives (:func:`hold_folder`), so that a process killed
before it could delete it leaves nothing for good: another one deletes it
(:func:`remove_abandoned`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: no cross-process lock
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FolderHold",
    "file_lock",
    "hold_folder",
    "open_private",
    "private_folder",
    "remove_abandoned",
    "remove_folder",
    "write_private",
]

log = logging.getLogger(__name__)


def _hold_file(folder: Path) -> Path:
    """The file in a held folder that its holder keeps locked while it lives. It names the
    holder's host: only processes of that host judge whether the holder lives, wherever
    the folder is shared and however its file system carries locks between hosts."""
    host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())
    return folder / f".holder.{host}.lock"


def private_folder(path: Path) -> None:
    """Make the folder ``path`` if missing, and each missing parent: every folder made here
    is its owner's alone (0700, whatever the umask); existing ones are left as they are."""
    missing = [folder for folder in (path, *path.parents) if not folder.is_dir()]
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:  # made meanwhile by another process, or not a folder
            if not folder.is_dir():
                raise
            continue
        folder.chmod(0o700)


def open_private(path: Path) -> int:
    """A new file at ``path`` for writing, readable by its owner only (whatever the umask)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
    except OSError:
        os.close(descriptor)
        raise
    return descriptor


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file renamed), in a file
    readable by its owner only, whatever the umask.

    Raises:
        OSError: It could not be written.
    """
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(descriptor, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temp, path)
    except OSError:
        temp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing, its owner's alone) across
    processes."""
    private_folder(path.parent)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with open(descriptor, "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


class FolderHold:
    """A folder's holder: this process, for as long as it lives or until :meth:`release`.

    The lock of its hold file is the operating system's: it goes with the process, however
    the process ends. It stays with the folder through a rename.
    """

    def __init__(self, descriptor: int) -> None:
        self._descriptor: int | None = descriptor

    def release(self) -> None:
        """Let the folder go (call it once the folder is deleted, or to give it up)."""
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is not None:
            os.close(descriptor)  # closing drops the lock


def hold_folder(path: Path) -> FolderHold | None:
    """Hold the folder ``path`` (this process's, just made) while this process lives;
    ``None`` where the system has no such locks (Windows: nothing is held, and
    :func:`remove_abandoned` removes nothing).

    Raises:
        OSError: The folder's hold file could not be written.
    """
    if fcntl is None:  # pragma: no cover - Windows
        return None
    # Locked before it takes its name: a hold file is never seen unlocked while its
    # holder lives.
    hold_file = _hold_file(path)
    temp = hold_file.with_name(f"{hold_file.name}.{os.getpid()}.{threading.get_ident()}")
    descriptor = open_private(temp)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(temp, hold_file)
    except OSError:
        os.close(descriptor)
        temp.unlink(missing_ok=True)
        raise
    return FolderHold(descriptor)


def _take_over(path: Path) -> FolderHold | None:
    """Hold ``path`` in place of its holder if that process, of this host, has ended;
    ``None`` while it lives (or for a folder not held by a process of this host, or another
    user's)."""
    if fcntl is None:  # pragma: no cover - Windows
        return None
    hold_file = _hold_file(path)
    try:
        descriptor = os.open(hold_file, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Deleted meanwhile by another process that took it over: not this folder's.
        if not os.path.samestat(os.fstat(descriptor), hold_file.stat()):
            raise FileNotFoundError(hold_file)
    except OSError:  # held (BlockingIOError), gone, or no locks on this file system
        os.close(descriptor)
        return None
    return FolderHold(descriptor)


def remove_abandoned(root: Path, pattern: str) -> list[Path]:
    """Delete the folders in ``root`` whose names match ``pattern`` (a glob) that were
    held (:func:`hold_folder`) by processes of this host that have ended without deleting
    them (killed, say); returns them. Folders still held, folders never held and those of
    other hosts' processes are left alone."""
    removed = []
    for path in sorted(root.glob(pattern)):
        if path.is_symlink() or not path.is_dir():
            continue
        hold = _take_over(path)
        if hold is None:
            continue
        try:
            remove_folder(path)
        finally:
            hold.release()
        log.info("deleted %s, left by a process that ended without deleting it", path)
        removed.append(path)
    return removed


def remove_folder(path: Path) -> None:
    """Delete a folder that other processes may be reading: renamed away first, so that a
    reader sees all of it or none of it, never the part that deleting file by file has not
    reached yet."""
    gone = path.with_name(f".{path.name}.{uuid.uuid4().hex}.gone")
    try:
        path.rename(gone)
    except OSError:
        gone = path
    shutil.rmtree(gone, ignore_errors=True)
