"""One writer per output folder: the lock a sweep holds on its ``--out`` for its whole run.

``OutLock(folder).acquire()`` takes the folder or refuses, in one MemprofError line, naming the
process that holds it; ``release`` lets it go. ``memprof.sweep.run`` takes it in ``plan`` (and in
``run_sweep`` for a caller that did not plan) and ``memprof compare`` releases it once the report
is written.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import socket
import sys
from pathlib import Path

from memprof.errors import MemprofError

try:
    import fcntl
except ImportError:  # Windows: see NOTE [One writer per output folder]
    fcntl = None  # type: ignore[assignment]

#: the lock file inside a locked folder; hidden, and removed on release
LOCK_FILE = ".memprof.lock"

# NOTE [One writer per output folder]: two sweeps writing one folder would each rewrite
# results.json from their own results, and the last writer wins: one run's results are lost
# although both exit 0. So a sweep holds ``fcntl.flock`` on ``<out>/.memprof.lock`` from ``plan``
# (before it checks for an existing results.json, so two new sweeps cannot both pass the check) to
# the last report file. flock belongs to the open file, so the kernel releases it when the holder
# dies however it dies: a lock file left behind is stale by construction and the next run simply
# locks it. The file holds the holder's pid, host and command line, for the refusal only. Release
# removes the file (the folder then holds only what the sweep wrote) *before* unlocking, and a
# run that has just locked checks the path still names the file it locked: a run that opened the
# file before the holder removed it would otherwise lock a file nobody else can see. Where a file
# system refuses locks (ENOLCK: some NFS mounts) and on platforms without fcntl (Windows) the
# sweep runs unlocked, as before: Linux and macOS are where the lock holds.

_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}


class OutLock:
    """The exclusive lock on one output folder (NOTE [One writer per output folder])."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> OutLock:
        """Take the folder, or MemprofError naming its holder; the folder must exist."""
        if fcntl is None:
            return self
        while self.fd is None:
            fd = self._open()
            if not self._lock(fd):
                return self
            if _same_file(fd, self.path):
                self.fd = fd
            else:  # the holder released and removed the file between our open and our lock
                os.close(fd)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, _holder_text().encode())
        return self

    def release(self) -> None:
        """Let the folder go (removing the lock file first); a lock not held is left alone."""
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise MemprofError(
                f"cannot create the lock file {str(self.path)!r} ({exc.strerror or exc}); pass an --out in a "
                "folder you can write to"
            ) from None

    def _lock(self, fd: int) -> bool:
        """Whether ``fd`` is now locked (False: the file system has no locks); MemprofError if held."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            holder = _describe(os.pread(fd, 4096, 0))
            os.close(fd)
            raise MemprofError(
                f"output folder {str(self.folder)!r} is being written by another memprof run ({holder}); "
                "wait for it to finish, or pass another --out"
            ) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno in _UNSUPPORTED:
                return False
            raise MemprofError(
                f"cannot lock {str(self.path)!r} ({exc.strerror or exc}); pass an --out on a local file system"
            ) from None


def _same_file(fd: int, path: Path) -> bool:
    try:
        mine, now = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)


def _holder_text() -> str:
    command = shlex.join(["memprof", *sys.argv[1:]]) if sys.argv else "memprof"
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command}) + "\n"


def _describe(raw: bytes) -> str:
    """``pid 12 on host: memprof compare ...`` from a lock file's text, on one line."""
    try:
        info = json.loads(raw)
        where = f"pid {int(info['pid'])} on {info['host']}: {info['command']}"
    except (ValueError, TypeError, KeyError):  # the holder has locked but not yet written
        return "pid unknown"
    where = where.replace("\r", " ").replace("\n", " ")
    return where if len(where) <= 200 else where[:197] + "..."
