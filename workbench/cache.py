"""Where built artefacts live, and how files and folders are written so a crash leaves no half.

Everything the workbench builds (the demo model, converted checkpoints, hash results) sits
under one cache folder, `$WORKBENCH_CACHE` or `~/.cache/codefuse-workbench`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import CacheError


def cache_dir() -> Path:
    """The cache root, created if needed; a clear CacheError if it cannot be written."""
    root = Path(os.environ.get("WORKBENCH_CACHE") or Path.home() / ".cache" / "codefuse-workbench")
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=root, prefix=".probe-", delete=True)
        probe.close()
    except OSError as e:
        raise CacheError(
            f"the cache folder {root} is not writable ({e.strerror or e}). Set WORKBENCH_CACHE "
            "to a folder you can write, e.g. `export WORKBENCH_CACHE=$PWD/.cache`."
        ) from None
    return root


@contextlib.contextmanager
def building_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; rename it into place only if the block succeeds.

    An interrupted or failed build leaves nothing at `final` and removes its temporary folder.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(final)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.building-{os.getpid()}-"))
    try:
        yield tmp
        if final.exists():  # another process finished first: keep theirs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_orphans(final: Path) -> None:
    """Remove temporary build folders whose process is gone (killed before it could clean up)."""
    for tmp in final.parent.glob(f".{final.name}.building-*"):
        pid = tmp.name.rsplit(".building-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename: readers never see half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; reports should read like any other file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
