"""Where ExLlamaV2's engine parts from the torch kernel, module by module (a CUDA machine).

benchmarks/engine_shapes.py found the engine's logits unrelated to the torch kernel's on every
Llama shape tried (top-1 2-9 % on random weights), so the cause is not one shape. This loads one
checkpoint with gptqmodel's torch kernel and with ExLlamaV2 (the workbench's loader, then variants
of ExLlamaV2's own settings), and prints:

1. one quantized linear (layer 0's q_proj and down_proj) on the same random input: both engines
   and the checkpoint's weight dequantized by the workbench (AutoGPTQ's v1 convention); and layer
   0's seven weights as ExLlamaV2 holds them after its load (its own `reconstruct`) against that
   dequantization, which separates a misread checkpoint from a GEMM that computes wrongly;
2. the residual stream after the embedding and after every attention and MLP module (ExLlamaV2's
   `extract_state_indices` against transformers' hidden states), relative error per module;
3. the logits of one prompt: through the workbench's runner (twice: nondeterminism), from a
   cache-less forward, and for variants of ExLlamaV2's own load: as it is, with the v2 zero
   convention (`checkpoint_offset_qzeros`), with the g_idx left out (a g_idx that is not all
   zeros sends it down its act-order path, which reorders the rows), and as released: without the
   causal mask the workbench gives its SDPA prefill (model/exllamav2_engine.py, restore_causal_prefill).

On the H200 (2026-11-30, fourth session) the weights and GEMMs agreed and the residual stream was
0.7-0.9 apart after the first layer: the missing causal mask, found this way.

    python benchmarks/engine_layers.py CHECKPOINT [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def rel(a, b) -> float:
    a, b = a.float().to(b.device), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


LINEARS = [("self_attn", n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")] + \
    [("mlp", n) for n in ("gate_proj", "up_proj", "down_proj")]


def reconstructed(model, weights) -> dict:
    """Layer 0's seven weights as ExLlamaV2 holds them (its own `reconstruct`, after its load's
    shuffle and any act-order reordering) against the checkpoint dequantized by the workbench:
    relative error and the share of entries that differ by more than 1e-2 of the weight's scale."""
    import torch

    attn, mlp = model.modules[1], model.modules[2]
    out = {}
    for part, name in LINEARS:
        module = getattr(attn if part == "self_attn" else mlp, name)
        with torch.inference_mode():
            w = module.get_weight_tensor_dq().float()
        torch.cuda.synchronize()
        ref = weights[name].to(w.device)
        w = w[: ref.shape[0], : ref.shape[1]]  # ExLlamaV2 pads some widths to a multiple of 32
        tol = 1e-2 * ref.abs().max()
        out[name] = {"rel": rel(w, ref), "entries_off": float(((w - ref).abs() > tol).float().mean()),
                     "shape": list(w.shape)}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--out")
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--device", default="cuda", help="cuda (the engine needs it); cpu checks the first part only")
    args = parser.parse_args(argv)

    import torch

    from workbench.model.checkpoint import dequantize_gptq_v1
    from workbench.model.libraries import quiet
    from workbench.model.load import load_model

    quiet()
    out = {"checkpoint": args.checkpoint}
    torch.manual_seed(0)
    ref = load_model(args.checkpoint, kernel="torch", device=args.device)
    hf = ref.model
    c = hf.config
    dev = args.device
    ids = torch.randint(3, c.vocab_size, (1, args.tokens), device=dev)
    with torch.inference_mode():
        hf_out = hf(input_ids=ids, output_hidden_states=True)
    hf_states = [h[0] for h in hf_out.hidden_states]  # inputs of layers 0..L-1, then the final norm's output
    hf_logits = hf_out.logits[0].float()
    layer0 = hf.model.layers[0]
    x_h = torch.randn(1, args.tokens, c.hidden_size, device=dev, dtype=torch.float16) * 0.5
    x_i = torch.randn(1, args.tokens, c.intermediate_size, device=dev, dtype=torch.float16) * 0.5
    with torch.inference_mode():
        ref_lin = {"q_proj": layer0.self_attn.q_proj(x_h).float(), "down_proj": layer0.mlp.down_proj(x_i).float()}

    # the workbench's own dequantization of the checkpoint's tensors (AutoGPTQ v1 zeros)
    from workbench.generation.fast import _CheckpointTensors

    loaded_from = Path(ref.load_record.loaded_from)
    ref.release()
    src = _CheckpointTensors(loaded_from, dev)
    deq, weights = {}, {}
    for part, name in LINEARS:
        t = {k: v.cpu() for k, v in src.linear(f"model.layers.0.{part}.{name}").items()}  # the helper runs on the CPU
        weights[name] = dequantize_gptq_v1(t["qweight"], t["qzeros"], t["scales"], t["g_idx"], 4).float()  # [K, N]
    for name, x in (("q_proj", x_h), ("down_proj", x_i)):
        deq[name] = x.float() @ weights[name].to(x.device)
    out["linear_torch_vs_dequantized"] = {n: rel(ref_lin[n], deq[n]) for n in deq}
    print("torch kernel vs the checkpoint dequantized (v1):", out["linear_torch_vs_dequantized"], flush=True)

    if dev != "cuda":
        return 0
    eng = load_model(args.checkpoint, kernel="exllamav2-engine", device="cuda")
    exl = eng.engine_handle
    print("engine load env:", json.dumps(eng.load_record.env.get("exllamav2")), flush=True)
    mods = exl.modules
    print("modules:", [type(m).__name__ for m in mods[:4]], "...", [type(m).__name__ for m in mods[-3:]], flush=True)
    attn0, mlp0 = mods[1], mods[2]
    with torch.inference_mode():
        e_q = attn0.q_proj.forward(x_h.clone()).float()
        e_down = mlp0.down_proj.forward(x_i.clone()).float()
    torch.cuda.synchronize()
    engine_lin = {"q_proj": e_q, "down_proj": e_down}
    out["weights_engine_vs_dequantized"] = reconstructed(exl, weights)
    print("layer 0's weights as the engine holds them vs dequantized:", out["weights_engine_vs_dequantized"],
          flush=True)
    with torch.inference_mode():  # one row, the decode shape (ExLlamaV2's GEMV path)
        one = attn0.q_proj.forward(x_h[:, :1].clone()).float()
    torch.cuda.synchronize()
    out["linear_one_row_engine_vs_dequantized"] = rel(one, deq["q_proj"][:, :1])
    print("q_proj on one row vs dequantized:", out["linear_one_row_engine_vs_dequantized"], flush=True)
    out["linear_engine_vs_torch"] = {n: rel(engine_lin[n], ref_lin[n]) for n in engine_lin}
    out["linear_engine_vs_dequantized"] = {n: rel(engine_lin[n], deq[n]) for n in engine_lin}
    print("engine linear vs torch kernel:", out["linear_engine_vs_torch"], flush=True)
    print("engine linear vs dequantized:", out["linear_engine_vs_dequantized"], flush=True)

    from exllamav2 import ExLlamaV2Cache

    def states(model):
        cache = ExLlamaV2Cache(model, batch_size=1, max_seq_len=256)
        n = len(model.modules)
        with torch.inference_mode():
            r = model.forward_chunk(input_ids=ids.cpu(), cache=cache, extract_state_indices=list(range(1, n)))
        torch.cuda.synchronize()
        return r

    r = states(exl)
    layers = c.num_hidden_layers
    per_module = []
    for i in range(layers):  # ExLlamaV2's module 1 + 2i is layer i's attention: its input is layer i's input
        e = r["states"][1 + 2 * i][0]
        per_module.append({"layer": i, "input_rel_err": rel(e, hf_states[i])})
    out["residual_per_layer"] = per_module
    print("residual stream, relative error at each layer's input:",
          [round(p["input_rel_err"], 4) for p in per_module], flush=True)
    e_logits = r["logits"][0].float()
    out["logits_forward_chunk"] = {"rel": rel(e_logits, hf_logits),
                                   "top1": float((e_logits.argmax(-1) == hf_logits.argmax(-1)).float().mean())}
    print("logits (forward_chunk):", out["logits_forward_chunk"], flush=True)

    def logits_of(fn):
        with torch.inference_mode():
            lg = fn()[0].float()
        torch.cuda.synchronize()
        return {"rel": rel(lg, hf_logits), "top1": float((lg.argmax(-1) == hf_logits.argmax(-1)).float().mean())}

    out["logits_runner"] = logits_of(lambda: eng.model(input_ids=ids).logits)
    out["logits_runner_again"] = logits_of(lambda: eng.model(input_ids=ids).logits)
    out["logits_no_cache"] = logits_of(lambda: exl.forward(ids.cpu()))
    print("logits (the workbench's runner, twice; no cache):", out["logits_runner"], out["logits_runner_again"],
          out["logits_no_cache"], flush=True)
    eng.release()

    # variants of the same load: the v2 zero convention, and the g_idx left out (ExLlamaV2 takes a
    # g_idx that is not all zeros for act-order and reorders the rows; without it, the plain path)
    import exllamav2
    import exllamav2.ext

    from workbench.model.exllamav2_engine import match_transformers_config

    plain = exllamav2.ext.make_q_matrix

    def without_g_idx(w, *a, **k):
        w.pop("g_idx", None)
        return plain(w, *a, **k)

    attention = exllamav2.attn.ExLlamaV2Attention
    fixed = attention._attn_torch
    for name, offset, make in (("as loaded", False, plain), ("offset_qzeros=True", True, plain),
                               ("g_idx left out", False, without_g_idx), ("as released, no causal mask", False, plain)):
        exllamav2.ext.make_q_matrix = make
        if name.startswith("as released"):  # exllamav2 0.3.2's own SDPA branch (the workbench's correction off)
            attention._attn_torch = getattr(fixed, "original", fixed)
        try:
            config = exllamav2.ExLlamaV2Config(str(loaded_from))
            config.checkpoint_offset_qzeros = offset
            match_transformers_config(config, json.loads((loaded_from / "config.json").read_text()))
            model = exllamav2.ExLlamaV2(config)
            model.load()
            out[f"logits_{name}"] = logits_of(lambda m=model: m.forward(ids.cpu()))
            with torch.inference_mode():
                lin = model.modules[1].q_proj.forward(x_h.clone()).float()
            out[f"logits_{name}"]["q_proj_vs_dequantized"] = rel(lin, deq["q_proj"])
            out[f"logits_{name}"]["weights"] = {k: v["rel"] for k, v in reconstructed(model, weights).items()}
            print(f"variant {name}:", out[f"logits_{name}"], flush=True)
            model.unload()
            del model
        except Exception as e:  # one variant that fails says so; the others still run
            out[f"logits_{name}"] = {"error": f"{type(e).__name__}: {e}"}
            print(f"variant {name}: {type(e).__name__}: {e}", flush=True)
        finally:
            exllamav2.ext.make_q_matrix = plain
            attention._attn_torch = fixed
            torch.cuda.empty_cache()
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
