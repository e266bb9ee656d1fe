"""Run a command as the unprivileged user `nobody`, from root: `python tests/as_nobody.py -- CMD ...`.

CI runs the tests as root, but the sandbox must also hold for a user without privileges (how
JupyterLab is usually run). This helper runs CMD as uid and gid 65534 (nobody on Debian; the ids
are used directly, so no passwd entry is needed and no user is created) with no supplementary
groups, in a private mount namespace of its own, where:

- folders nobody cannot enter on the way to the interpreter, the virtual environment, the
  repository and PYTHONPATH (a pyenv under a 0700 /root) are replaced by an empty tmpfs that
  holds only the entries on those paths, bound back from the real tree;
- HOME is /root, which in that namespace is such a tmpfs holding `.ssh/id_ed25519`, a fake key
  owned by nobody, so a test can check that a sandboxed program cannot read its user's ~/.ssh.

Nothing outside the namespace changes, and nothing is left behind when CMD ends. Needs root and
Linux (unshare, mount); stdlib only.
"""

import ctypes
import os
import sys
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_BIND, MS_REC, MS_PRIVATE = 4096, 0x4000, 1 << 18
FAKE_KEY = "-----FAKE KEY FOR THE SANDBOX TESTS-----\n"
NOBODY = 65534  # uid and gid

libc = ctypes.CDLL(None, use_errno=True)


def check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def raw(text):
        return None if text is None else text.encode()

    check(libc.mount(raw(source), raw(target), raw(fstype), ctypes.c_ulong(flags), raw(data)), f"mount {target}")


def needed_paths() -> list[Path]:
    """What CMD (this interpreter, running the repository's tests) must be able to reach."""
    here = Path(__file__).resolve().parents[1]
    paths = [Path(os.path.realpath(sys.executable)), Path(sys.base_prefix), Path(sys.prefix), here]
    paths += [Path(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    paths += [Path(p) for p in sys.path if p and os.path.isabs(p)]
    return [p.resolve() for p in paths if p.exists()]


def blocked_folders(paths: list[Path]) -> dict[Path, set[str]]:
    """Folders on those paths that others cannot enter, each with the entries that must stay."""
    blocked: dict[Path, set[str]] = {Path("/root"): set()}  # always replaced: it becomes HOME
    for path in paths:
        for parent, child in zip(path.parents, [path, *path.parents]):
            if parent == child:
                continue
            if parent in blocked or not os.stat(parent).st_mode & 0o001:
                blocked.setdefault(parent, set()).add(child.name)
    return blocked


def replace_with_view(folder: Path, keep: set[str]) -> None:
    """Mount an empty 0755 tmpfs over `folder` and bind the entries of `keep` back into it."""
    fds = {name: os.open(folder / name, os.O_PATH) for name in keep}  # opened before the tmpfs hides them
    mount("tmpfs", str(folder), "tmpfs", 0, "mode=0755,size=1m")
    for name, fd in fds.items():
        target = folder / name
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            target.mkdir()
        else:
            target.touch()
        mount(f"/proc/self/fd/{fd}", str(target), None, MS_BIND | MS_REC)


def main(argv: list[str]) -> None:
    if os.geteuid() != 0 or "--" not in argv:
        sys.exit("usage (as root): python tests/as_nobody.py -- CMD [ARGS...]")
    command = argv[argv.index("--") + 1 :]
    check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    for folder, keep in sorted(blocked_folders(needed_paths()).items(), key=lambda item: len(item[0].parts)):
        replace_with_view(folder, keep)
    ssh = Path("/root/.ssh")
    ssh.mkdir(mode=0o700)
    (ssh / "id_ed25519").write_text(FAKE_KEY)
    for path in (ssh, ssh / "id_ed25519"):
        os.chown(path, NOBODY, NOBODY)
    os.chmod(ssh / "id_ed25519", 0o600)
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    os.environ.update(HOME="/root", USER="nobody", LOGNAME="nobody")
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
