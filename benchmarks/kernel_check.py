"""Load one checkpoint with several kernels on one device and check that each is the kernel in
use and that its logits and greedy tokens agree with a reference kernel's (and, for small models,
with the checkpoint dequantized into a dense float32 model).

    python benchmarks/kernel_check.py MODEL --device cuda --kernels torch triton exllamav2 marlin --out FILE
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="checkpoint folder, or 'demo'")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--kernels", nargs="+", required=True)
    parser.add_argument("--reference", default="torch")
    parser.add_argument("--float-reference", action="store_true", help="also compare with a dense float32 model")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    from workbench.cache import atomic_write_json
    from workbench.environment import collect_env
    from workbench.model.libraries import quiet
    from workbench.model.load import resolve_model
    from workbench.studies.kernels import KernelStudyConfig, run_kernel_study

    quiet()
    path = resolve_model(args.model)
    started = time.perf_counter()
    config = KernelStudyConfig(kernels=args.kernels, reference=args.reference, n_prompts=4, greedy_tokens=32,
                               decode_tokens=32, repeats=3, float_reference=args.float_reference)
    study = run_kernel_study(path, config, args.device, log=lambda m: print(m, flush=True))
    result = {"model": str(path), "study": study.to_dict(), "env": collect_env(study.device),
              "seconds": time.perf_counter() - started}
    atomic_write_json(args.out, result)
    frame = study.frame()
    print(frame.round(4).to_string())
    for a in study.agreements:
        print(f"{a.kernel:>12} vs {a.reference}: max|dlogit| {a.max_abs_dlogit:.4f}  mean KL {a.mean_kl_nats:.2e}  "
              f"top-1 {a.top1_agreement:.3f}  greedy identical {a.greedy_identical:.2f}")
    skipped = {k: why for k, why in study.skipped.items() if k in args.kernels or k == args.reference}
    for k, why in skipped.items():
        print(f"{k:>12}: skipped: {why}")
    return 0 if not skipped else 1


if __name__ == "__main__":
    sys.exit(main())
