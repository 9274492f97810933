"""Crash-safe file writing (temporary file, fsync, rename), file hashes, and
an exclusive directory lock."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Optional


def fsync_dir(path: Path) -> None:
    """Persist a directory's entries (a rename inside it); best effort."""
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


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a crash leaves the old or the new
    content, never a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines file (metrics.jsonl). A line torn by a kill
    ends the list: it and anything after it are dropped. A missing file is
    an empty list."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        break
    except FileNotFoundError:
        pass
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class LockHeld(OSError):
    """Another live process holds the lock."""


class DirLock:
    """An exclusive lock on a directory, held until `release()` or the
    process's death (flock(2) on `<dir>/.lock`; the kernel drops it when
    the holder dies, so a killed process never leaves a lock that blocks).

    The file names the holder (pid, host, time) while it is held and is
    emptied on release: finding it non-empty but unlocked means its holder
    was killed, and `stale` then describes that holder."""

    NAME = ".lock"
    _fd: Optional[int] = None

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / self.NAME
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise LockHeld(f"{directory} is in use by {holder}") from None
        except BaseException:
            os.close(fd)
            raise
        self.stale = os.pread(fd, 4096, 0).decode(errors="replace").strip() or None
        me = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, me.encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)  # drops the flock

    def __del__(self) -> None:
        self.release()
