"""The batch-1 GEMMs and the decode attention of the 34B shapes, one by one, on a GPU.

For each fused shape of a layer (q/k/v, o, gate/up, down; the synthetic checkpoint's own
tensors of `--layers` layers, rotated so that no call finds its weight in the L2 cache):
- correctness of the workbench's Triton GEMV in every configuration against the PyTorch
  definition (`triton_kernels.gptq_reference`), on fresh random inputs;
- time per call, each inside a CUDA graph of many calls: the GEMV in every configuration, and a
  dense fp16 GEMV (cuBLAS) of the same shape as the yardstick of what reading the weights costs;
- bandwidth: checkpoint bytes (4-bit codes, fp16 scales, 4-bit zeros) over time, as the floor counts them.
Then the decode attention (`DecodeAttention`, reading the filled part) against SDPA over the whole
static cache with a mask (what the graph mode does), at the given cache lengths.

    python benchmarks/gemv_probe.py CHECKPOINT --out probe.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from workbench.generation.fast import PackedGPTQ, concat_linears
from workbench.measure import measure_copy_bandwidth_gbps, median
from workbench.model import triton_kernels as tk
from workbench.model.checkpoint import read_gptq_settings, weight_files

SLOTS = {"qkv": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], "o": ["self_attn.o_proj"],
         "gate_up": ["mlp.gate_proj", "mlp.up_proj"], "down": ["mlp.down_proj"]}


def graph_us(fn, calls: int, replays: int = 10) -> float:
    """Median µs per call of `fn(i)` for i in range(calls), captured as one CUDA graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for i in range(calls):
            fn(i)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(calls):
            fn(i)
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / calls)
    return median(times)


def probe_shape(source, settings, slot: str, layers: int) -> dict:
    packed = []
    for i in range(layers):
        t = concat_linears([source(f"model.layers.{i}.{n}") for n in SLOTS[slot]])
        packed.append(PackedGPTQ.from_tensors(t, settings))
    p0 = packed[0]
    k, n = p0.in_features, p0.out_features
    ckpt_bytes = k * n // 2 + p0.scales.numel() * 2 + p0.scales.numel() // 2  # codes, scales, packed zeros
    xs = [torch.randn(1, k, device="cuda", dtype=torch.float16) for _ in range(layers)]
    row = {"slot": slot, "K": k, "N": n, "checkpoint_mb": ckpt_bytes / 1e6, "configs": {}}
    ref = tk.gptq_reference(xs[0], p0.qweight, p0.scales, p0.zs, p0.group_size).float()
    outs = [torch.empty((1, n), device="cuda", dtype=torch.float16) for _ in range(layers)]
    for cfg in tk.GEMV_CONFIGS:
        name = "x".join(map(str, cfg))
        try:
            got = tk.gemv_gptq4(xs[0], p0.qweight, p0.scales, p0.zs, p0.group_size, config=cfg).float()
            err = float((got - ref).abs().max() / ref.abs().max())
            us = graph_us(lambda i: tk.gemv_gptq4(xs[i % layers], packed[i % layers].qweight, packed[i % layers].scales,
                                                  packed[i % layers].zs, p0.group_size, out=outs[i % layers],
                                                  config=cfg), 4 * layers)
            row["configs"][name] = {"rel_err": err, "us": us, "gbps": ckpt_bytes / us / 1e3}
        except Exception as e:  # a configuration that does not compile on this chip is a finding, not a stop
            row["configs"][name] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
    dense = [p.dequantize() for p in packed]
    us = graph_us(lambda i: torch.matmul(xs[i % layers], dense[i % layers], out=outs[i % layers]), 4 * layers)
    row["dense_fp16"] = {"us": us, "gbps": k * n * 2 / us / 1e3}
    ok = {c: v for c, v in row["configs"].items() if "us" in v and v["rel_err"] < 2e-3}
    row["best"] = min(ok, key=lambda c: ok[c]["us"]) if ok else None
    return row


def probe_attention(lengths, cache_len: int, heads=64, kv=8, d=128, layers=48) -> list:
    import torch.nn.functional as F

    rows = []
    q = torch.randn(1, heads, d, device="cuda", dtype=torch.float16)
    kc = torch.randn(layers, 1, kv, cache_len, d, device="cuda", dtype=torch.float16)
    vc = torch.randn_like(kc)
    att = tk.DecodeAttention(1, heads, kv, d, "cuda")
    out = torch.empty(1, heads, d, device="cuda", dtype=torch.float16)
    mask = torch.full((1, 1, 1, cache_len), torch.finfo(torch.float16).min, device="cuda", dtype=torch.float16)
    for length in lengths:
        pos = torch.tensor([length - 1], device="cuda")
        mask.fill_(torch.finfo(torch.float16).min)[..., :length] = 0
        att(q, kc[0], vc[0], pos, d ** -0.5, out)
        ref = tk.attention_reference(q, kc[0], vc[0], length, d ** -0.5).float()
        err = float((out.float() - ref).abs().max())
        mine = graph_us(lambda i: att(q, kc[i], vc[i], pos, d ** -0.5, out), layers)
        g = q.view(1, kv, heads // kv, d)
        sdpa = graph_us(lambda i: F.scaled_dot_product_attention(g, kc[i], vc[i], attn_mask=mask, scale=d ** -0.5),
                        layers)
        rows.append({"length": length, "cache_len": cache_len, "max_abs_err": err, "filled_us": mine, "sdpa_us": sdpa})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    from safetensors import safe_open

    folder = Path(args.checkpoint)
    settings = read_gptq_settings(folder)
    handles = [safe_open(str(f), framework="pt", device="cuda") for f in weight_files(folder)]
    where = {name: h for h in handles for name in h.keys()}

    def source(prefix):
        return {p: where[f"{prefix}.{p}"].get_tensor(f"{prefix}.{p}") for p in ("qweight", "qzeros", "scales", "g_idx")}

    started = time.perf_counter()
    result = {"device": torch.cuda.get_device_name(0), "bandwidth_gbps": measure_copy_bandwidth_gbps("cuda"),
              "shapes": [], "attention": []}
    for slot in SLOTS:
        row = probe_shape(source, settings, slot, args.layers)
        result["shapes"].append(row)
        best = row["best"]
        print(f"{slot:8s} {row['K']}x{row['N']}: dense fp16 {row['dense_fp16']['us']:.1f} us "
              f"({row['dense_fp16']['gbps']:.0f} GB/s); triton " +
              ", ".join(f"{c} {v['us']:.1f} us {v['gbps']:.0f} GB/s err {v['rel_err']:.1e}" if "us" in v
                        else f"{c} {v['error'][:60]}" for c, v in row["configs"].items())
              + f"; best {best}", flush=True)
    result["attention"] = probe_attention([129, 2049], 2176)
    for r in result["attention"]:
        print(f"attention len {r['length']}: filled {r['filled_us']:.1f} us, sdpa (whole cache) {r['sdpa_us']:.1f} us, "
              f"max err {r['max_abs_err']:.2e}", flush=True)
    result["seconds"] = time.perf_counter() - started
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
