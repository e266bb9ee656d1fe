"""What a GPTQ checkpoint folder holds, whether it is intact, and how it becomes loadable.

- `detect_layout` tells AutoGPTQ 0.4.2's pickle layout (the real CodeFuse checkpoint), AutoGPTQ
  with safetensors, and the Hugging Face / gptqmodel layout apart.
- `prepare_checkpoint` hands gptqmodel a folder it can load. gptqmodel refuses pickles, so an
  AutoGPTQ `.bin` is converted once into a cached safetensors copy. The pickle is read only with
  `torch.load(weights_only=True)` (memory-mapped, so a 19 GB file never sits in RAM) and
  AutoGPTQ's packing is kept bit for bit.
  The copy receives allow-listed side files only (configs, tokenizer files: trust.py) and is keyed
  by the SHA256 of every file it is made from, so editing any of them makes a new copy.
- `verify_checkpoint` re-hashes every file and checks it against the card's table or, for a
  folder whose weights are not the card's, the folder's own `SHA256SUMS`, reported as
  "self-declared": nothing outside the folder vouches for it. A folder holding the card's
  weights is always held to the card's table, whatever its manifest says.
- Hashes are cached (docs/checkpoints.md says how far the cache is trusted): `verify` uses the
  cache only when asked (`trust_cache=True`, `--trust-cache`) and names the files it answered.
- `dequantize_gptq_v1` decodes AutoGPTQ's original ("v1") packing: the reference every kernel
  is compared with.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..cache import atomic_write_json, atomic_write_text, building_dir, cache_dir
from ..errors import CheckpointError, ChecksumMismatch, UnsafeCheckpoint
from ..prompts.formats import CHAT_TEMPLATE_FILE, write_chat_template
from .tensors import TensorInfo, expected_tensors, info_of, match_tensors, read_safetensors_header
from .trust import (
    code_files,
    find_code_hooks,
    is_side_file,
    open_regular,
    read_json_config,
    read_small_file,
    refuse_remote_code,
    require_regular,
)

# The card's consistency-check table (docs/model-facts.md).
CARD_SHA256 = {
    "config.json": "bd1b92f942549f76d7e02e65fd346b39903943912d6d6a2ff8ff345e43e1115b",
    "generation_config.json": "b625bd13a52d0685313c32919324b9bdc9e75a4f1338ca5c28226d1693e130a3",
    "gptq_model-4bit-64g.bin": "79441bad1d5ab852d0238ed7e113b9912f31189cf9181d7119dd297c4beb454a",
    "pytorch_model.bin.index.json": "9a714170172282cfbcaa120af13c0df08b06d040ff24dab30229d8a010821d3d",
    "quantize_config.json": "3c1744a928e9d6c3f9a2cbb1bb5a89539077e7d456948bf5aee0deed6a7b8028",
    "special_tokens_map.json": "ff3b4a612c4e447acb02d40071bddd989fe0da87eb5b7fe0dbadfc4f74de7531",
    "tokenizer.json": "f7b50bcf6d6672eade5e43514d48e9c1e4e63a56aef7b14acdaca94ce93436f7",
    "tokenizer.model": "9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347",
    "tokenizer_config.json": "c12441e82f2dce0baff87cf5948e82d6e9b51cc0b5266369c30c319fb771eeb2",
}
CARD_WEIGHTS_FILE = "gptq_model-4bit-64g.bin"
# Published files the workbench never reads (the slow tokenizer uses tokenizer.model): a download
# without them still verifies.
CARD_OPTIONAL_FILES = frozenset({"tokenizer.json", "pytorch_model.bin.index.json"})

MANIFEST = "SHA256SUMS"
# The config.json keys that mark the checkpoints the workbench writes itself (`model_kind`).
DEMO_MARKER, SYNTHETIC_MARKER = "workbench_demo", "workbench_synthetic"
CONVERTED_WEIGHTS = "model.safetensors"  # a basename gptqmodel looks for
SUPPORTED_BITS = (2, 3, 4, 8)  # AutoGPTQ's settings; kernels narrow this further
CONVERTER_VERSION = 3  # bump when the converted copy's content would change (2: allow-listed side files;
#                       3: the chat template written)
CONVERSION_NOTE = "workbench_converted.json"  # written last: its presence means the copy is complete
_RACY_WINDOW_S = 2.0  # a file modified this close to its hashing may change unnoticed: don't cache
_PROBE_BYTES = 1 << 20  # a cached digest is used only if three blocks this size still hash the same
_PROGRESS_MIN_BYTES = 256 << 20
_CHUNK_BYTES = 16 << 20


class Layout(str, Enum):
    AUTOGPTQ_BIN = "autogptq_bin"  # gptq_model-4bit-64g.bin + quantize_config.json: the real model
    AUTOGPTQ_SAFETENSORS = "autogptq_safetensors"  # the same, weights in safetensors
    HF = "hf"  # quantization_config inside config.json (gptqmodel, transformers, optimum)


@dataclass(frozen=True)
class GPTQSettings:
    """The quantization settings a loader and a kernel must agree with."""

    bits: int
    group_size: int  # -1 = one group per column
    desc_act: bool  # act-order: g_idx is a permuted group index
    sym: bool
    checkpoint_format: str = "gptq"  # "gptq" = AutoGPTQ's v1 packing (zero stored minus one)
    lm_head: bool = False  # the output embedding is quantized too (never in the card's checkpoint)

    @classmethod
    def from_dict(cls, d: dict, source: str) -> "GPTQSettings":
        if not isinstance(d, dict):
            raise CheckpointError(f"{source}: a JSON {type(d).__name__}, not an object of GPTQ settings")
        method = str(d.get("quant_method", "gptq")).lower()
        if method != "gptq":
            raise CheckpointError(f"{source}: quant_method={method!r}; the workbench loads GPTQ checkpoints only")
        try:
            s = cls(bits=int(d["bits"]), group_size=int(d.get("group_size", -1)),
                    desc_act=bool(d.get("desc_act", False)), sym=bool(d.get("sym", True)),
                    checkpoint_format=str(d.get("checkpoint_format", d.get("format", "gptq"))).lower(),
                    lm_head=bool(d.get("lm_head", False)))
        except KeyError as e:
            raise CheckpointError(f"{source}: no {e.args[0]!r} field; is this a GPTQ quantize config?") from None
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{source}: a field is not a number where one is needed ({e})") from None
        if s.bits not in SUPPORTED_BITS:
            raise CheckpointError(f"{source}: bits={s.bits} is not a GPTQ setting the workbench supports "
                                  f"(bits must be one of {SUPPORTED_BITS})")
        if s.group_size != -1 and s.group_size <= 0:
            raise CheckpointError(f"{source}: group_size={s.group_size}; must be -1 or a positive integer")
        return s


@dataclass(frozen=True)
class VerifyResult:
    """What a verification checked, against what, and which digests it did not compute itself."""

    path: Path
    # "card": the card's published table; "self-declared": the folder's own SHA256SUMS, which only
    # shows the files are as the folder says (nothing outside the folder vouches for them).
    source: str
    sha256: dict[str, str]  # file name -> SHA256, every file checked
    missing_optional: tuple[str, ...]  # listed, absent, and not needed to load
    unlisted: tuple[str, ...]  # present but not in the table (README, .gitattributes, ...)
    seconds: float
    from_cache: tuple[str, ...] = ()  # files whose digest came from the hash cache, not a re-hash
    # Whether the folder holds the card's weights: None when no file has their name, False when a
    # file has their name but not their SHA256 (a demo, a synthetic or a modified checkpoint).
    card_weights: bool | None = None

    @property
    def against_card(self) -> bool:
        """True only when every file was checked against the card's published table."""
        return self.source == "card"


@dataclass(frozen=True)
class TensorSpec:
    """A tensor's name, dtype and shape: enough to lay out a safetensors header before any data."""

    name: str
    dtype: "torch.dtype"  # noqa: F821  (torch is imported lazily)
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        import torch

        n = 1
        for d in self.shape:
            n *= d
        return n * torch.empty((), dtype=self.dtype).element_size()


# --- what is in the folder ------------------------------------------------------------------

def _folder(path) -> Path:
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a folder; give the checkpoint's folder")
    if not any(path.iterdir()):
        raise CheckpointError(f"{path} is empty; expected config.json, quantize_config.json and the weights")
    return path


def weight_files(path) -> list[Path]:
    """The weights: safetensors files if any, else pickles (`*.bin`); sorted. Each must be a
    regular file (a FIFO or a link to a device would hang whatever reads it)."""
    path = _folder(path)
    found = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    if not found:
        names = ", ".join(sorted(p.name for p in path.iterdir())[:12])
        raise CheckpointError(f"{path} has no weights (*.safetensors or *.bin); it holds: {names}")
    for f in found:
        require_regular(f, "weights file")
    return found


def detect_layout(path) -> Layout:
    """Which of the three GPTQ layouts `path` is; CheckpointError if none (says what is missing)."""
    path = _folder(path)
    config = path / "config.json"
    if not config.exists():
        raise CheckpointError(f"{path} has no config.json; not a transformers checkpoint folder")
    if "quantization_config" in read_json_config(config):
        weight_files(path)
        return Layout.HF
    if not (path / "quantize_config.json").exists():
        raise CheckpointError(
            f"{path} has no quantize_config.json and its config.json has no quantization_config: "
            "not a GPTQ checkpoint, or quantize_config.json was not downloaded with the weights")
    return Layout.AUTOGPTQ_SAFETENSORS if weight_files(path)[0].suffix == ".safetensors" else Layout.AUTOGPTQ_BIN


def read_gptq_settings(path) -> GPTQSettings:
    """Bits, group size, act-order and symmetry, from quantize_config.json or config.json."""
    path = _folder(path)
    if detect_layout(path) is Layout.HF:
        return GPTQSettings.from_dict(read_json_config(path / "config.json")["quantization_config"],
                                      f"{path / 'config.json'} quantization_config")
    return GPTQSettings.from_dict(read_json_config(path / "quantize_config.json"), str(path / "quantize_config.json"))


def model_kind(path) -> str:
    """What a model folder holds: "synthetic" (random weights in the real layout, model/synthetic.py),
    "demo" (the small trained stand-in, model/demo.py) or "checkpoint" (anything else: the real
    model or another GPTQ checkpoint). Their writers mark the first two in config.json. Raises
    CheckpointError for a config.json that is not JSON."""
    config = Path(path) / "config.json"
    data = read_json_config(config) if config.is_file() else {}
    if data.get(SYNTHETIC_MARKER):
        return "synthetic"
    return "demo" if data.get(DEMO_MARKER) else "checkpoint"


def is_synthetic(path) -> bool:
    """True for checkpoints written by model/synthetic.py (random weights, not a trained model)."""
    return model_kind(path) == "synthetic"


def read_generation_config(path) -> dict | None:
    """The checkpoint's generation_config.json as plain JSON (None when it has none): the decoding
    settings its authors shipped, shown beside the card's. Read as data, never as code."""
    file = _folder(path) / "generation_config.json"
    if not os.path.lexists(file):
        return None
    return read_json_config(file)  # a regular file holding a JSON object, or CheckpointError


# --- hashing, with a cache that must prove itself -------------------------------------------------

def progress_bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False,
                disable=not enabled or total < _PROGRESS_MIN_BYTES)


def _hash_cache_file(file: Path, st: os.stat_result) -> Path:
    # ctime is in the key because no user call can set it: rewriting a file in place and putting
    # its mtime back (os.utime) still moves its ctime, so the old entry no longer answers.
    ident = f"{file.resolve()}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"
    return cache_dir() / "sha256" / (hashlib.sha256(ident.encode()).hexdigest()[:32] + ".json")


def _probe(f, size: int) -> str:
    """SHA256 of three blocks (start, middle, end): a cheap check that a cached digest still
    describes the bytes, for file systems whose ctime cannot be relied on."""
    h = hashlib.sha256()
    for offset in sorted({0, max(0, size // 2 - _PROBE_BYTES // 2), max(0, size - _PROBE_BYTES)}):
        f.seek(offset)
        h.update(f.read(_PROBE_BYTES))
    f.seek(0)
    return h.hexdigest()


def _cached_digest(entry: Path, f, st: os.stat_result) -> str | None:
    try:
        cached = json.loads(entry.read_text())
        digest, probe = cached["sha256"], cached["probe"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None  # no entry, a damaged one, or one from before probes: hash again
    return digest if probe == _probe(f, st.st_size) else None


def file_digest(file, progress: bool = True, use_cache: bool = True) -> tuple[str, bool]:
    """(SHA256 of a regular file, whether it came from the hash cache).

    The cache answers only with `use_cache`, only for the same path, device, inode, size, mtime
    and ctime, and only if a probe of three blocks still hashes as it did. Anything that is not
    a regular file (a FIFO, a device, a link to /dev/zero) is refused before a byte is read."""
    file = Path(file)
    with open_regular(file, "file to hash") as f:
        st = os.fstat(f.fileno())
        entry = _hash_cache_file(file, st)
        if use_cache and (digest := _cached_digest(entry, f, st)) is not None:
            return digest, True
        started = time.time()
        h = hashlib.sha256()
        with progress_bar(st.st_size, f"sha256 {file.name}", progress) as bar:
            while chunk := f.read(_CHUNK_BYTES):
                h.update(chunk)
                bar.update(len(chunk))
        digest, probe, after = h.hexdigest(), _probe(f, st.st_size), os.fstat(f.fileno())
    # Like git's racy-timestamp rule: file times tick coarsely, so a write right after the file's
    # last change could leave its times unchanged. Only a file quiet for a while, and unchanged
    # while it was hashed, is cached.
    quiet = started - max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 > _RACY_WINDOW_S
    if quiet and (after.st_mtime_ns, after.st_ctime_ns, after.st_size) == (st.st_mtime_ns, st.st_ctime_ns, st.st_size):
        atomic_write_json(entry, {"path": str(file.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                  "ctime_ns": st.st_ctime_ns, "probe": probe, "sha256": digest})
    return digest, False


def file_sha256(file, progress: bool = True, use_cache: bool = True) -> str:
    """SHA256 of a file (see file_digest for when the cache answers)."""
    return file_digest(file, progress, use_cache)[0]


def read_manifest(file: Path) -> dict[str, str]:
    """`sha256sum` output: '<sha256>  <name>' lines ('*' before the name allowed, '#' comments)."""
    expected = {}
    text = read_small_file(file).decode("utf-8", errors="replace")
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, sep, name = line.partition(" ")
        name = name.strip().lstrip("*")
        if not sep or len(digest) != 64 or not name or any(c not in "0123456789abcdefABCDEF" for c in digest):
            raise CheckpointError(f"{file}:{n}: expected '<sha256>  <file name>', got {line!r}")
        if "/" in name or name in (".", ".."):
            raise CheckpointError(f"{file}:{n}: {name!r} is not a file of this folder")
        expected[name] = digest.lower()
    return expected


class _Hashes:
    """The digests one verification computes, each file hashed at most once."""

    def __init__(self, path: Path, progress: bool, use_cache: bool):
        self.path, self.progress, self.use_cache = path, progress, use_cache
        self.sha256: dict[str, str] = {}
        self.from_cache: list[str] = []

    def __call__(self, name: str) -> str:
        if name not in self.sha256:
            self.sha256[name], cached = file_digest(self.path / name, self.progress, self.use_cache)
            if cached:
                self.from_cache.append(name)
        return self.sha256[name]


def verify_checkpoint(path, progress: bool = True, trust_cache: bool = False) -> VerifyResult:
    """Check every file's SHA256 against the card's table or the folder's own SHA256SUMS.

    A folder holding the card's weights file is held to the card's table: when the weights are
    the card's, every file is checked against the card whatever the folder's manifest says.
    Otherwise the folder's SHA256SUMS is used and the result says "self-declared". Every file
    is re-hashed unless `trust_cache`; the result names the files the cache answered for.
    A mismatch raises ChecksumMismatch(file, expected, actual)."""
    path = _folder(path)
    started = time.perf_counter()
    hashes = _Hashes(path, progress, trust_cache)
    has_manifest = (path / MANIFEST).exists()
    card_weights = None
    if (path / CARD_WEIGHTS_FILE).exists() or (path / CARD_WEIGHTS_FILE).is_symlink():
        card_weights = hashes(CARD_WEIGHTS_FILE) == CARD_SHA256[CARD_WEIGHTS_FILE]
    if card_weights or (card_weights is False and not has_manifest):
        source, expected, optional = "card", CARD_SHA256, CARD_OPTIONAL_FILES
    elif has_manifest:
        source, expected, optional = "self-declared", read_manifest(path / MANIFEST), frozenset()
    else:
        raise CheckpointError(
            f"{path}: nothing to verify against: no {MANIFEST} and the weights are not the published "
            f"{CARD_WEIGHTS_FILE}. Write one with `cd {path} && sha256sum * > {MANIFEST}` once you trust "
            "the files, or load with verify=False.")
    missing = sorted(name for name in expected if not _present(path / name))
    if required := [name for name in missing if name not in optional]:
        raise CheckpointError(f"{path}: missing {', '.join(required)} (listed in the {source} checksums)")
    present = {p.name for p in path.iterdir() if _present(p) and p.name != MANIFEST}
    unlisted = sorted(present - set(expected))
    if risky := [n for n in unlisted if n.endswith((".bin", ".safetensors", ".index.json")) or is_side_file(n)]:
        add = f" or add it to {MANIFEST}" if source != "card" else ""
        raise CheckpointError(f"{path}: {', '.join(risky)} would be read when loading but is not in the "
                              f"{source} checksums; remove it{add}")
    for name in sorted(set(expected) - set(missing)):
        if (actual := hashes(name)) != expected[name]:
            raise ChecksumMismatch(str(path / name), expected[name], actual)
    return VerifyResult(path, source, {n: hashes.sha256[n] for n in sorted(set(expected) - set(missing))},
                        tuple(missing), tuple(unlisted), time.perf_counter() - started,
                        from_cache=tuple(sorted(hashes.from_cache)), card_weights=card_weights)


def write_manifest(folder, *, note: str | None = None, known: dict[str, str] | None = None) -> Path:
    """Write the folder's SHA256SUMS over every other file in it, in `sha256sum`'s format (what
    `verify_checkpoint` and `sha256sum -c` read). `note` goes first as a '#' line; `known` maps
    file names to digests already computed (a weights file hashed as it was written)."""
    folder, known = Path(folder), known or {}
    lines = [f"# {note}"] if note else []
    for f in sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST):
        lines.append(f"{known.get(f.name) or file_sha256(f, progress=False)}  {f.name}")
    atomic_write_text(folder / MANIFEST, "\n".join(lines) + "\n")
    return folder / MANIFEST


def _present(p: Path) -> bool:
    """Present as a file: a regular file, or anything else that is not a folder (a FIFO or a
    link to a device counts, so that hashing refuses it rather than calling it missing)."""
    return (p.exists() or p.is_symlink()) and not p.is_dir()


def checkpoint_hash(path, progress: bool = True, digests: dict[str, str] | None = None) -> str:
    """A short stable identity for records: the weights' SHA256 (first 16 hex digits).

    Several weight files are combined as the SHA256 of their 'name:sha256' lines. `digests`
    (a verification's, freshly computed) are used where given; other files go through the
    hash cache."""
    digests = digests or {}
    files = weight_files(path)
    sha = {f.name: digests.get(f.name) or file_sha256(f, progress) for f in files}
    if len(files) == 1:
        return sha[files[0].name][:16]
    lines = "".join(f"{name}:{digest}\n" for name, digest in sha.items())
    return hashlib.sha256(lines.encode()).hexdigest()[:16]

# --- reading pickles safely, writing safetensors ----------------------------------------------

def load_pickled_state_dict(file) -> dict:
    """A state dict from a torch pickle, read with weights_only=True and memory-mapped.

    Anything the weights-only unpickler refuses (a pickle that would call a function, import a
    module or build an object) raises UnsafeCheckpoint before any of it runs; so does a pickle
    that unpickles to something other than a flat {name: tensor} dict.
    """
    import torch

    file = Path(file)
    with open(file, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # torch.save's zip format; mmap needs it
    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsafeCheckpoint(
            f"{file}: refused to unpickle it: it holds more than plain tensors ({first}). "
            "Loading it normally could run code from the file; get the checkpoint from a trusted "
            "source and compare its SHA256 with the card's.") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{file} cannot be read as a torch checkpoint ({e}); it may be truncated") from None
    if not isinstance(state, dict):
        raise UnsafeCheckpoint(f"{file} unpickles to a {type(state).__name__}, not a dict of tensors")
    odd = [k for k, v in state.items() if not isinstance(k, str) or type(v) is not torch.Tensor]
    if odd:
        raise UnsafeCheckpoint(f"{file}: entries {odd[:5]} are not plain tensors; expected a flat state dict")
    return state


_SAFETENSORS_DTYPES = {
    "float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64", "int8": "I8",
    "uint8": "U8", "int16": "I16", "int32": "I32", "int64": "I64", "bool": "BOOL",
}


def write_safetensors(file, specs: Sequence[TensorSpec], produce: Callable[[str], object],
                      metadata: dict[str, str] | None = None, progress: bool = True) -> str:
    """Write a safetensors file one tensor at a time and return its SHA256.

    The header is laid out from `specs` first; `produce(name)` is then asked for each tensor in
    turn, so only one tensor needs to exist at a time (safetensors' own save_file copies every
    tensor into memory first, which a 19 GB checkpoint cannot afford).
    """
    import torch

    header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for s in specs:
        dtype = _SAFETENSORS_DTYPES[str(s.dtype).removeprefix("torch.")]
        header[s.name] = {"dtype": dtype, "shape": list(s.shape), "data_offsets": [offset, offset + s.nbytes]}
        offset += s.nbytes
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the data starts 8-byte aligned
    h = hashlib.sha256()
    file = Path(file)

    def write(t) -> None:
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy()  # no copy for contiguous tensors
        for start in range(0, raw.size, _CHUNK_BYTES):
            chunk = memoryview(raw[start:start + _CHUNK_BYTES])
            f.write(chunk)
            h.update(chunk)
            bar.update(len(chunk))

    # One writer thread: while it writes and hashes a tensor (both release the GIL), the next one
    # is produced. At most two tensors exist at a time.
    with open(file, "wb") as f, progress_bar(offset, f"writing {file.name}", progress) as bar, \
            ThreadPoolExecutor(max_workers=1) as writer:
        for chunk in (struct.pack("<Q", len(head)), head):
            f.write(chunk)
            h.update(chunk)
        pending = None
        for s in specs:
            t = produce(s.name)
            if t.dtype != s.dtype or tuple(t.shape) != tuple(s.shape):
                raise CheckpointError(f"{s.name}: produced {t.dtype} {tuple(t.shape)}, header says {s.dtype} {s.shape}")
            if pending is not None:
                pending.result()
            pending = writer.submit(write, t)
        if pending is not None:
            pending.result()
    return h.hexdigest()


# --- a folder gptqmodel can load -------------------------------------------------------------

def _gptqmodel_finds(path: Path, settings: GPTQSettings) -> bool:
    """gptqmodel only looks for these safetensors basenames (plus their .index.json)."""
    bases = [f"gptq_model-{settings.bits}bit-{settings.group_size}g", "model"]
    return any((path / f"{b}.safetensors").exists() or (path / f"{b}.safetensors.index.json").exists()
               for b in bases)


def model_tensors(path, settings: GPTQSettings | None = None) -> tuple[dict[str, TensorInfo], set[str]]:
    """The tensors the model of `path`'s config.json and quantize config needs ({name: info}), and
    those it may also hold (AutoGPTQ's zero biases): see tensors.expected_tensors."""
    settings = settings or read_gptq_settings(path)
    return expected_tensors(path, settings.bits, settings.group_size, settings.lm_head)


def checkpoint_tensors(files: list[Path]) -> dict[str, TensorInfo]:
    """The tensors safetensors files declare, read from their headers (no data is read)."""
    found: dict[str, TensorInfo] = {}
    for f in files:
        header = read_safetensors_header(f)
        if dup := set(found) & set(header):
            raise CheckpointError(f"{f}: tensors {sorted(dup)[:3]} also appear in another weights file")
        found |= header
    return found


def check_checkpoint_tensors(path, settings: GPTQSettings | None = None) -> None:
    """CheckpointError unless the checkpoint's tensors match the model of its config.json one to
    one (for loaders that read the folder as it is; prepare_checkpoint checks its own)."""
    path = _folder(path)
    expected, optional = model_tensors(path, settings)
    files = weight_files(path)
    if files[0].suffix == ".safetensors":
        found = checkpoint_tensors(files)
    else:
        state = _merge_states([load_pickled_state_dict(f) for f in files], files)
        found = {name: info_of(t) for name, t in state.items()}
    match_tensors(found, expected, optional, str(path))


def side_files(path) -> list[str]:
    """The allow-listed side files the folder holds (trust.SIDE_FILES), each a regular file."""
    names = [p.name for p in sorted(Path(path).iterdir()) if is_side_file(p.name)]
    for name in names:
        require_regular(Path(path) / name, "side file")
    return names


def conversion_inputs(path, progress: bool = True, digests: dict[str, str] | None = None,
                      trust_remote_code: bool = False) -> dict[str, str]:
    """Every file a converted copy of `path` is made from -> its SHA256: the weights, the
    allow-listed side files (configs, tokenizer) and, only when trusted, the folder's code.
    Side files are small and always re-hashed; the weights' digests come from `digests` (a
    verification's) or the hash cache."""
    path = _folder(path)
    digests = digests or {}
    inputs = {f.name: digests.get(f.name) or file_sha256(f, progress) for f in weight_files(path)}
    names = side_files(path) + (code_files(path) if trust_remote_code else [])
    return inputs | {name: file_sha256(path / name, progress=False, use_cache=False) for name in names}


def converted_folder(path, progress: bool = True, digests: dict[str, str] | None = None,
                     trust_remote_code: bool = False) -> Path:
    """Where prepare_checkpoint keeps (or will keep) the converted copy of `path`: named by the
    SHA256 of every file it is made from and the converter's version, so that editing any of
    them (config.json's layers, quantize_config.json's bits, ...) makes a new copy."""
    return _folder_for(conversion_inputs(path, progress, digests, trust_remote_code))


def _folder_for(inputs: dict[str, str]) -> Path:
    lines = "".join(f"{name}:{digest}\n" for name, digest in sorted(inputs.items()))
    key = hashlib.sha256(f"{lines}converter:{CONVERTER_VERSION}\n".encode()).hexdigest()[:16]
    return cache_dir() / "converted" / f"{key}-v{CONVERTER_VERSION}"


def prepare_checkpoint(path, progress: bool = True, digests: dict[str, str] | None = None,
                       trust_remote_code: bool = False, expected: tuple[dict, set] | None = None) -> Path:
    """A folder gptqmodel can load, holding exactly the tensors the model of config.json needs.

    `path` itself when gptqmodel can read it as it is (safetensors under a name it looks for, and
    no code in the folder unless trusted); else a copy cached under cache_dir()/converted/ (see
    converted_folder), built once: the pickle converted to safetensors (packing unchanged) or the
    safetensors linked, with the allow-listed side files. A folder that asks for its own code to
    run is refused unless `trust_remote_code`. `digests`: a verification's SHA256s, so the weights
    are not hashed again. `expected`: model_tensors(path), when the caller has it already."""
    path = _folder(path)
    refuse_remote_code(path, trust_remote_code)
    detect_layout(path)
    settings = read_gptq_settings(path)
    files = weight_files(path)
    side_files(path)  # a FIFO or device among them would hang whatever library reads it next
    expected, optional = expected or model_tensors(path, settings)
    in_place = files[0].suffix == ".safetensors"
    if in_place:
        match_tensors(checkpoint_tensors(files), expected, optional, str(path))
        _check_unused_biases(path, files)
        if _gptqmodel_finds(path, settings) and (trust_remote_code or not code_files(path)):
            return path
    inputs = conversion_inputs(path, progress, digests, trust_remote_code)
    final = _folder_for(inputs)
    if (final / CONVERSION_NOTE).exists():
        return final
    if in_place:  # loadable data under a name gptqmodel ignores, or beside code: link it
        names = [f.name for f in files] if _gptqmodel_finds(path, settings) else [CONVERTED_WEIGHTS]
        if len(names) != len(files):
            raise CheckpointError(f"{path}: {len(files)} safetensors files under names gptqmodel does not read "
                                  "and no index; rename them as model-0000N-of-0000M.safetensors with an index")
        with building_dir(final) as out:
            _copy_side_files(path, out, inputs, trust_remote_code)
            _write_chat_template(out)
            for f, name in zip(files, names):
                (out / name).symlink_to(f.resolve())
            _write_conversion_note(out, path, inputs, 0.0, linked=True, trust_remote_code=trust_remote_code)
        return final
    started = time.perf_counter()
    states = [load_pickled_state_dict(f) for f in files]  # refuse unsafe pickles before touching the cache
    state = _merge_states(states, files)
    state = _drop_autogptq_zero_biases(state, read_json_config(path / "config.json"))
    match_tensors({name: info_of(t) for name, t in state.items()}, expected, optional, str(path))
    specs = [TensorSpec(name, t.dtype, tuple(t.shape)) for name, t in state.items()]
    with building_dir(final) as out:
        sha = write_safetensors(out / CONVERTED_WEIGHTS, specs, state.__getitem__, {"format": "pt"}, progress)
        _copy_side_files(path, out, inputs, trust_remote_code)
        _write_chat_template(out)
        _write_conversion_note(out, path, inputs, time.perf_counter() - started, linked=False,
                               trust_remote_code=trust_remote_code, weights_sha256=sha)
    return final


def _merge_states(states: list[dict], files: list[Path]) -> dict:
    merged: dict = {}
    for state, file in zip(states, files):
        if dup := set(merged) & set(state):
            raise CheckpointError(f"{file}: tensors {sorted(dup)[:3]} also appear in another weights file")
        merged.update(state)
    return merged


def _drop_autogptq_zero_biases(state: dict, config: dict) -> dict:
    """AutoGPTQ 0.4.2 saves a bias for every quantized linear, all zeros for Llama, which has none.
    Dropped so the state matches the model; a non-zero one would change the model: an error."""
    if config.get("attention_bias") or config.get("mlp_bias"):
        return state
    out = {}
    for name, t in state.items():
        if name.endswith(".bias") and name.removesuffix(".bias") + ".qweight" in state:
            if bool(t.any()):
                raise CheckpointError(f"{name} is non-zero but config.json declares no bias for this model")
            continue
        out[name] = t
    return out


def _check_unused_biases(path: Path, files: list[Path]) -> None:
    """gptqmodel ignores (with a warning) biases the model has no place for; AutoGPTQ's all-zero
    ones are harmless, a non-zero one would silently change the model."""
    from safetensors import safe_open

    if (config := read_json_config(path / "config.json")).get("attention_bias") or config.get("mlp_bias"):
        return
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            names = set(f.keys())
            for name in (n for n in names if n.endswith(".bias") and n.removesuffix(".bias") + ".qweight" in names):
                if bool(f.get_tensor(name).any()):
                    raise CheckpointError(f"{file.name}: {name} is non-zero but config.json declares no bias; "
                                          "gptqmodel would drop it and change the model")


def _copy_side_files(src: Path, out: Path, inputs: dict[str, str], trust_remote_code: bool) -> None:
    """The allow-listed side files (and, only when trusted, the folder's code), each checked
    against the digest the copy is keyed by; then the copies are searched for code hooks, so
    that a file swapped during the copy cannot bring one in."""
    for name, digest in inputs.items():
        if not (is_side_file(name) or (trust_remote_code and name in code_files(src))):
            continue  # the weights: converted or linked by the caller
        data = read_small_file(src / name)
        if hashlib.sha256(data).hexdigest() != digest:
            raise CheckpointError(f"{src / name} changed while the converted copy was made; try again")
        (out / name).write_bytes(data)
    refuse_remote_code(out, trust_remote_code)


def _write_chat_template(out: Path) -> None:
    """The copy is a folder the workbench creates: tools that read a chat template from a folder
    find the model's there (a template the source folder brought is kept)."""
    if not (out / CHAT_TEMPLATE_FILE).exists():
        write_chat_template(out, "codefuse")


def _write_conversion_note(out: Path, src: Path, inputs: dict[str, str], seconds: float, linked: bool,
                           trust_remote_code: bool, weights_sha256: str | None = None) -> None:
    atomic_write_json(out / CONVERSION_NOTE, {
        "source": str(src.resolve()), "inputs_sha256": inputs,
        "how": "symlink" if linked else "pickle -> safetensors, packing unchanged",
        "weights_sha256": weights_sha256, "seconds": round(seconds, 3), "converter_version": CONVERTER_VERSION,
        "trust_remote_code": trust_remote_code,
    })


def conversion_seconds(prepared: Path) -> float | None:
    """How long building this converted copy took (None for an original folder)."""
    note = Path(prepared) / CONVERSION_NOTE
    return float(read_json_config(note)["seconds"]) if note.exists() else None


# --- AutoGPTQ's v1 packing --------------------------------------------------------------------

def dequantize_gptq_v1(qweight, qzeros, scales, g_idx, bits: int):
    """Float32 weight [in_features, out_features] from AutoGPTQ's v1 packing.

    qweight int32 [in / (32/bits), out]: 32/bits codes per int32 along the input dim, lowest bits
    first. qzeros int32 [groups, out / (32/bits)]: packed along the output dim, storing zero - 1
    (v1's convention). scales [groups, out]. g_idx int32 [in]: the group of each input row.
    w[i, j] = scales[g, j] * (q[i, j] - (z[g, j] + 1)) with g = g_idx[i].
    """
    import torch

    if 32 % bits:
        raise CheckpointError(f"bits={bits}: codes straddle int32 words; only 2, 4 and 8 bits are decoded here")
    mask = (1 << bits) - 1
    shifts = torch.arange(0, 32, bits, dtype=torch.int32)  # [per_word]
    q = (qweight.unsqueeze(1) >> shifts.view(1, -1, 1)) & mask  # [in/per_word, per_word, out]
    q = q.reshape(-1, qweight.shape[1])  # [in, out]
    z = (qzeros.unsqueeze(2) >> shifts.view(1, 1, -1)) & mask  # [groups, out/per_word, per_word]
    z = z.reshape(qzeros.shape[0], -1) + 1  # [groups, out]
    g = g_idx.long()
    return scales.float()[g] * (q - z[g]).float()


def gptq_module_names(names: Iterable[str]) -> list[str]:
    """The quantized linears in a state dict: every prefix that has a .qweight."""
    return sorted(n.removesuffix(".qweight") for n in names if n.endswith(".qweight"))


def read_state_dict(path) -> dict:
    """Every tensor of a checkpoint, memory-mapped where the format allows (safetensors, zip pickles)."""
    from safetensors.torch import load_file

    state: dict = {}
    for f in weight_files(path):
        state.update(load_file(str(f)) if f.suffix == ".safetensors" else load_pickled_state_dict(f))
    return state


# --- command line ------------------------------------------------------------------------------

def describe(result: VerifyResult) -> str:
    """What a verification vouches for, in one paragraph: against the card, or only the folder's word."""
    cached = f"; {len(result.from_cache)} digests from the hash cache ({', '.join(result.from_cache)})" \
        if result.from_cache else "; every file re-hashed"
    if result.source == "card":
        return f"{len(result.sha256)} files match the card's published SHA256s{cached}"
    head = f"{len(result.sha256)} files match the folder's own {MANIFEST}: SELF-DECLARED, nothing outside the " \
           f"folder vouches for them; not verified against the card{cached}"
    if result.card_weights is False:
        head += (f". {CARD_WEIGHTS_FILE} is NOT the card's published file (card SHA256 "
                 f"{CARD_SHA256[CARD_WEIGHTS_FILE][:16]}..., this one {result.sha256[CARD_WEIGHTS_FILE][:16]}...)")
    return head


def main(argv: list[str]) -> int:
    """`python -m workbench verify PATH [--trust-cache]`: check a checkpoint's SHA256s."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m workbench verify",
                                     description="Re-hash every file of a checkpoint and check it against the "
                                                 "card's SHA256 table or, for a folder whose weights are not the "
                                                 "card's, the folder's own SHA256SUMS (reported as self-declared).")
    parser.add_argument("path", help="the checkpoint folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--trust-cache", action="store_true",
                        help="take digests from the hash cache where it has them (same path, inode, size, mtime "
                             "and ctime, and three sampled blocks unchanged) instead of re-hashing; the output "
                             "names the files the cache answered for")
    args = parser.parse_args(argv)
    result = verify_checkpoint(args.path, progress=not args.no_progress, trust_cache=args.trust_cache)
    for name, digest in result.sha256.items():
        print(f"OK  {digest}  {name}" + ("  (from the hash cache)" if name in result.from_cache else ""))
    for name in result.missing_optional:
        print(f"--  (absent, not needed to load)  {name}")
    hooks = find_code_hooks(result.path)
    for hook in hooks:
        print(f"!!  code hook (load_model refuses it without trust_remote_code=True): {hook}")
    print(f"{result.path}: {describe(result)} ({result.seconds:.1f} s); layout {detect_layout(result.path).value}"
          + ("; SYNTHETIC (random weights)" if is_synthetic(result.path) else ""))
    return 0
