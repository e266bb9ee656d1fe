"""HumanEval the way codefuse-ai scored it: the protocol, the sandbox, scoring and whole runs."""

from .protocol import (
                       CARD_PASS_AT_1,
                       LANGUAGE_LINE,
                       N_PROBLEMS,
                       HumanEvalError,
                       Problem,
                       build_prompt,
                       check_program,
                       extract_completion,
                       load_problems,
                       pass_at_k,
)
from .runner import (
                       GENERATIONS_FILE,
                       RESULTS_FILE,
                       SUMMARY_FILE,
                       generate_answers,
                       line_key,
                       run,
                       sample_seed,
                       score_answers,
                       select_problems,
)
from .sandbox import SandboxError, SandboxLimits, SandboxResult, run_python
from .score import DEFAULT_TIMEOUT_S, STATUSES, CompletionResult, EvalReport, ScoringPool, evaluate

__all__ = ["CARD_PASS_AT_1", "DEFAULT_TIMEOUT_S", "GENERATIONS_FILE", "LANGUAGE_LINE", "N_PROBLEMS", "RESULTS_FILE",
           "STATUSES", "SUMMARY_FILE", "CompletionResult", "EvalReport", "HumanEvalError", "Problem", "SandboxError",
           "SandboxLimits", "SandboxResult", "ScoringPool", "build_prompt", "check_program", "evaluate",
           "extract_completion", "generate_answers", "line_key", "load_problems", "pass_at_k", "run", "run_python",
           "sample_seed", "score_answers", "select_problems"]
