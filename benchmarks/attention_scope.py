"""What applying the attention choice per forward costs, against the process-wide switch it
replaced: the same greedy generation, scoped and process-wide in alternating order, paired within
rounds; and the hook pair alone, timed over many calls.

Scoped: the model's forward hooks set SDPA's switches on entry and put them back on exit (what
load_model does now). Process-wide: the hooks removed and the switches set once for the process
(what it did before). Both run the same attention, so their tokens must be identical.

    python benchmarks/attention_scope.py MODEL [--kernel K] [--device D] [--tokens 128] [--rounds 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def hook_pair_us(scope, calls: int = 20000) -> float:
    """Host µs of one entry and exit of the scope (what every forward pays)."""
    t = time.perf_counter()
    for _ in range(calls):
        scope.__enter__()
        scope.__exit__(None, None, None)
    return (time.perf_counter() - t) / calls * 1e6


def run(loaded, ids, tokens: int, scoped: bool):
    from workbench.generation.config import DecodeConfig
    from workbench.generation.generate import generate_ids
    from workbench.model.attention import attention_scope

    scope = attention_scope(loaded.model)
    if not scoped:  # the old way: the switches set once for the process, no hooks
        scope.detach(loaded.model)
        scope.__enter__()
    try:
        return generate_ids(loaded, [ids], DecodeConfig.forced(tokens), logprobs=False)[0]
    finally:
        if not scoped:
            scope.__exit__(None, None, None)
            scope.attach(loaded.model)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--kernel", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args(argv)
    from workbench.model.attention import attention_scope
    from workbench.model.libraries import quiet
    from workbench.model.load import load_model, resolve_model
    from workbench.prompts.encoding import prompt_ids_of_length

    quiet()
    loaded = load_model(resolve_model(args.model), kernel=args.kernel, device=args.device)
    ids = prompt_ids_of_length(loaded.tokenizer, args.prompt_tokens)
    run(loaded, ids, 8, True)  # warm up both ways: kernels built, allocator grown
    run(loaded, ids, 8, False)
    p50 = {True: [], False: []}
    tokens = {}
    for r in range(args.rounds):
        for scoped in ((True, False) if r % 2 == 0 else (False, True)):
            rec = run(loaded, ids, args.tokens, scoped)
            p50[scoped].append(rec.token_ms_p50)
            tokens.setdefault(scoped, rec.token_ids)
    diffs = [(s - p) / p * 100 for s, p in zip(p50[True], p50[False])]
    print(json.dumps({
        "device": loaded.load_record.env.get("device_name"), "kernel": loaded.kernel, "attention": loaded.attention,
        "hook_pair_us": round(hook_pair_us(attention_scope(loaded.model)), 2),
        "rounds": args.rounds, "tokens": args.tokens,
        "scoped_token_ms_p50": round(statistics.median(p50[True]), 4),
        "process_wide_token_ms_p50": round(statistics.median(p50[False]), 4),
        "scoped_minus_process_wide_pct_median": round(statistics.median(diffs), 2),
        "pct_quartiles": [round(q, 2) for q in statistics.quantiles(diffs, n=4)] if len(diffs) > 1 else None,
        "tokens_identical": tokens[True] == tokens[False],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
