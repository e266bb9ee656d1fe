"""Prove the fast decode modes on one checkpoint, kernel by kernel (issue 9's proof, without the
speed): over `--steps` greedy steps each mode's logits against transformers' generate, and for
the CUDA graph, whether a replay launches every kernel the eager step launches.

    python benchmarks/mode_check.py MODEL --device cuda --kernels torch triton exllamav2 marlin --out FILE
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="checkpoint folder, or 'demo'")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--kernels", nargs="+", required=True)
    parser.add_argument("--modes", nargs="+", default=["static", "graph"])
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    from workbench.cache import atomic_write_json
    from workbench.environment import collect_env
    from workbench.errors import KernelUnavailable
    from workbench.model.libraries import quiet
    from workbench.model.load import load_model, resolve_model
    from workbench.studies.decode_modes import prove_modes

    quiet()
    path = resolve_model(args.model)
    rows, skipped = [], {}
    for kernel in args.kernels:
        try:
            loaded = load_model(path, kernel=kernel, device=args.device)
        except KernelUnavailable as e:
            skipped[kernel] = str(e)
            continue
        for row in prove_modes(loaded, args.modes, args.context, args.steps):
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "step_max_abs_dlogit"}), flush=True)
        loaded.release()
    atomic_write_json(args.out, {"model": str(path), "context_tokens": args.context, "steps": args.steps,
                                 "proofs": rows, "skipped": skipped, "env": collect_env(args.device)})
    return 0 if rows and all(r.get("passed") for r in rows if "why_not" not in r) else 1


if __name__ == "__main__":
    sys.exit(main())
