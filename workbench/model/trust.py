"""What the workbench will read from a checkpoint folder, and the code it will never run.

A checkpoint folder is untrusted input. Three rules keep it from doing more than hold weights:

- **No code.** transformers and gptqmodel import Python files named by a folder's configs
  (`auto_map` in config.json, tokenizer_config.json, ...; `custom_pipelines`; a
  `custom_generate/` folder), and gptqmodel resolves `auto_map` on its own whatever
  `trust_remote_code` says. `refuse_remote_code` finds every such hook and refuses the folder
  before any library sees it, unless the caller passed `trust_remote_code=True`.
- **Regular files only.** A FIFO, a device or a link to `/dev/zero` would hang a hash or fill
  memory; `open_regular` refuses them before reading a byte (the check is made on the opened
  file, so swapping the file after the check does not help).
- **An allow-list of side files.** A converted copy receives configs and tokenizer files by
  name (`SIDE_FILES`), never Python.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from ..errors import CheckpointError, UnsafeCheckpoint

# Keys through which transformers (or gptqmodel) imports code shipped with a checkpoint.
CODE_HOOK_KEYS = ("auto_map", "custom_pipelines")
CODE_HOOK_FOLDERS = ("custom_generate",)  # transformers runs custom_generate/generate.py when trusted
CODE_SUFFIXES = (".py", ".pyc", ".so")
# The files besides the weights that a loader may read, and so a converted copy receives.
SIDE_FILES = frozenset({
    "config.json", "generation_config.json", "quantize_config.json", "quant_config.json",
    "special_tokens_map.json", "tokenizer_config.json", "tokenizer.json", "tokenizer.model",
    "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
})
MAX_SIDE_FILE_BYTES = 64 << 20  # tokenizer.json of large vocabularies is ~20 MB; a config is KBs


def open_regular(file, what: str = "file"):
    """Open `file` for binary reading; CheckpointError unless it is a regular file.

    O_NONBLOCK keeps the open itself from hanging on a FIFO; fstat on the opened descriptor
    judges what was actually opened (a link is followed, so a link to a regular file is fine)."""
    file = Path(file)
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise CheckpointError(f"{file}: cannot open this {what} ({e.strerror or e})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise CheckpointError(f"{file}: this {what} is not a regular file ({_kind(mode)}); refused before "
                              "reading it. Replace it with the real file.")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def require_regular(file, what: str = "file") -> os.stat_result:
    """The stat of `file`, following links; CheckpointError unless it is a regular file."""
    with open_regular(file, what) as f:
        return os.fstat(f.fileno())


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a plain file"


def read_small_file(file, limit: int = MAX_SIDE_FILE_BYTES) -> bytes:
    """The bytes of a regular file no larger than `limit` (configs, tokenizer files)."""
    with open_regular(file, "config file") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise CheckpointError(f"{file} is larger than {limit >> 20} MiB; not a config file the workbench reads")
    return data


def read_json_config(file) -> dict:
    """A JSON object from a config file of the folder; CheckpointError for anything else."""
    try:
        data = json.loads(read_small_file(file).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file} is not valid JSON ({e}); the download may be truncated") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{file} holds a JSON {type(data).__name__}, not an object; not a config file")
    return data


# --- code hooks ------------------------------------------------------------------------------

def find_code_hooks(path) -> list[str]:
    """Every place in the folder `path` through which a library would import code, described.

    Each JSON file at the top of the folder is read whole (hooks may sit in nested configs,
    e.g. text_config.auto_map); a file that is not JSON is not a config and holds no hook."""
    path = Path(path)
    hooks = []
    for file in sorted(path.glob("*.json")):
        try:
            data = json.loads(read_small_file(file).decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        hooks += [f"{file.name}: {where} = {_short(value)}" for where, value in _hook_keys(data, "")]
    hooks += [f"{name}/ (a folder of code that transformers runs)" for name in CODE_HOOK_FOLDERS
              if (path / name).exists()]
    return hooks


def _hook_keys(data, prefix: str):
    if isinstance(data, dict):
        for key, value in data.items():
            where = f"{prefix}.{key}" if prefix else str(key)
            if key in CODE_HOOK_KEYS:
                yield where, value
            else:
                yield from _hook_keys(value, where)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _hook_keys(value, f"{prefix}[{i}]")


def _short(value) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 160 else text[:157] + "..."


def code_files(path) -> list[str]:
    """Python (and compiled extension) files at the top of the folder."""
    return sorted(p.name for p in Path(path).iterdir() if p.name.endswith(CODE_SUFFIXES))


def refuse_remote_code(path, trust_remote_code: bool = False) -> list[str]:
    """Raise UnsafeCheckpoint if the folder asks for its own code to be run, unless trusted.

    Returns the hooks found (empty for an ordinary checkpoint), so a trusted load can record them."""
    if not isinstance(trust_remote_code, bool):
        raise CheckpointError(f"trust_remote_code={trust_remote_code!r}: allowed True or False")
    hooks = find_code_hooks(path)
    if hooks and not trust_remote_code:
        files = code_files(path)
        raise UnsafeCheckpoint(
            f"{path}: refused: the checkpoint asks for code from the folder to be run ("
            + "; ".join(hooks) + ")" + (f"; it holds {', '.join(files)}" if files else "")
            + ". The card's checkpoint needs no code of its own. Remove the hook, or pass "
            "trust_remote_code=True if you have read that code and trust it.")
    return hooks


def is_side_file(name: str) -> bool:
    """A file a converted copy may receive: configs and tokenizer files, never code."""
    return name in SIDE_FILES
