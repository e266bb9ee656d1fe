"""The embedded demo model: a small CodeLlama-family model the workbench builds for itself.

The real checkpoint is 19 GB and cannot be downloaded in CI, so every machine builds this one
from things that ship with Python: a SentencePiece tokenizer trained with Llama's settings on the
standard library's source, a grouped-query-attention Llama trained for a fixed number of steps on
CodeFuse-format conversations (human: a function's signature and docstring; bot: its code, then
`</s>`) mixed with plain stdlib source (what CodeLlama was pretrained on), GPTQ-quantized with
gptqmodel on the CPU, and written in exactly the real checkpoint's on-disk layout. `build()`
caches the result under the cache folder, keyed by the recipe's hash.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import hashlib
import json
import math
import platform
import random
import sys
import sysconfig
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from ..cache import atomic_write_json, building_dir, cache_dir
from ..errors import ConfigError, WorkbenchError
from ..prompts.formats import chat_template, write_chat_template
from .checkpoint import DEMO_MARKER, write_manifest
from .libraries import import_gptqmodel

ROLE_HUMAN = "<|role_start|>human<|role_end|>"
ROLE_BOT = "<|role_start|>bot<|role_end|>"
WEIGHTS_FILE = "gptq_model-4bit-64g.bin"
EOS_ID = 2

# Bump when the build code changes what it produces, so old caches are not reused.
BUILD_CODE_VERSION = 5


@dataclass(frozen=True)
class DemoRecipe:
    """Everything that decides what the demo model is; its hash names the cache entry."""

    seed: int = 0
    vocab_size: int = 4096  # SentencePiece BPE pieces, ids 0/1/2 = <unk>/<s>/</s>
    hidden_size: int = 256
    intermediate_size: int = 512  # a multiple of 64 (and 128, for marlin's tiles), as fast GPTQ kernels need
    num_layers: int = 4
    num_heads: int = 8
    num_kv_heads: int = 1  # 8 query heads per KV head, as in the 34B model (64 / 8)
    rope_theta: float = 1e6
    max_positions: int = 4096
    max_function_chars: int = 320  # short conversations: more answers (and </s>) per step
    heldout_share: float = 0.05
    block_tokens: int = 256  # training sequence length
    batch_size: int = 8
    train_steps: int = 250  # fixed, so the build is reproducible; sized for <= 3 min of training on 2 cores
    # Share of training rows that are plain stdlib source (no role tags, no </s> after a
    # function), as CodeLlama read before CodeFuse's fine-tuning: without it a bare header looks
    # like the start of a trained answer and ends with </s> as readily as a templated one.
    raw_source_share: float = 0.2
    raw_window_chars: int = 1024  # source is cut at line ends into windows of at most this many chars
    learning_rate: float = 3e-3
    warmup_steps: int = 20
    bits: int = 4
    group_size: int = 64
    desc_act: bool = False
    calibration_samples: int = 128
    eval_prompts: int = 64  # held-out prompts for the stop-with-</s> check (issue asks >= 50)
    eval_max_new_tokens: int = 128

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
        if self.intermediate_size % 64:
            raise ConfigError(f"intermediate_size={self.intermediate_size} must be a multiple of 64")
        if not 0 <= self.raw_source_share < 1:
            raise ConfigError(f"raw_source_share={self.raw_source_share} must be in [0, 1)")
        if self.raw_window_chars < 1:
            raise ConfigError(f"raw_window_chars={self.raw_window_chars} must be at least 1")
        if self.bits != 4 or self.group_size not in (32, 64, 128):
            raise ConfigError(f"bits={self.bits}, group_size={self.group_size}: the demo is 4-bit, group 32/64/128")

    def key(self) -> str:
        """A short hash of the recipe, the Python release (its stdlib is the corpus), torch and the
        chat template written beside the tokenizer (a changed template is a changed folder)."""
        import torch

        ident = {
            "recipe": dataclasses.asdict(self),
            "code": BUILD_CODE_VERSION,
            "python": platform.python_version(),
            "torch": torch.__version__.split("+")[0],
            "chat_template": hashlib.sha256(chat_template("codefuse").encode()).hexdigest(),
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Conversation:
    """One training example: a function's header and docstring, and the function itself."""

    name: str  # module:qualname, stable across runs
    human: str
    bot: str

    def prompt(self) -> str:
        return f"{ROLE_HUMAN}{self.human}{ROLE_BOT}"


def default_path(recipe: DemoRecipe = DemoRecipe()) -> Path:
    return cache_dir() / "demo" / f"codefuse-demo-{recipe.key()}"


def build(recipe: DemoRecipe = DemoRecipe(), *, force: bool = False, log=print) -> Path:
    """Build the demo model (or reuse the cached one) and return its folder."""
    final = default_path(recipe)
    if final.exists() and not force:
        if (final / "demo.json").exists():
            return final
        raise WorkbenchError(f"{final} exists but has no demo.json: remove it and build again")
    if final.exists() and force:
        import shutil

        shutil.rmtree(final)
    with building_dir(final) as out:
        _build_into(out, recipe, log)
    log(f"demo model ready: {final}")
    return final


def _build_into(out: Path, recipe: DemoRecipe, log) -> None:
    import torch

    started = time.perf_counter()
    torch.manual_seed(recipe.seed)
    random.seed(recipe.seed)
    threads = torch.get_num_threads()
    train, heldout = split_corpus(collect_conversations(recipe), recipe)
    log(f"corpus: {len(train)} training and {len(heldout)} held-out conversations from the stdlib")

    sp_path = train_tokenizer(out / "tokenizer.model", recipe)
    write_tokenizer_files(out, recipe)
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(sp_path))
    train_ids = [encode_conversation(sp, c) for c in train]
    heldout_ids = [encode_conversation(sp, c) for c in heldout]
    raw_ids = encode_source_windows(sp, source_windows(heldout, recipe), recipe)
    log(f"plain source: {len(raw_ids)} windows, {sum(len(ids) for ids, _ in raw_ids)} tokens")

    t0 = time.perf_counter()
    model = make_model(recipe)
    losses = train_model(model, train_ids, raw_ids, recipe, log)
    train_s = time.perf_counter() - t0
    heldout_loss_fp32 = mean_loss(model, heldout_ids)
    log(f"trained {recipe.train_steps} steps in {train_s:.0f} s; held-out loss {heldout_loss_fp32:.3f}")

    t0 = time.perf_counter()
    work = out / ".work"
    quantized = quantize(model, work, sp_path, train_ids, recipe)
    quantize_s = time.perf_counter() - t0
    log(f"quantized in {quantize_s:.0f} s")

    write_checkpoint(out, quantized, model.config, recipe)
    quality = evaluate_demo(quantized, sp, heldout, heldout_ids, recipe)
    import shutil

    shutil.rmtree(work)
    record = {
        "what": "CodeFuse Workbench demo model: a small CodeLlama-family GPTQ model, NOT CodeFuse-34B",
        "recipe": dataclasses.asdict(recipe),
        "recipe_key": recipe.key(),
        "build_s": round(time.perf_counter() - started, 1),
        "train_s": round(train_s, 1),
        "quantize_s": round(quantize_s, 1),
        "threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "train_conversations": len(train),
        "heldout_conversations": len(heldout),
        "raw_source_windows": len(raw_ids),
        "train_loss_last": round(sum(losses[-20:]) / len(losses[-20:]), 4),
        "heldout_loss_fp32": round(heldout_loss_fp32, 4),
        **quality,
    }
    atomic_write_json(out / "demo.json", record)
    write_manifest(out)


# --- corpus ---------------------------------------------------------------------------------

_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo",
              "__pycache__", "ensurepip", "tkinter", "pydoc_data"}


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py") if not _SKIP_DIRS & set(p.relative_to(root).parts[:-1])]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def collect_conversations(recipe: DemoRecipe) -> list[Conversation]:
    """Every documented stdlib function short enough to learn from, as a conversation."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for path in stdlib_files():
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = source.splitlines()
        module = path.relative_to(root).with_suffix("").as_posix().replace("/", ".")
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            conv = _conversation(module, node, lines, recipe.max_function_chars)
            if conv is not None:
                found.append(conv)
    return found


def _conversation(module: str, node, lines: list[str], max_chars: int) -> Conversation | None:
    if ast.get_docstring(node) is None or len(node.body) < 2:
        return None  # no docstring to prompt with, or nothing but the docstring to answer
    start = node.lineno - 1
    doc_end = node.body[0].end_lineno
    code = textwrap.dedent("\n".join(lines[start:node.end_lineno])) + "\n"
    header = textwrap.dedent("\n".join(lines[start:doc_end])) + "\n"
    if len(code) > max_chars or "\t" in code:
        return None
    return Conversation(name=f"{module}:{node.name}:{node.lineno}", human=header, bot=code)


def split_corpus(convs: list[Conversation], recipe: DemoRecipe):
    """A stable held-out split by name hash, so adding a file does not reshuffle the rest."""
    train, heldout = [], []
    for c in convs:
        h = int(hashlib.sha256(c.name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (heldout if h < recipe.heldout_share else train).append(c)
    return train, heldout


def source_windows(heldout: list[Conversation], recipe: DemoRecipe) -> list[str]:
    """The stdlib's source as plain text, cut at line ends into windows of at most
    raw_window_chars, with every held-out function (and its decorators) taken out, so the model
    never reads code it is evaluated on."""
    root = Path(sysconfig.get_paths()["stdlib"])
    dropped: dict[str, set[int]] = {}  # module -> 0-based line numbers of held-out functions
    for c in heldout:
        module, _, lineno = c.name.rsplit(":", 2)
        start = int(lineno) - 1
        dropped.setdefault(module, set()).update(range(start, start + c.bot.count("\n")))
    windows = []
    for path in stdlib_files():
        module = path.relative_to(root).with_suffix("").as_posix().replace("/", ".")
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
        skip = set(dropped.get(module, ()))
        for i in sorted(skip):
            j = i - 1
            while j >= 0 and j not in skip and lines[j].lstrip().startswith("@"):
                skip.add(j)
                j -= 1
        window = ""
        for i, line in enumerate(lines):
            if i in skip:
                continue
            if window and len(window) + len(line) > recipe.raw_window_chars:
                windows.append(window)
                window = ""
            window += line[: recipe.raw_window_chars]
        if window.strip():
            windows.append(window)
    return windows


def encode_source_windows(sp, windows: list[str], recipe: DemoRecipe) -> list[tuple[list[int], list[int]]]:
    """A seeded sample of windows, just enough for raw_source_share of the training rows (each
    is read at most once, as in pretraining). Every token is a target; nothing ends with </s>."""
    if not recipe.raw_source_share:
        return []
    need = recipe.raw_source_share * recipe.train_steps * recipe.batch_size * recipe.block_tokens
    order = list(range(len(windows)))
    random.Random(recipe.seed + 2).shuffle(order)
    out, total = [], 0
    for i in order:
        if total >= need + recipe.batch_size * recipe.block_tokens:  # a batch spare: rows round up
            break
        ids = sp.encode(windows[i])
        out.append((ids, list(ids)))
        total += len(ids)
    return out


# --- tokenizer ------------------------------------------------------------------------------

def train_tokenizer(path: Path, recipe: DemoRecipe) -> Path:
    """SentencePiece BPE with Llama's settings, trained on the stdlib's source.

    One thread and every sentence (no sampling) make the pieces the same on every run; relative
    file names keep build folders' paths out of the model file, so its hash repeats too.
    """
    import sentencepiece as spm

    text = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in stdlib_files())
    corpus = path.with_suffix(".corpus.txt")
    corpus.write_text(text, encoding="utf-8")
    try:
        with contextlib.chdir(path.parent):
            spm.SentencePieceTrainer.train(
                input=corpus.name, model_prefix=path.stem, vocab_size=recipe.vocab_size,
                model_type="bpe", byte_fallback=True, split_digits=True, add_dummy_prefix=True,
                allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
                normalization_rule_name="identity", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                character_coverage=0.9999, input_sentence_size=0, shuffle_input_sentence=False,
                max_sentence_length=8192, num_threads=1, minloglevel=2,
            )
    finally:
        corpus.unlink()
    path.with_suffix(".vocab").unlink()
    return path


def write_tokenizer_files(out: Path, recipe: DemoRecipe) -> None:
    """The card's tokenizer settings: slow Llama tokenizer, legacy=False, pad = <unk>, left padding;
    the codefuse chat template beside them."""
    atomic_write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "LlamaTokenizer", "legacy": False, "add_bos_token": False,
        "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "pad_token": "<unk>", "padding_side": "left", "model_max_length": recipe.max_positions,
        "clean_up_tokenization_spaces": False,
    })
    atomic_write_json(out / "special_tokens_map.json", {
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>",
    })
    write_chat_template(out, "codefuse")


def encode_conversation(sp, conv: Conversation) -> tuple[list[int], list[int]]:
    """As MFTCoder formats it: tags are plain text, no <s>, the bot turn ends with the eos id.

    Returns (ids, labels). The role tags' tokens are labelled -100 (no loss): the model learns to
    answer after the bot tag and to stop, never to write a tag itself, so a prompt without the
    template gets no help from it. (MFTCoder masks the whole prompt; within a three-minute
    budget the human text is kept as a target, which teaches the small model code faster.)
    """
    ids = sp.encode(conv.prompt() + conv.bot) + [EOS_ID]
    labels = list(ids)
    human_tag = len(sp.encode(ROLE_HUMAN))
    before_bot_tag = len(sp.encode(ROLE_HUMAN + conv.human))
    prompt = len(sp.encode(conv.prompt()))
    for i in list(range(human_tag)) + list(range(before_bot_tag - 1, prompt)):  # -1: a piece may span the seam
        labels[i] = -100
    return ids, labels


# --- model and training ---------------------------------------------------------------------

def make_model(recipe: DemoRecipe):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=recipe.vocab_size, hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size, num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads, num_key_value_heads=recipe.num_kv_heads,
        max_position_embeddings=recipe.max_positions, rope_theta=recipe.rope_theta,
        rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=EOS_ID,
        pad_token_id=0, hidden_act="silu",
    )
    return LlamaForCausalLM(config)


def _shuffled_forever(examples: list, rng: random.Random):
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        for i in order:
            yield examples[i]


def _rows(examples: list[tuple[list[int], list[int]]], recipe: DemoRecipe, rng: random.Random,
          whole_starts: bool):
    """Endless rows of block_tokens: shuffled examples concatenated and cut. With whole_starts
    every row begins at an example's start (the cut end of a row's last example is dropped)."""
    ids: list[int] = []
    labels: list[int] = []
    for seq, seq_labels in _shuffled_forever(examples, rng):
        ids.extend(seq)
        labels.extend(seq_labels)
        while len(ids) >= recipe.block_tokens:
            yield ids[: recipe.block_tokens], labels[: recipe.block_tokens]
            ids, labels = ([], []) if whole_starts else (ids[recipe.block_tokens:], labels[recipe.block_tokens:])


def _batches(conversations: list[tuple[list[int], list[int]]], raw: list[tuple[list[int], list[int]]],
             recipe: DemoRecipe, rng: random.Random):
    """Endless batches of packed rows. A row is all conversations or all plain source, never
    both, as CodeLlama's pretraining never saw a role tag; and a conversation row starts with a
    conversation's role tag, so every </s> the model learns has the template in view and a
    context without tags looks like raw source. A raw row comes next whenever raw rows are below
    raw_source_share so far, so the mix holds in every stretch of training."""
    import torch

    streams = _rows(conversations, recipe, rng, whole_starts=True), _rows(raw, recipe, rng, whole_starts=False)
    made = [0, 0]  # rows of conversations, of raw source
    while True:
        ids, labels = [], []
        for _ in range(recipe.batch_size):
            pick = int(bool(raw) and made[1] < recipe.raw_source_share * sum(made))
            row_ids, row_labels = next(streams[pick])
            made[pick] += 1
            ids.append(row_ids)
            labels.append(row_labels)
        yield torch.tensor(ids), torch.tensor(labels)  # [B, T]


def train_model(model, train_ids: list[tuple[list[int], list[int]]], raw_ids: list[tuple[list[int], list[int]]],
                recipe: DemoRecipe, log) -> list[float]:
    import torch

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.01, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:  # linear warm-up, then cosine down to a tenth
        if step < recipe.warmup_steps:
            return recipe.learning_rate * (step + 1) / recipe.warmup_steps
        frac = (step - recipe.warmup_steps) / max(1, recipe.train_steps - recipe.warmup_steps)
        return recipe.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    losses = []
    batches = _batches(train_ids, raw_ids, recipe, random.Random(recipe.seed))
    for step in range(recipe.train_steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        x, y = next(batches)
        loss = model(input_ids=x, labels=y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 50 == 0 or step == recipe.train_steps - 1:
            log(f"  step {step:4d}/{recipe.train_steps}  loss {loss.item():.3f}")
    model.eval()
    return losses


def mean_loss(model, examples: list[tuple[list[int], list[int]]]) -> float:
    """Token-weighted mean cross-entropy over whole conversations (role tags excluded)."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for seq, labels in examples:
            n = sum(label != -100 for label in labels[1:])
            total += model(input_ids=torch.tensor([seq]), labels=torch.tensor([labels])).loss.item() * n
            count += n
    return total / count


# --- quantization and the checkpoint layout --------------------------------------------------

def quantize(model, work: Path, sp_path: Path, train_ids, recipe: DemoRecipe):
    """GPTQ with gptqmodel on the CPU, calibrated on training conversations; returns the
    quantized model loaded back with gptqmodel's torch kernel, ready for evaluation."""
    import shutil

    import torch


    gptqmodel = import_gptqmodel()
    fp_dir, q_dir = work / "fp", work / "quantized"
    model.save_pretrained(fp_dir)
    shutil.copy(sp_path, fp_dir / "tokenizer.model")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(sp_path.parent / name, fp_dir / name)
    qconfig = gptqmodel.QuantizeConfig(bits=recipe.bits, group_size=recipe.group_size,
                                       desc_act=recipe.desc_act, sym=True)
    gm = gptqmodel.GPTQModel.load(str(fp_dir), quantize_config=qconfig, device="cpu",
                                  dtype=torch.float32)
    rng = random.Random(recipe.seed + 1)
    picked = rng.sample(range(len(train_ids)), recipe.calibration_samples)
    calib = [train_ids[i][0][: recipe.block_tokens] for i in picked]
    samples = [{"input_ids": torch.tensor([c]), "attention_mask": torch.ones(1, len(c), dtype=torch.long)}
               for c in calib]
    with contextlib.chdir(work):  # gptqmodel writes a logs/ folder into the working directory
        gm.quantize(samples)
    gm.save(str(q_dir))
    del gm
    # float32 with the fused CPU kernel: bf16 arithmetic is several times slower on CPUs
    # without native bf16 support, and evaluation would dominate the build.
    return gptqmodel.GPTQModel.load(str(q_dir), device="cpu", backend=gptqmodel.BACKEND.GPTQ_TORCH_FUSED,
                                    dtype=torch.float32)


def write_checkpoint(out: Path, quantized, config, recipe: DemoRecipe) -> None:
    """Write the real checkpoint's layout: one pickled state dict plus AutoGPTQ 0.4.2's config."""
    import torch
    from safetensors.torch import load_file

    q_dir = out / ".work" / "quantized"
    state = {}
    for f in sorted(q_dir.glob("*.safetensors")):
        state.update(load_file(str(f)))
    saved_cfg = json.loads((q_dir / "config.json").read_text())
    qcfg = saved_cfg.get("quantization_config", {})
    fmt = qcfg.get("checkpoint_format", qcfg.get("format", "gptq"))
    if fmt != "gptq":
        raise WorkbenchError(f"gptqmodel saved checkpoint_format={fmt!r}; the demo needs AutoGPTQ's v1 'gptq'")
    torch.save({k: v.contiguous() for k, v in state.items()}, out / WEIGHTS_FILE)
    atomic_write_json(out / "quantize_config.json", {
        "bits": recipe.bits, "group_size": recipe.group_size, "damp_percent": 0.01,
        "desc_act": recipe.desc_act, "static_groups": False, "sym": True, "true_sequential": True,
        "model_name_or_path": None, "model_file_base_name": None,
    })
    cfg = config.to_dict()
    cfg.pop("quantization_config", None)
    cfg["torch_dtype"] = "float16"
    cfg[DEMO_MARKER] = True
    atomic_write_json(out / "config.json", cfg)
    atomic_write_json(out / "generation_config.json", {
        "bos_token_id": 1, "eos_token_id": EOS_ID, "pad_token_id": 0,
    })


# --- quality ---------------------------------------------------------------------------------

def evaluate_demo(quantized, sp, heldout: list[Conversation], heldout_ids, recipe: DemoRecipe) -> dict:
    """Held-out loss of the quantized model, and how often answers end with </s> in time when
    prompted in the training format versus with the bare function header (no template)."""
    import torch

    hf = quantized.model
    prompts = heldout[: recipe.eval_prompts]
    stops = {}
    for fmt, render in (("codefuse", Conversation.prompt), ("raw", lambda c: c.human)):
        stops[fmt] = _share_stopping(hf, [sp.encode(render(c)) for c in prompts], recipe)
    with torch.no_grad():
        loss_q = mean_loss(hf, heldout_ids)
    return {
        "heldout_loss_quantized": round(loss_q, 4),
        "eval_prompts": len(prompts),
        "eval_max_new_tokens": recipe.eval_max_new_tokens,
        "stop_share": {k: round(v, 4) for k, v in stops.items()},
    }


def _share_stopping(hf, prompts: list[list[int]], recipe: DemoRecipe) -> float:
    import torch

    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])  # [B, T], left-padded
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
    with torch.no_grad():
        out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                          max_new_tokens=recipe.eval_max_new_tokens, eos_token_id=EOS_ID, pad_token_id=0)
    new = out[:, width:]
    stopped = (new == EOS_ID).any(dim=1)
    return stopped.float().mean().item()


def main(argv=None) -> int:
    """`python -m workbench demo`: build or reuse the demo model and print its folder."""
    import argparse

    parser = argparse.ArgumentParser(prog="workbench demo", description=main.__doc__)
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache has it")
    parser.add_argument("--path-only", action="store_true", help="print the folder alone (for scripts)")
    args = parser.parse_args(argv)
    path = build(force=args.force)
    print(path)
    if not args.path_only:
        print(json.dumps(json.loads((path / "demo.json").read_text()), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
