"""One writer per report folder: a lock file that names its holder.

Two runners writing into one folder overwrite each other's files, and one can print the other's
numbers as its own. The lock is an `flock` on `OUT/.workbench-report.lock`, which holds the
holder's pid, host, start time and command line: the operating system releases it when the
holder dies however it dies, so a lock left by a dead runner is simply taken over, and a live
holder is named in the error.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..errors import ConfigError

LOCK_NAME = ".workbench-report.lock"


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a folder's lock."""

    pid: int
    host: str
    started_at: str  # ISO 8601, UTC
    command: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started_at} ({self.command})"

    @classmethod
    def me(cls) -> Holder:
        return cls(pid=os.getpid(), host=socket.gethostname(),
                   started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   command=" ".join([os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]])[:300])


def _read_holder(fd: int) -> Holder | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0))
        return Holder(**data)
    except (OSError, ValueError, TypeError):  # empty, cut off, or from another version
        return None


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[Holder | None]:
    """Hold `folder`'s lock for the block; yields the previous holder when it left the lock behind.

    Raises ConfigError naming the holder when another process holds it, or saying why the
    folder cannot be written.
    """
    fd = _acquire(folder)
    previous = _read_holder(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(Holder.me())).encode(), 0)
        yield previous
    finally:
        # Unlink before closing: whoever opened the old file meanwhile sees it gone and retries.
        with contextlib.suppress(OSError):
            os.unlink(folder / LOCK_NAME)
        os.close(fd)


def _acquire(folder: Path) -> int:
    path = folder / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise ConfigError(f"out={folder}: cannot write there ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            who = holder.describe() if holder else "a process that has not written its name yet"
            raise ConfigError(f"out={folder}: another report runner is writing there: {who}. Wait for it, "
                              f"stop it, or pass another --out") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder released and removed it between our open and our flock
