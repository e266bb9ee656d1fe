"""On which Llama shapes ExLlamaV2's engine computes what the torch kernel computes (a CUDA machine).

The H200 render of 04_kernels on the demo model (hidden 256, 8 heads of 32 over one KV head) had
ExLlamaV2's engine part from the torch kernel (max |dlogit| 7.6, top-1 61 %) after the rotary base
was given to it right. This writes a small synthetic checkpoint (AutoGPTQ safetensors layout,
random weights) per shape below, loads it with both, and prints the agreement 04 prints (the logits
of every prompt position, then greedy continuations); shapes that differ in one thing at a time say
which one the engine gets wrong. `--also CHECKPOINT REFERENCE` adds a checkpoint of your own,
compared against REFERENCE's kernel (the synthetic 34B against marlin, say).

    python benchmarks/engine_shapes.py --work /tmp/shapes --out shapes.json [--also CKPT marlin]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# (name, hidden, heads, KV heads, MLP width): head_dim = hidden / heads
SHAPES = (
    ("demo: head 32, one KV head", 256, 8, 1, 704),
    ("head 32, 8 KV heads", 256, 8, 8, 704),
    ("head 64, one KV head", 256, 4, 1, 704),
    ("head 128, one KV head", 1024, 8, 1, 2816),
    ("head 128, 8:1 grouped (the 34B's)", 2048, 16, 2, 5504),
    ("head 128, 4 KV heads of 4", 512, 4, 4, 1408),
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True, help="a folder for the checkpoints")
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--skip-shapes", action="store_true", help="only the --also checkpoints")
    parser.add_argument("--also", nargs=2, action="append", default=[], metavar=("CHECKPOINT", "REFERENCE"))
    args = parser.parse_args(argv)

    from workbench.model.checkpoint import Layout
    from workbench.model.libraries import quiet
    from workbench.model.synthetic import LlamaArch, write_synthetic
    from workbench.studies.kernels import KernelStudyConfig, run_kernel_study

    quiet()
    runs = []
    for name, hidden, heads, kv, inter in () if args.skip_shapes else SHAPES:
        arch = LlamaArch(vocab_size=4096, hidden_size=hidden, num_layers=4, num_heads=heads, num_kv_heads=kv,
                         intermediate_size=inter, max_positions=4096)
        folder = Path(args.work) / f"h{hidden}-q{heads}-kv{kv}"
        if not folder.exists():
            write_synthetic(folder, arch, Layout.AUTOGPTQ_SAFETENSORS, progress=False)
        runs.append((name, folder, "torch"))
    runs += [(f"{Path(ckpt).name} against {ref}", Path(ckpt), ref) for ckpt, ref in args.also]

    results = []
    for name, folder, reference in runs:
        config = KernelStudyConfig(kernels=(reference, "exllamav2-engine"), reference=reference, n_prompts=3,
                                   greedy_tokens=16, decode_tokens=4, repeats=1, prefill_tokens=64, prove_steps=0)
        try:
            study = run_kernel_study(folder, config, args.device, log=lambda m: None)
        except Exception as e:  # one shape that fails to load says so and the others still run
            results.append({"shape": name, "error": f"{type(e).__name__}: {e}"})
            print(f"{name:<40} error: {type(e).__name__}: {str(e)[:300]}", flush=True)
            continue
        row = {"shape": name, "checkpoint": str(folder), "skipped": study.skipped,
               "agreements": [a.to_dict() for a in study.agreements]}
        results.append(row)
        for a in study.agreements:
            print(f"{name:<40} {a.kernel} vs {a.reference}: max|dlogit| {a.max_abs_dlogit:.4f}  mean KL "
                  f"{a.mean_kl_nats:.2e}  top-1 {a.top1_agreement:.3f}  greedy identical {a.greedy_identical:.2f}",
                  flush=True)
        if not study.agreements:
            print(f"{name:<40} no agreement: {json.dumps(study.skipped)[:300]}", flush=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
    Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
