"""device="auto" on a machine with several GPUs (the card's device_map='auto'): where the layers
went, memory per GPU, and whether greedy tokens match a run on one GPU.

    python benchmarks/two_gpu.py MODEL --kernel torch --out FILE    (all GPUs visible)
Run it once with every GPU visible and once with CUDA_VISIBLE_DEVICES=0, then compare the files.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--kernel", default="torch")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import torch

    from workbench.cache import atomic_write_json
    from workbench.generation.config import DecodeConfig
    from workbench.generation.generate import generate
    from workbench.report.notebook import setup

    loaded = setup(args.model, args.kernel, "auto")
    layers = Counter(str(next(layer.parameters()).device) for layer in loaded.model.model.layers)
    record = generate(loaded, 'def add(a, b):\n    """Return the sum of a and b."""',
                      DecodeConfig.forced(args.new_tokens))
    result = {"visible_gpus": torch.cuda.device_count(), "kernel": loaded.kernel,
              "devices": loaded.load_record.devices, "decoder_layers_per_device": dict(layers),
              "memory": loaded.load_record.memory, "token_ids": record.token_ids,
              "token_ms_p50": record.token_ms_p50,
              "logprobs_finite": all(x == x for x in record.logprobs)}
    atomic_write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "memory"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
