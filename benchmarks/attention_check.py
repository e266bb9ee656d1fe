"""Prove an attention setting against transformers' default SDPA before believing its speed.

For each setting, greedy eager decoding of one prompt and of a left-padded batch (so a mask is
passed), with the raw logits of every step compared against the default "sdpa" run; the default
runs twice, so its own run-to-run difference is the noise the others are judged by. A short
profile of decode steps names the attention kernels that actually ran.

    python benchmarks/attention_check.py MODEL --kernel torch --attentions sdpa-no-cudnn sdpa-flash --out FILE
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--kernel", default="torch", help="a deterministic kernel: torch, triton or marlin")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--attentions", nargs="+", default=["sdpa-no-cudnn"])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import torch

    from workbench.cache import atomic_write_json
    from workbench.environment import collect_env
    from workbench.generation.config import DecodeConfig
    from workbench.generation.inputs import input_device, left_pad
    from workbench.model.attention import set_attention
    from workbench.prompts.encoding import prompt_ids_of_length
    from workbench.report.notebook import setup

    loaded = setup(args.model, args.kernel, args.device)
    tok, model = loaded.tokenizer, loaded.model
    device = input_device(model)
    cases = {"one prompt": [prompt_ids_of_length(tok, 128)],
             "left-padded batch": [prompt_ids_of_length(tok, n) for n in (128, 96, 64, 32)]}
    config = DecodeConfig.forced(args.steps).generation_config(tok)

    def run(attention: str, ids) -> tuple[torch.Tensor, torch.Tensor]:
        set_attention(loaded, attention)
        x, mask = (t.to(device) for t in left_pad(ids, tok.pad_token_id))
        with torch.inference_mode():
            out = model.generate(input_ids=x, attention_mask=mask, generation_config=config,
                                 output_logits=True, return_dict_in_generate=True)
        return out.sequences[:, x.shape[1]:].cpu(), torch.stack(out.logits).float().cpu()  # [B, N], [N, B, V]

    def attention_kernels(attention: str) -> dict:
        set_attention(loaded, attention)
        ids = cases["one prompt"]
        x, mask = (t.to(device) for t in left_pad(ids, tok.pad_token_id))
        short = DecodeConfig.forced(4).generation_config(tok)
        activities = [torch.profiler.ProfilerActivity.CPU]  # the aten op names the SDPA backend
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)  # and the kernels it launched
        with torch.inference_mode(), torch.profiler.profile(activities=activities) as prof:
            model.generate(input_ids=x, attention_mask=mask, generation_config=short)
        names = {}
        for e in prof.key_averages():
            n = e.key.lower()
            if any(s in n for s in ("flash", "cudnn", "fmha", "attention", "sdpa", "softmax", "efficient")):
                names[e.key[:120]] = e.count
        return names

    def compare(a, b) -> dict:
        (ta, la), (tb, lb) = a, b
        same = (ta == tb).all(dim=0)  # per step, all rows
        first = int((~same).nonzero()[0]) if not bool(same.all()) else None
        upto = first if first is not None else la.shape[0]
        finite = torch.isfinite(la[:upto]).all() and torch.isfinite(lb[:upto]).all()
        dmax = float((la[:upto] - lb[:upto]).abs().max()) if upto else 0.0
        return {"tokens_identical": first is None, "first_divergent_step": first,
                "max_abs_dlogit_until_divergence": dmax, "finite": bool(finite),
                "max_abs_logit": float(la[:upto].abs().max()) if upto else None}

    rows = []
    for case, ids in cases.items():
        base = run("sdpa", ids)
        rows.append({"case": case, "attention": "sdpa (repeat)", **compare(base, run("sdpa", ids))})
        for attention in args.attentions:
            try:
                rows.append({"case": case, "attention": attention, **compare(base, run(attention, ids))})
            except RuntimeError as e:  # a backend that cannot take these inputs says so
                rows.append({"case": case, "attention": attention, "error": str(e).splitlines()[0][:300]})
            print(json.dumps(rows[-1]), flush=True)
    kernels = {}
    for attention in ["sdpa", *args.attentions]:
        try:
            kernels[attention] = attention_kernels(attention)
        except RuntimeError as e:
            kernels[attention] = {"error": str(e).splitlines()[0][:300]}
        print(attention, json.dumps(kernels[attention])[:600], flush=True)
    atomic_write_json(args.out, {"model": str(loaded.path), "kernel": loaded.kernel, "steps": args.steps,
                                 "rows": rows, "attention_kernels": kernels, "env": collect_env(device)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
