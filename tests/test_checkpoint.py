"""Checkpoint layouts, safe conversion of AutoGPTQ's pickle, SHA256 verification, v1 packing."""

import json
import os
import pickle
import shutil
import time
from pathlib import Path

import pytest
import torch

from workbench.errors import CheckpointError, ChecksumMismatch, UnsafeCheckpoint, WorkbenchError
from workbench.model import checkpoint
from workbench.model.checkpoint import (
    CARD_SHA256,
    CARD_WEIGHTS_FILE,
    Layout,
    TensorSpec,
    checkpoint_hash,
    converted_folder,
    dequantize_gptq_v1,
    detect_layout,
    file_sha256,
    load_pickled_state_dict,
    main,
    prepare_checkpoint,
    read_gptq_settings,
    read_state_dict,
    verify_checkpoint,
    write_safetensors,
)
from workbench.model.synthetic import _pack_last_dim, write_synthetic_checkpoint


@pytest.fixture(scope="module")
def tiny_bin(tmp_path_factory) -> Path:
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", "tiny", Layout.AUTOGPTQ_BIN,
                                      progress=False)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def copy_of(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def age(path: Path, seconds: float = 60) -> None:
    """Make files look untouched for a while, as a downloaded checkpoint is (see the racy rule)."""
    past = time.time() - seconds
    for p in [path, *path.iterdir()] if path.is_dir() else [path]:
        os.utime(p, (past, past))


# --- layouts and clear errors --------------------------------------------------------------------

def test_layout_errors_say_what_is_wrong(tiny_bin, tmp_path):
    with pytest.raises(CheckpointError, match="empty"):
        detect_layout(tmp_path)
    with pytest.raises(CheckpointError, match="not a folder"):
        detect_layout(tmp_path / "nope")
    bad = copy_of(tiny_bin, tmp_path / "no-qcfg")
    (bad / "quantize_config.json").unlink()
    with pytest.raises(CheckpointError, match="no quantize_config.json"):
        detect_layout(bad)
    bits5 = copy_of(tiny_bin, tmp_path / "bits5")
    qcfg = json.loads((bits5 / "quantize_config.json").read_text())
    (bits5 / "quantize_config.json").write_text(json.dumps(qcfg | {"bits": 5}))
    with pytest.raises(CheckpointError, match=r"bits=5 .*\(2, 3, 4, 8\)"):
        read_gptq_settings(bits5)
    no_weights = copy_of(tiny_bin, tmp_path / "no-weights")
    (no_weights / CARD_WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"no weights \(\*.safetensors or \*.bin\)"):
        detect_layout(no_weights)
    assert issubclass(CheckpointError, WorkbenchError)


def test_hf_layout_reads_settings_from_config(tmp_path):
    path = write_synthetic_checkpoint(tmp_path / "hf", "tiny", Layout.HF, desc_act=True, progress=False)
    assert detect_layout(path) is Layout.HF
    assert not (path / "quantize_config.json").exists()
    s = read_gptq_settings(path)
    assert (s.bits, s.group_size, s.desc_act, s.sym) == (4, 64, True, True)
    assert prepare_checkpoint(path) == path  # already loadable: no copy


# --- verification --------------------------------------------------------------------------------

def test_flipped_byte_raises_checksum_mismatch(tiny_bin, tmp_path):
    path = copy_of(tiny_bin, tmp_path / "flipped")
    ok = verify_checkpoint(path, progress=False)
    assert ok.source == "self-declared" and CARD_WEIGHTS_FILE in ok.sha256
    weights = path / CARD_WEIGHTS_FILE
    with open(weights, "r+b") as f:
        f.seek(weights.stat().st_size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x01]))
    with pytest.raises(ChecksumMismatch) as e:
        verify_checkpoint(path, progress=False)
    assert e.value.file.endswith(CARD_WEIGHTS_FILE)
    assert e.value.expected == ok.sha256[CARD_WEIGHTS_FILE] and e.value.actual != e.value.expected
    assert e.value.expected in str(e.value) and e.value.actual in str(e.value)


def test_real_model_files_are_checked_against_the_card(tmp_path):
    """Without a manifest, a folder holding the published weights file is held to the card's table."""
    path = tmp_path / "real"
    path.mkdir()
    for name in CARD_SHA256:
        (path / name).write_text("not the published file\n")
    with pytest.raises(ChecksumMismatch) as e:
        verify_checkpoint(path, progress=False)
    assert e.value.expected == CARD_SHA256[Path(e.value.file).name]
    for optional in ("tokenizer.json", "pytorch_model.bin.index.json"):  # never read: may be absent
        (path / optional).unlink()
    (path / "tokenizer.model").unlink()
    with pytest.raises(CheckpointError, match="missing tokenizer.model"):
        verify_checkpoint(path, progress=False)


def test_unverifiable_and_unlisted_files_are_errors(tiny_bin, tmp_path):
    hf = write_synthetic_checkpoint(tmp_path / "hf", "tiny", Layout.HF, progress=False)
    (hf / "SHA256SUMS").unlink()
    with pytest.raises(CheckpointError, match="nothing to verify against.*sha256sum"):
        verify_checkpoint(hf, progress=False)
    named_like_the_card = copy_of(tiny_bin, tmp_path / "nomanifest")
    (named_like_the_card / "SHA256SUMS").unlink()
    (named_like_the_card / "chat_template.jinja").unlink()  # the published files have none: not in the card's table
    with pytest.raises(ChecksumMismatch):  # the published weights' name, so held to the card's table
        verify_checkpoint(named_like_the_card, progress=False)
    extra = copy_of(tiny_bin, tmp_path / "extra")
    (extra / "model.safetensors").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="model.safetensors would be read .* not in the self-declared checksums"):
        verify_checkpoint(extra, progress=False)


def test_hashes_are_cached_by_size_and_times(tmp_path, isolated_cache, monkeypatch):
    f = tmp_path / "w.bin"
    f.write_bytes(os.urandom(1000))
    real = file_sha256(f, progress=False)
    assert not list((isolated_cache / "sha256").glob("*.json"))  # just written: too fresh to trust
    monkeypatch.setattr(checkpoint, "_RACY_WINDOW_S", -1.0)  # as if it had been quiet for a while
    assert file_sha256(f, progress=False) == real
    (entry,) = (isolated_cache / "sha256").glob("*.json")
    entry.write_text(json.dumps(json.loads(entry.read_text()) | {"sha256": "0" * 64}))
    assert file_sha256(f, progress=False) == "0" * 64  # read from the cache, not hashed again
    f.write_bytes(os.urandom(1000))  # same size, new mtime: hashed again
    assert file_sha256(f, progress=False) not in (real, "0" * 64)


def test_checkpoint_hash_is_the_weights_sha256(tiny_bin):
    manifest = dict(line.split()[::-1] for line in (tiny_bin / "SHA256SUMS").read_text().splitlines()
                    if not line.startswith("#"))
    assert checkpoint_hash(tiny_bin) == manifest[CARD_WEIGHTS_FILE][:16]


def test_verify_cli(tiny_bin, capsys):
    assert main([str(tiny_bin), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "OK  " in out and "match the folder's own SHA256SUMS: SELF-DECLARED" in out and "SYNTHETIC" in out


# --- conversion of the pickle ----------------------------------------------------------------------

def test_conversion_keeps_packing_bit_for_bit(tiny_bin, isolated_cache):
    out = prepare_checkpoint(tiny_bin, progress=False)
    assert out.parent == isolated_cache / "converted" and out == converted_folder(tiny_bin, progress=False)
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "config.json", "quantize_config.json",
                                               "tokenizer.model", "workbench_converted.json"}
    assert not list(out.glob("*.bin")) and not (out / "SHA256SUMS").exists()
    original, converted = read_state_dict(tiny_bin), read_state_dict(out)
    assert set(original) - set(converted) == {k for k in original if k.endswith(".bias")}  # AutoGPTQ's zero biases
    for name, t in converted.items():
        assert t.dtype == original[name].dtype and torch.equal(t, original[name]), name
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert prepare_checkpoint(tiny_bin, progress=False) == out  # cached: not converted again
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp


def test_nonzero_bias_is_refused(tmp_path, isolated_cache):
    path = tmp_path / "ckpt"
    shutil.copytree(write_synthetic_checkpoint(tmp_path / "src", "tiny", Layout.AUTOGPTQ_SAFETENSORS,
                                               progress=False), path)
    from safetensors.torch import load_file, save_file

    weights = path / "gptq_model-4bit-64g.safetensors"
    state = load_file(str(weights))
    state["model.layers.1.mlp.up_proj.bias"][3] = 0.5
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match="up_proj.bias is non-zero"):
        prepare_checkpoint(path, progress=False)


class WritesAFile:
    """Unpickling this writes a file: what a malicious checkpoint could do."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return Path.write_text, (self.target, "pwned")


@pytest.mark.parametrize("container", ["torch-zip", "plain-pickle"])
def test_malicious_pickle_is_refused_without_side_effects(tiny_bin, tmp_path, isolated_cache, container):
    path = copy_of(tiny_bin, tmp_path / "evil")
    target = tmp_path / "pwned.txt"
    payload = {"model.norm.weight": torch.ones(4), "x": WritesAFile(target)}
    weights = path / CARD_WEIGHTS_FILE
    if container == "torch-zip":
        torch.save(payload, weights)
    else:
        with open(weights, "wb") as f:
            pickle.dump(payload, f)
    # The payload is live: an ordinary unpickling would write the file.
    control = tmp_path / "control"
    shutil.copy(weights, control)
    probe_target = tmp_path / "control-pwned.txt"
    if container == "torch-zip":
        torch.save({"x": WritesAFile(probe_target)}, control)
        torch.load(control, weights_only=False)
    else:
        pickle.loads(pickle.dumps(WritesAFile(probe_target)))
    assert probe_target.read_text() == "pwned"

    with pytest.raises(UnsafeCheckpoint, match="refused to unpickle"):
        load_pickled_state_dict(weights)
    with pytest.raises(UnsafeCheckpoint):
        prepare_checkpoint(path, progress=False)
    assert not target.exists()
    converted = isolated_cache / "converted"
    assert not converted.exists() or not any(converted.iterdir())


def test_pickle_of_non_tensors_is_refused(tmp_path):
    f = tmp_path / "w.bin"
    torch.save({"model.norm.weight": torch.ones(4), "step": 3}, f)
    with pytest.raises(UnsafeCheckpoint, match="not plain tensors"):
        load_pickled_state_dict(f)
    torch.save([torch.ones(2)], f)
    with pytest.raises(UnsafeCheckpoint, match="not a dict"):
        load_pickled_state_dict(f)


def test_truncated_pickle_is_a_clear_error(tiny_bin, tmp_path):
    f = tmp_path / "cut.bin"
    f.write_bytes((tiny_bin / CARD_WEIGHTS_FILE).read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cannot be read as a torch checkpoint"):
        load_pickled_state_dict(f)


# --- formats -----------------------------------------------------------------------------------------

def test_safetensors_writer_round_trips_and_hashes(tmp_path):
    from safetensors.torch import load_file

    tensors = {"a": torch.randn(3, 5).half(), "b": torch.arange(7, dtype=torch.int32),
               "c": torch.randn(2, 2, 2).bfloat16()}
    specs = [TensorSpec(k, v.dtype, tuple(v.shape)) for k, v in tensors.items()]
    f = tmp_path / "x.safetensors"
    sha = write_safetensors(f, specs, tensors.__getitem__, progress=False)
    back = load_file(str(f))
    assert all(torch.equal(back[k], v) for k, v in tensors.items())
    assert sha == file_sha256(f, progress=False)


def test_v1_dequantization_decodes_known_codes():
    torch.manual_seed(0)
    fin, fout, gs = 128, 16, 32
    q = torch.randint(0, 16, (fin, fout))  # codes
    z = torch.randint(1, 16, (fin // gs, fout))  # zeros (never 0: v1 cannot store it)
    s = torch.rand(fin // gs, fout).half() * 0.01
    g_idx = torch.randperm(fin) % (fin // gs)  # act-order-like: any row may belong to any group
    g_idx = g_idx.int()
    qweight = torch.from_numpy(_pack_last_dim(q.t().numpy(), 4)).t().contiguous()  # pack along the input dim
    qzeros = torch.from_numpy(_pack_last_dim((z - 1).numpy(), 4))  # v1 stores zero - 1
    assert qweight.shape == (fin // 8, fout) and qzeros.shape == (fin // gs, fout // 8)
    w = dequantize_gptq_v1(qweight, qzeros, s, g_idx, bits=4)
    expected = s.float()[g_idx.long()] * (q - z[g_idx.long()]).float()
    assert torch.equal(w, expected)
