"""What a checkpoint folder may and may not make the workbench do, and generation's limits.

Issue 18's attacks on loading, each rebuilt from the tiny synthetic checkpoint (or the demo model)
and each refused: code hooks in a folder's configs, Python files slipped into a converted copy, a
folder's own SHA256SUMS vouching for files the card publishes, a hash cache answering for a file
rewritten in place, a converted copy that ignores edited configs, weights that do not fit the
model config.json defines, malformed safetensors headers, FIFOs and devices as weights. Then
generation: the context, non-finite and tiny numbers in DecodeConfig, top_logprobs, token ids.
"""

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.errors import CheckpointError, ChecksumMismatch, ConfigError, PromptError, UnsafeCheckpoint
from workbench.generation.config import DecodeConfig
from workbench.generation.generate import generate, generate_ids
from workbench.model import checkpoint
from workbench.model.checkpoint import (
    CARD_SHA256,
    CARD_WEIGHTS_FILE,
    Layout,
    checkpoint_hash,
    file_sha256,
    prepare_checkpoint,
    verify_checkpoint,
)
from workbench.model.checkpoint import (
    main as verify_main,
)
from workbench.model.load import load_model, load_reference_model
from workbench.model.synthetic import write_synthetic_checkpoint
from workbench.prompts.encoding import prompt_ids_of_length

REPO = Path(__file__).resolve().parents[1]
MARKER_CODE = "import pathlib, os\npathlib.Path(os.environ['WB_TEST_MARKER']).write_text('code from the folder ran')\n"


@pytest.fixture(scope="module")
def tiny_bin(tmp_path_factory) -> Path:
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("trust") / "tiny", "tiny", Layout.AUTOGPTQ_BIN,
                                      progress=False)


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory) -> Path:
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("trust") / "tiny-hf", "tiny", Layout.HF, progress=False)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def marker(tmp_path, monkeypatch) -> Path:
    """A file that the folder's code writes if it ever runs."""
    path = tmp_path / "code-ran.txt"
    monkeypatch.setenv("WB_TEST_MARKER", str(path))
    return path


def copy_of(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_json(file: Path, **changes) -> None:
    file.write_text(json.dumps(json.loads(file.read_text()) | changes))


def certify(path: Path) -> None:
    """Rewrite the folder's SHA256SUMS so it vouches for whatever the folder now holds, as an
    attacker would: a self-declared manifest proves nothing."""
    lines = [f"{hashlib.sha256((path / n).read_bytes()).hexdigest()}  {n}"
             for n in sorted(os.listdir(path)) if n != "SHA256SUMS" and (path / n).is_file()]
    (path / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def evil_folder(src: Path, dst: Path, config_file: str = "config.json", hook: dict | None = None) -> Path:
    """`src` with a code hook in `config_file` naming evil.py, which writes the marker when imported."""
    path = copy_of(src, dst)
    (path / "evil.py").write_text(MARKER_CODE + "from transformers import LlamaConfig, LlamaForCausalLM\n"
                                  "class EvilConfig(LlamaConfig):\n    pass\n"
                                  "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n")
    file = path / config_file
    data = json.loads(file.read_text()) if file.exists() else {}
    file.write_text(json.dumps(data | (hook or {"auto_map": {"AutoConfig": "evil.EvilConfig",
                                                             "AutoModelForCausalLM": "evil.EvilModel"}})))
    certify(path)
    return path


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter with this tree's package; a hang fails instead of blocking the suite."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    try:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {timeout} s: reading a non-regular file hangs")


# --- 1. no code from a checkpoint folder ------------------------------------------------------------

def test_auto_map_in_config_is_refused_before_gptqmodel_sees_the_folder(tiny_bin, tmp_path, marker):
    """The issue's attack: model_type llama plus auto_map naming a .py file of the folder, with a
    manifest that certifies it. gptqmodel imported that file even with trust_remote_code unset."""
    path = evil_folder(tiny_bin, tmp_path / "evil")
    for verify in (True, False):
        with pytest.raises(UnsafeCheckpoint, match=r"config.json: auto_map = .*evil.EvilModel.*holds evil.py"):
            load_model(path, kernel="torch", device="cpu", verify=verify)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpoint, match="auto_map"):
        load_reference_model(path)
    with pytest.raises(UnsafeCheckpoint, match="auto_map"):
        prepare_checkpoint(path, progress=False)
    assert not marker.exists()


@pytest.mark.parametrize("config_file, hook", [
    ("tokenizer_config.json", {"auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", None]}}),
    ("quantize_config.json", {"auto_map": {"AutoModelForCausalLM": "evil.EvilModel"}}),
    ("generation_config.json", {"custom_pipelines": {"evil": {"impl": "evil.Pipe"}}}),
    ("config.json", {"text_config": {"auto_map": {"AutoModel": "evil.EvilModel"}}}),  # nested
    ("processor_config.json", {"auto_map": {"AutoProcessor": "evil.Proc"}}),  # any config file
])
def test_every_code_hook_is_refused_and_named(tiny_bin, tmp_path, marker, config_file, hook):
    path = evil_folder(tiny_bin, tmp_path / "evil", config_file, hook)
    key = next(iter(hook))
    with pytest.raises(UnsafeCheckpoint, match=rf"{config_file}: .*{key}"):
        load_model(path, kernel="torch", device="cpu")
    assert not marker.exists()


def test_a_custom_generate_folder_is_a_hook(tiny_bin, tmp_path):
    path = copy_of(tiny_bin, tmp_path / "cg")
    (path / "custom_generate").mkdir()
    (path / "custom_generate" / "generate.py").write_text(MARKER_CODE)
    with pytest.raises(UnsafeCheckpoint, match="custom_generate/"):
        load_model(path, kernel="torch", device="cpu", verify=False)


def test_the_autogptq_loader_refuses_remote_code_the_same_way(tiny_bin, tmp_path, marker):
    from workbench.model.autogptq_engine import load_autogptq
    from workbench.model.registry import KERNELS

    path = evil_folder(tiny_bin, tmp_path / "evil")
    with pytest.raises(UnsafeCheckpoint, match="auto_map"):  # refused before it even asks for auto_gptq
        load_autogptq(path, KERNELS["autogptq-cuda-old"], "autogptq-cuda-old", "cpu", None)
    assert not marker.exists()


def test_trust_remote_code_true_is_the_only_way_through(tiny_bin, tmp_path, marker):
    """With the caller's explicit consent the hook passes, and the converted copy then carries the
    folder's code (gptqmodel would import it from there); the record says so."""
    path = evil_folder(tiny_bin, tmp_path / "evil")
    with pytest.raises(CheckpointError, match="trust_remote_code='yes': allowed True or False"):
        load_model(path, kernel="torch", device="cpu", trust_remote_code="yes")
    prepared = prepare_checkpoint(path, progress=False, trust_remote_code=True)
    assert (prepared / "evil.py").read_text() == (path / "evil.py").read_text()
    assert json.loads((prepared / "workbench_converted.json").read_text())["trust_remote_code"] is True
    untrusted = copy_of(tiny_bin, tmp_path / "plain")
    assert prepare_checkpoint(untrusted, progress=False) != prepared  # trusted code is part of the key
    assert not marker.exists()  # preparing runs nothing


def test_a_converted_copy_gets_allow_listed_side_files_only(tiny_bin, tmp_path):
    path = copy_of(tiny_bin, tmp_path / "extras")
    (path / "evil.py").write_text(MARKER_CODE)  # no hook names it: still never copied
    (path / "helper.so").write_bytes(b"\x7fELF")
    (path / "README.md").write_text("notes")
    (path / "chat_template.jinja").write_text("{{ messages }}")
    prepared = prepare_checkpoint(path, progress=False)
    assert sorted(p.name for p in prepared.iterdir()) == sorted([
        "chat_template.jinja", "config.json", "generation_config.json", "model.safetensors", "quantize_config.json",
        "special_tokens_map.json", "tokenizer.model", "tokenizer_config.json", "workbench_converted.json"])


def test_a_folder_loadable_in_place_is_not_handed_over_with_its_code(tiny_hf, tmp_path):
    """gptqmodel copies a local folder's .py files into transformers' module cache: a folder with
    code is loaded through a copy holding the allow-listed files and links to the weights."""
    path = copy_of(tiny_hf, tmp_path / "hf-with-code")
    (path / "modeling_llama.py").write_text(MARKER_CODE)
    prepared = prepare_checkpoint(path, progress=False)
    assert prepared != path and not list(prepared.glob("*.py"))
    assert (prepared / "model.safetensors").resolve() == (path / "model.safetensors").resolve()
    assert prepare_checkpoint(tiny_hf, progress=False) == tiny_hf  # a clean folder is read where it is


def test_a_folder_with_the_cards_weights_is_held_to_the_card_whatever_its_manifest_says(tiny_bin, tmp_path,
                                                                                        monkeypatch):
    """Pretend the tiny checkpoint's files are the card's published ones; then edit config.json
    and let the folder's SHA256SUMS vouch for the edit. The card's table must still decide."""
    published = {n: hashlib.sha256((tiny_bin / n).read_bytes()).hexdigest()
                 for n in CARD_SHA256 if (tiny_bin / n).is_file()}
    monkeypatch.setattr(checkpoint, "CARD_SHA256", {**CARD_SHA256, **published})
    path = copy_of(tiny_bin, tmp_path / "card")
    (path / "chat_template.jinja").unlink(missing_ok=True)  # the published files have none: not in the card's table
    assert verify_checkpoint(path, progress=False).source == "card"  # its manifest is not what vouched
    edit_json(path / "config.json", rope_theta=1.0)
    certify(path)
    with pytest.raises(ChecksumMismatch) as e:
        verify_checkpoint(path, progress=False)
    assert e.value.file.endswith("config.json") and e.value.expected == published["config.json"]


def test_a_self_declared_manifest_never_reads_as_verified_against_the_card(tiny_bin, capsys):
    result = verify_checkpoint(tiny_bin, progress=False)
    assert result.source == "self-declared" and not result.against_card
    assert result.card_weights is False  # named like the card's weights, and not them
    assert verify_main([str(tiny_bin), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "SELF-DECLARED" in out and "not verified against the card" in out
    assert f"{CARD_WEIGHTS_FILE} is NOT the card's published file" in out


@pytest.mark.slow
def test_the_load_record_says_self_declared(demo_loaded):
    rec = demo_loaded.load_record
    assert rec.verified and rec.verify_source == "self-declared" and rec.card_weights is False
    assert rec.verify_from_cache == [] and rec.trust_remote_code is False and rec.code_hooks == []


# --- 2. honest verification and a converted copy keyed by every input --------------------------------

def rewrite_in_place(file: Path) -> None:
    """Flip a byte in the middle and put the old mtime back: size and mtime as before."""
    st = file.stat()
    with open(file, "r+b") as f:
        f.seek(st.st_size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (file.stat().st_size, file.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_verify_rehashes_a_file_corrupted_in_place_with_size_and_mtime_kept(tiny_bin, tmp_path, monkeypatch, capsys):
    path = copy_of(tiny_bin, tmp_path / "corrupt")
    monkeypatch.setattr(checkpoint, "_RACY_WINDOW_S", -1.0)  # every file old enough to be cached
    good = verify_checkpoint(path, progress=False)
    assert file_sha256(path / CARD_WEIGHTS_FILE, progress=False) == good.sha256[CARD_WEIGHTS_FILE]  # cached now
    rewrite_in_place(path / CARD_WEIGHTS_FILE)
    with pytest.raises(ChecksumMismatch):
        verify_checkpoint(path, progress=False)
    with pytest.raises(ChecksumMismatch):  # the CLI, as the issue ran it
        verify_main([str(path), "--no-progress"])
    with pytest.raises(ChecksumMismatch):  # even when the cache may answer: the file's ctime moved
        verify_checkpoint(path, progress=False, trust_cache=True)
    with pytest.raises(ChecksumMismatch):  # a load verifies the same way (it recorded verified: true)
        load_model(path, kernel="torch", device="cpu")
    actual = hashlib.sha256((path / CARD_WEIGHTS_FILE).read_bytes()).hexdigest()
    assert checkpoint_hash(path, progress=False) == actual[:16]  # the identity records carry, unverified


def test_the_cache_answers_only_when_asked_and_the_result_says_so(tiny_bin, tmp_path, monkeypatch, capsys):
    path = copy_of(tiny_bin, tmp_path / "cached")
    monkeypatch.setattr(checkpoint, "_RACY_WINDOW_S", -1.0)
    assert verify_checkpoint(path, progress=False).from_cache == ()
    assert verify_checkpoint(path, progress=False).from_cache == ()  # the default re-hashes
    cached = verify_checkpoint(path, progress=False, trust_cache=True)
    assert CARD_WEIGHTS_FILE in cached.from_cache
    assert verify_main([str(path), "--no-progress", "--trust-cache"]) == 0
    assert f"{CARD_WEIGHTS_FILE}  (from the hash cache)" in capsys.readouterr().out


def test_the_cache_probe_catches_a_rewrite_where_ctime_does_not_move(tmp_path, monkeypatch, isolated_cache):
    """On a file system whose ctime cannot be relied on (simulated: a cache key without it, as
    main's was), three sampled blocks still have to hash as they did."""
    monkeypatch.setattr(checkpoint, "_RACY_WINDOW_S", -1.0)

    def key_without_ctime(file, st):
        ident = f"{file.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
        return isolated_cache / "sha256" / (hashlib.sha256(ident.encode()).hexdigest()[:32] + ".json")

    monkeypatch.setattr(checkpoint, "_hash_cache_file", key_without_ctime)
    f = tmp_path / "w.bin"
    f.write_bytes(os.urandom(3 << 20))
    before = file_sha256(f, progress=False)
    rewrite_in_place(f)  # the byte in the middle lies in the middle probe block
    after = file_sha256(f, progress=False)
    assert after != before and after == hashlib.sha256(f.read_bytes()).hexdigest()


def test_the_converted_copy_is_keyed_by_every_file_it_depends_on(tiny_bin, tmp_path):
    path = copy_of(tiny_bin, tmp_path / "edits")
    first = prepare_checkpoint(path, progress=False)
    edit_json(path / "config.json", rope_theta=5e5)
    second = prepare_checkpoint(path, progress=False)
    assert second != first and json.loads((second / "config.json").read_text())["rope_theta"] == 5e5
    edit_json(path / "quantize_config.json", damp_percent=0.05)
    third = prepare_checkpoint(path, progress=False)
    assert third not in (first, second)
    assert json.loads((third / "quantize_config.json").read_text())["damp_percent"] == 0.05
    note = json.loads((third / "workbench_converted.json").read_text())
    assert set(note["inputs_sha256"]) >= {"config.json", "quantize_config.json", CARD_WEIGHTS_FILE, "tokenizer.model"}


@pytest.mark.parametrize("what, edit, message", [
    ("fewer layers", ("config.json", {"num_hidden_layers": 3}), r"would be left unused \(model.layers.3."),
    ("more layers", ("config.json", {"num_hidden_layers": 5}), r"missing \(model.layers.4."),
    ("mlp width", ("config.json", {"intermediate_size": 768}), r"do not fit .*down_proj.g_idx is int \[704\]"),
    ("bits", ("quantize_config.json", {"bits": 8}),
     r"down_proj.qweight is int \[88, 256\], the model needs int \[176, 256\]"),
    ("group size", ("quantize_config.json", {"group_size": 128}),
     r"down_proj.qzeros is int \[11, 32\], the model needs int \[6, 32\]"),
    ("tied embeddings", ("config.json", {"tie_word_embeddings": True}), r"unused \(lm_head.weight\)"),
])
def test_weights_that_do_not_fit_the_config_are_a_checkpoint_error(tiny_bin, tmp_path, what, edit, message):
    path = copy_of(tiny_bin, tmp_path / "edited")
    edit_json(path / edit[0], **edit[1])
    certify(path)
    with pytest.raises(CheckpointError, match=message):
        prepare_checkpoint(path, progress=False)
    with pytest.raises(CheckpointError, match=message):  # a checkpoint error, never a kernel's
        load_model(path, kernel="torch", device="cpu")


def test_after_loading_the_model_and_the_checkpoint_match_one_to_one(demo_loaded, demo_model_path, tmp_path):
    """The check load_model runs after gptqmodel's load: the model it built against the tensors
    the checkpoint holds. Against a checkpoint with a fifth layer, the loaded model lacks it."""
    import workbench.model.load as load

    load.check_loaded_tensors(demo_loaded.model, checkpoint.model_tensors(demo_model_path)[0], "demo")  # passes
    five = tmp_path / "five-layers"
    five.mkdir()
    for name in ("config.json", "quantize_config.json"):
        shutil.copy(demo_model_path / name, five / name)
    edit_json(five / "config.json", num_hidden_layers=5)
    (five / CARD_WEIGHTS_FILE).write_bytes(b"")  # read_gptq_settings wants weights to be there
    with pytest.raises(CheckpointError, match=r"quantized layers of the checkpoint are not in the loaded model "
                                              r"\(model.layers.4."):
        load.check_loaded_tensors(demo_loaded.model, checkpoint.model_tensors(five)[0], "five")


def bad_headers(weights: Path):
    """(what, the file's new bytes, what the error must say): one malformed safetensors file each."""
    data = weights.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header, tensors = json.loads(data[8:8 + n]), data[8 + n:]
    first, second = [k for k in header if k != "__metadata__"][:2]

    def rebuilt(**entries) -> bytes:
        body = json.dumps(header | {k: header[k] | v for k, v in entries.items()}).encode()
        return struct.pack("<Q", len(body)) + body + tensors

    yield "length past the file", struct.pack("<Q", len(data) * 4) + data[8:], "claims"
    yield "not JSON", data[:8] + b"{" * n + tensors, "not JSON"
    yield "unknown dtype", rebuilt(**{first: {"dtype": "Q4"}}), "unknown dtype 'Q4'"
    shape = [d * 2 for d in header[first]["shape"]]
    yield "shape larger than its bytes", rebuilt(**{first: {"shape": shape}}), "spans .* needs"
    begin, end = header[second]["data_offsets"]
    start = header[first]["data_offsets"][0]
    yield "overlapping tensors", rebuilt(**{second: {"data_offsets": [start, start + end - begin]}}), \
        "overlaps another|leaves a gap"
    yield "truncated", data[:-100], "truncated or padded"


def test_a_bad_safetensors_header_is_a_checkpoint_error(tiny_hf, tmp_path):
    for i, (what, payload, message) in enumerate(bad_headers(tiny_hf / "model.safetensors")):
        path = copy_of(tiny_hf, tmp_path / f"bad{i}")
        (path / "model.safetensors").write_bytes(payload)
        with pytest.raises(CheckpointError, match=f"bad safetensors header.*({message})"):
            prepare_checkpoint(path, progress=False)
        with pytest.raises(CheckpointError, match="bad safetensors header"):  # not a kernel error
            load_model(path, kernel="torch", device="cpu", verify=False)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "device"])
def test_non_regular_weight_files_are_refused_before_hashing(tiny_bin, tmp_path, kind):
    path = copy_of(tiny_bin, tmp_path / kind)
    weights = path / CARD_WEIGHTS_FILE
    weights.unlink()
    if kind == "fifo":
        os.mkfifo(weights)
    else:
        weights.symlink_to("/dev/zero" if kind == "dev-zero" else "/dev/null")
    # In a subprocess: on a FIFO or /dev/zero, reading would block or never end.
    out = run_python(
        "import sys\n"
        "from workbench.errors import CheckpointError\n"
        "from workbench.model.checkpoint import checkpoint_hash, file_sha256, prepare_checkpoint, verify_checkpoint\n"
        f"p = {str(path)!r}\n"
        "for call in (lambda: verify_checkpoint(p, progress=False), lambda: checkpoint_hash(p, progress=False),\n"
        f"             lambda: file_sha256(p + '/{CARD_WEIGHTS_FILE}', progress=False),\n"
        "             lambda: prepare_checkpoint(p, progress=False)):\n"
        "    try:\n"
        "        call()\n"
        "        sys.exit('accepted a non-regular weights file')\n"
        "    except CheckpointError as e:\n"
        "        assert 'not a regular file' in str(e), e\n"
        "print('refused')\n")
    assert out.returncode == 0 and out.stdout.strip() == "refused", out.stdout + out.stderr


def test_a_config_that_is_not_a_regular_file_is_refused(tiny_bin, tmp_path):
    path = copy_of(tiny_bin, tmp_path / "fifo-config")
    (path / "config.json").unlink()
    os.mkfifo(path / "config.json")
    out = run_python(
        "from workbench.errors import CheckpointError\n"
        "from workbench.model.load import load_model\n"
        "try:\n"
        f"    load_model({str(path)!r}, kernel='torch', device='cpu')\n"
        "except CheckpointError as e:\n"
        "    print('refused' if 'not a regular file' in str(e) else e)\n")
    assert out.stdout.strip() == "refused", out.stdout + out.stderr


# --- 5. generation holds the context and refuses bad parameters up front -----------------------------

UNUSABLE_NUMBERS = [  # (field, value): infinities and NaN everywhere, too-cold temperatures, bools as ints
    ("temperature", float("inf")), ("temperature", float("nan")), ("temperature", 1e-30), ("temperature", 1e-300),
    ("repetition_penalty", float("inf")), ("repetition_penalty", float("nan")), ("top_p", float("nan")),
    ("max_new_tokens", float("inf")), ("max_new_tokens", True), ("top_k", float("nan")), ("num_beams", 2.0),
    ("seed", 2**64), ("min_new_tokens", float("nan")), ("stop", 5), ("do_sample", float("nan")),
]


def test_every_decode_config_field_refuses_non_finite_and_unusable_numbers():
    accepted = []
    for field, value in UNUSABLE_NUMBERS:
        try:
            DecodeConfig(**{"do_sample": True, field: value})
            accepted.append(f"{field}={value!r}")
        except ConfigError as e:
            assert f"DecodeConfig.{field}=" in str(e), e
    assert not accepted, f"accepted: {', '.join(accepted)}"


def test_the_smallest_allowed_temperature_samples_without_overflow(demo_loaded):
    from workbench.generation.config import MIN_TEMPERATURE

    config = DecodeConfig.card(temperature=MIN_TEMPERATURE, max_new_tokens=4, seed=1)
    rec = generate(demo_loaded, "def add(a, b):", config)
    assert rec.new_tokens >= 1 and all(lp <= 0 for lp in rec.logprobs)


def test_prompt_plus_new_tokens_must_fit_the_context(demo_loaded):
    ids = prompt_ids_of_length(demo_loaded.tokenizer, 4000)
    assert demo_loaded.model.config.max_position_embeddings == 4096
    with pytest.raises(PromptError, match="4000 tokens and 300 new tokens .* 4300 > the context of 4096 .* least 204"):
        generate_ids(demo_loaded, [ids], DecodeConfig.greedy(max_new_tokens=300))
    with pytest.raises(PromptError, match=r"and 4096 new tokens are asked for: \d+ > the context of 4096"):
        generate(demo_loaded, "def add(a, b):", DecodeConfig.greedy(max_new_tokens=4096), format="raw")
    with pytest.raises(ConfigError, match="max_context=8192 is past the model's 4096 positions"):
        generate_ids(demo_loaded, [ids], DecodeConfig.greedy(max_new_tokens=300), max_context=8192)
    rec = generate_ids(demo_loaded, [ids[:96]], DecodeConfig.greedy(max_new_tokens=32), max_context=128)[0]
    assert rec.new_tokens <= 32  # exactly at the limit is allowed


@pytest.mark.parametrize("mode", ["eager", "static"])
def test_an_absurd_max_new_tokens_is_refused_before_anything_is_allocated(demo_loaded, mode):
    # 10**6, not 10**9: should the refusal ever go, the cache this would allocate stays ~1 GB.
    config = DecodeConfig.greedy(max_new_tokens=10**6)
    with pytest.raises(PromptError, match="Shorten the prompt .* or ask for fewer new tokens"):
        generate(demo_loaded, "def add(a, b):", config, format="raw", decode_mode=mode)
    assert demo_loaded.decoder is None or demo_loaded.decoder[0][1] <= 4096  # (batch, cache length, mode)


def test_the_static_loop_itself_refuses_a_cache_past_the_models_positions(demo_loaded):
    import torch

    from workbench.generation.static import static_generate
    from workbench.measure import Clock

    ids = torch.ones((1, 8), dtype=torch.long)
    with pytest.raises(PromptError, match="needs 100008 positions; the model has 4096"):
        static_generate(demo_loaded, ids, torch.ones_like(ids), DecodeConfig.greedy(max_new_tokens=10**5),
                        Clock("cpu"), "static")


@pytest.mark.parametrize("value", [-1, 10**6, "5", True, 2.0])
def test_top_logprobs_is_checked_before_generating(demo_loaded, value):
    streamed = []
    with pytest.raises(ConfigError, match=r"top_logprobs=.* allowed an integer in \[0, 4096\]"):
        generate(demo_loaded, "def add(a, b):", DecodeConfig.greedy(max_new_tokens=4), top_logprobs=value,
                 on_token=lambda i, t: streamed.append(t))
    assert streamed == []  # refused before a token was made


@pytest.mark.parametrize("bad, message", [
    ({"prompts_ids": [[1, -3]]}, r"outside the vocabulary \[0, 4096\): \[-3\]"),
    ({"prompts_ids": [[1, 4096]]}, r"outside the vocabulary \[0, 4096\): \[4096\]"),
    ({"logprobs": "yes"}, "logprobs='yes'"),
    ({"warmup": -1}, "warmup=-1"),
    ({"max_context": 0}, "max_context=0"),
    ({"on_token": "print"}, "on_token='print'"),
])
def test_bad_generation_parameters_are_config_errors_not_torch_errors(demo_loaded, bad, message):
    kwargs = {"prompts_ids": [[1, 2, 3]], **bad}
    prompts = kwargs.pop("prompts_ids")
    with pytest.raises(ConfigError, match=message):
        generate_ids(demo_loaded, prompts, DecodeConfig.greedy(max_new_tokens=2), **kwargs)

