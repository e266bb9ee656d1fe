"""The workload runner's greedy answers against one-at-a-time eager answers, on a GPU, per mode and
batch size, and what an answer that parts without a near tie has to say for itself.

    python benchmarks/runner_check.py MODEL --kernel torch --device cuda --limit 32 --batch-sizes 8 16

Issue 19's first H200 call saw one such answer (demo model, gptqmodel's torch kernel, batch 8,
graph: problem 8 from its first token, logit gap 12.6 against a tolerance of 0.13). For each
answer that parts without a near tie this script asks three questions on the spot: does
one-at-a-time eager still give the reference answer (something the runner left behind changed
the plain path), does the runner give it with that prompt alone (the batch's company), and what
the runner's own logits of the first differing step were (from a rerun with log-probabilities).
Writes the whole account as JSON with --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--kernel", default="torch")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--limit", type=int, default=32, help="the first N HumanEval prompts")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--modes", nargs="+", default=["graph", "static"])
    parser.add_argument("--fast-config", nargs="+", metavar="FIELD=VALUE", default=[],
                        help="FastConfig fields for --modes fast, e.g. fuse=1 compile=1 attention=filled")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import workbench as wb
    from workbench.generation.workload import run_workload
    from workbench.humaneval.protocol import build_prompt, load_problems
    from workbench.studies.answer_equality import compare_answers

    loaded = wb.load_model(args.model, kernel=args.kernel, device=args.device)
    if args.fast_config:
        from workbench.generation.fast import parse_fast_config, set_fast_config

        set_fast_config(loaded, parse_fast_config(args.fast_config))
    prompts = [build_prompt(p) for p in list(load_problems().values())[: args.limit]]
    config = wb.DecodeConfig.greedy(max_new_tokens=args.max_new_tokens)
    prompt_ids = [wb.encode_prompt(loaded.tokenizer, [{"role": "human", "content": p}], format="raw") for p in prompts]

    def eager(indices):
        return [wb.generate(loaded, prompts[i], config, format="raw", decode_mode="eager").token_ids for i in indices]

    t = time.perf_counter()
    reference = eager(range(len(prompts)))
    print(f"{loaded.kernel} on {args.device}: {len(prompts)} prompts one at a time, eager, in "
          f"{time.perf_counter() - t:.1f} s", flush=True)
    account = {"model": args.model, "kernel": loaded.kernel, "device": args.device, "limit": len(prompts),
               "max_new_tokens": args.max_new_tokens, "runs": []}
    for mode in args.modes:
        for batch in args.batch_sizes:
            records = run_workload(loaded, prompts, config, format="raw", batch_size=batch, decode_mode=mode,
                                   progress=False)
            answers = [r.token_ids for r in records]
            eq = compare_answers(loaded, prompt_ids, reference, answers)
            ran = records[0].decode_mode
            print(f"mode {mode} (ran {ran}) batch {batch}: {eq.identical}/{eq.answers} identical, every "
                  f"difference a near tie: {eq.passed}", flush=True)
            run = {"mode": mode, "ran": ran, "batch": batch, "note": records[0].decode_note,
                   "equality": eq.to_dict(), "questions": []}
            for d in eq.divergences:
                print(f"    problem {d['index']} from step {d['step']}: gap {d['logit_gap']}, tolerance "
                      f"{d['tolerance']}, near tie {d['near_tie']}", flush=True)
                if d["near_tie"]:
                    continue
                i, step = d["index"], d["step"]
                again = eager([i])[0]
                alone = run_workload(loaded, [prompts[i]], config, format="raw", batch_size=batch, decode_mode=mode,
                                     progress=False)[0].token_ids
                rerun = run_workload(loaded, prompts, config, format="raw", batch_size=batch, decode_mode=mode,
                                     logprobs=True, top_logprobs=3, progress=False)[i]
                q = {"index": i, "step": step, "eager_again_equal": again == reference[i],
                     "alone_equal": alone == reference[i], "rerun_equal_to_first_run": rerun.token_ids == answers[i],
                     "rerun_top": [[t.id, t.logprob] for t in (rerun.top_logprobs[step] if rerun.top_logprobs
                                                                        and step < len(rerun.top_logprobs) else [])],
                     "reference_token": reference[i][step] if step < len(reference[i]) else None}
                print("        " + json.dumps(q), flush=True)
                run["questions"].append(q)
            account["runs"].append(run)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(account, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
