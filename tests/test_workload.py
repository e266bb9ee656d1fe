"""The workload runner: continuous batching on the demo model, against one-at-a-time generation."""

from __future__ import annotations

import pytest

import workbench as wb
from workbench.errors import BatchMemoryError, ConfigError, PromptError
from workbench.generation import slots, workload
from workbench.generation.modes import resolve_mode
from workbench.generation.workload import WorkItem, WorkloadConfig, run_workload
from workbench.humaneval.protocol import build_prompt, load_problems
from workbench.studies.answer_equality import compare_answers

pytestmark = pytest.mark.slow

PROMPTS = [build_prompt(p) for p in load_problems().values()]


def one_at_a_time(loaded, prompts, config):
    return [wb.generate(loaded, p, config, format="raw", decode_mode="eager", logprobs=False) for p in prompts]


def test_greedy_answers_equal_one_at_a_time_over_the_humaneval_prompts(demo_loaded):
    """The equality statement: the runner's greedy answers (refilled batches of 16, static) are the
    one-at-a-time eager answers, except where the two tokens' logits are within the decode-mode
    proof's tolerance (a near tie another batch shape may flip). On the CPU in float32 there were none."""
    config = wb.DecodeConfig.greedy(max_new_tokens=6)
    reference = one_at_a_time(demo_loaded, PROMPTS, config)
    records = run_workload(demo_loaded, PROMPTS, config, format="raw", batch_size=16, decode_mode="static",
                           progress=False)
    ids = [r.token_ids for r in records]
    prompts_ids = [wb.encode_prompt(demo_loaded.tokenizer, [{"role": "human", "content": p}], format="raw")
                   for p in PROMPTS]
    eq = compare_answers(demo_loaded, prompts_ids, [r.token_ids for r in reference], ids)
    assert eq.answers == 164 and eq.passed, eq.divergences
    assert eq.share_identical >= 0.98
    assert [r.text for r, ref in zip(records, reference) if r.token_ids == ref.token_ids] == \
        [ref.text for r, ref in zip(records, reference) if r.token_ids == ref.token_ids]


def test_each_row_ends_on_its_own_and_its_record_says_how_it_ran(demo_loaded):
    items = [WorkItem(prompt=p, max_new_tokens=n) for p, n in zip(PROMPTS[:7], (3, 9, 1, 5, 12, 2, 7))]
    finished = []
    records = run_workload(demo_loaded, items, wb.DecodeConfig.greedy(max_new_tokens=64), format="raw",
                           batch_size=3, decode_mode="static", refill_min=1, progress=False,
                           on_record=lambda i, r: finished.append(i))
    reference = [wb.generate(demo_loaded, it.prompt, wb.DecodeConfig.greedy(max_new_tokens=it.max_new_tokens),
                             format="raw", decode_mode="eager", logprobs=False) for it in items]
    assert [r.token_ids for r in records] == [r.token_ids for r in reference]
    assert [r.stop_reason for r in records] == [r.stop_reason for r in reference]
    assert sorted(finished) == list(range(7)) and finished != list(range(7))  # they end in their own order
    for r, it in zip(records, items):
        assert r.new_tokens <= it.max_new_tokens and r.config.max_new_tokens == it.max_new_tokens
        assert r.batch_size == 3 and r.decode_mode == "static" and r.decode_mode_requested == "static"
        assert len(r.token_times_s) == r.new_tokens and r.ttft_s == r.token_times_s[0] >= r.prefill_s > 0
        assert r.token_times_s == sorted(r.token_times_s) and r.queued_s >= 0 and r.prompt_text == it.prompt
    assert {r.batch_index for r in records} == {0, 1, 2}  # seven prompts through three slots
    assert max(r.queued_s for r in records) > 0  # later prompts waited for a free slot


def test_eos_and_stop_strings_end_rows_and_logprobs_match_generate(demo_loaded):
    config = wb.DecodeConfig.greedy(max_new_tokens=48, stop=("\n\n",))
    prompts = ['def add(a, b):\n    """Add two numbers."""', 'def is_even(n):\n    """Whether n is even."""']
    records = run_workload(demo_loaded, prompts, config, batch_size=2, decode_mode="static", logprobs=True,
                           top_logprobs=3, progress=False)
    reference = [wb.generate(demo_loaded, p, config, decode_mode="eager", top_logprobs=3) for p in prompts]
    assert [(r.text, r.stop_reason) for r in records] == [(r.text, r.stop_reason) for r in reference]
    assert {r.stop_reason for r in records} <= {"eos", "stop_string", "max_new_tokens"}
    for r, ref in zip(records, reference):
        assert r.logprobs == pytest.approx(ref.logprobs, abs=1e-3)
        assert [t.id for t in r.top_logprobs[0]] == [t.id for t in ref.top_logprobs[0]]


def test_sampling_penalty_and_min_new_tokens_follow_each_row(demo_loaded):
    sampled = wb.DecodeConfig(do_sample=True, temperature=0.9, top_p=0.9, top_k=40, max_new_tokens=8)
    items = [WorkItem(prompt=p, seed=100 + i) for i, p in enumerate(PROMPTS[:5])]
    a = run_workload(demo_loaded, items, sampled, format="raw", batch_size=2, decode_mode="static", progress=False)
    b = run_workload(demo_loaded, items[::-1], sampled, format="raw", batch_size=4, decode_mode="static",
                     progress=False)
    assert [r.token_ids for r in a] == [r.token_ids for r in b[::-1]]  # a sample depends on its seed, not its batch
    assert [r.config.seed for r in a] == [100, 101, 102, 103, 104]
    penalized = wb.DecodeConfig.greedy(max_new_tokens=10, min_new_tokens=6, repetition_penalty=1.3)
    records = run_workload(demo_loaded, PROMPTS[:4], penalized, format="raw", batch_size=2, decode_mode="static",
                           progress=False)
    assert [r.token_ids for r in records] == [r.token_ids for r in one_at_a_time(demo_loaded, PROMPTS[:4], penalized)]


def test_eager_batches_and_auto(demo_loaded, capsys):
    config = wb.DecodeConfig.greedy(max_new_tokens=5)
    records = run_workload(demo_loaded, PROMPTS[:3], config, format="raw", batch_size=2, decode_mode="eager")
    assert [r.token_ids for r in records] == [r.token_ids for r in one_at_a_time(demo_loaded, PROMPTS[:3], config)]
    assert sorted(r.batch_size for r in records) == [1, 2, 2] and {r.decode_mode for r in records} == {"eager"}
    assert "prompt" in capsys.readouterr().err  # the progress bar
    auto = run_workload(demo_loaded, PROMPTS[:2], config, format="raw", progress=False)
    assert {(r.decode_mode, r.decode_mode_requested) for r in auto} == {("static", "auto")}
    assert auto[0].decode_note.startswith("auto: static for a workload on cpu")
    single = wb.generate(demo_loaded, PROMPTS[0], config, format="raw")
    assert (single.decode_mode, single.decode_mode_requested) == ("eager", "auto")
    assert single.decode_note.startswith("auto: eager on cpu")


def test_auto_picks_by_device():
    greedy, beams = wb.DecodeConfig.greedy(), wb.DecodeConfig.greedy(num_beams=2)
    assert resolve_mode("auto", "cuda:0", greedy)[0] == "graph"
    assert resolve_mode("auto", "cuda", greedy, workload=True)[0] == "graph"
    assert resolve_mode("auto", "cpu", greedy)[0] == "eager"
    assert resolve_mode("auto", "cpu", greedy, workload=True)[0] == "static"
    assert resolve_mode("auto", "cuda", beams)[0] == "eager"
    assert resolve_mode("static", "cuda", greedy) == ("static", "")


def test_bad_input_is_refused_by_name(demo_loaded):
    for fields, match in [({"batch_size": 0}, "batch_size"), ({"batch_size": 2.5}, "batch_size"),
                          ({"batch_size": True}, "batch_size"),
                          ({"decode_mode": "turbo"}, "decode_mode"),
                          ({"top_logprobs": -1}, "top_logprobs"), ({"batch_size": 4, "refill_min": 5}, "refill_min"),
                          ({"prefill_tokens": 0}, "prefill_tokens"), ({"dense_prefill_rows": -1}, "dense_prefill_rows"),
                          ({"dense_prefill_rows": True}, "dense_prefill_rows"), ({"cache_length": 0}, "cache_length")]:
        with pytest.raises(ConfigError, match=match):
            WorkloadConfig(**fields)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        WorkItem(prompt="x", max_new_tokens=0)
    with pytest.raises(ConfigError, match="prompt 1: min_new_tokens=9 is above its max_new_tokens=4"):
        run_workload(demo_loaded, ["a", WorkItem(prompt="b", max_new_tokens=4, min_new_tokens=9)], progress=False)
    with pytest.raises(PromptError, match="prompt 1: .* > the context of 64 tokens"):
        run_workload(demo_loaded, ["short", "long " * 80], wb.DecodeConfig.greedy(max_new_tokens=8), max_context=64,
                     progress=False)
    with pytest.raises(ConfigError, match="non-empty list"):
        run_workload(demo_loaded, [], progress=False)
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        run_workload(demo_loaded, ["x"], decode_mode="graph", progress=False)
    with pytest.raises(ConfigError, match="dense_prefill_rows=8 works on the slot loop's prefill"):
        run_workload(demo_loaded, ["x"], decode_mode="eager", dense_prefill_rows=8, progress=False)
    with pytest.raises(ConfigError, match="cache_length=256 sizes the slot loop's cache"):
        run_workload(demo_loaded, ["x"], decode_mode="eager", cache_length=256, progress=False)
    needed = workload.slot_cache_length(demo_loaded, ["x", "a longer prompt"], wb.DecodeConfig.greedy(max_new_tokens=8))
    with pytest.raises(ConfigError, match=f"cache_length=8 is below what this workload needs: {needed}"):
        run_workload(demo_loaded, ["x", "a longer prompt"], wb.DecodeConfig.greedy(max_new_tokens=8),
                     decode_mode="static", cache_length=8, progress=False)
    with pytest.raises(ConfigError, match="beam search"):
        run_workload(demo_loaded, ["x"], wb.DecodeConfig.greedy(num_beams=2), decode_mode="static", progress=False)


def test_dense_prefill_answers_equal_the_kernels_and_records_say_which_ran(demo_loaded):
    """Prefill passes of at least N rows dequantize each weight once and run a dense GEMM; the
    decode steps keep the loaded kernel. Its greedy answers are the plain runner's, except at near
    ties; each record says whether its own prompt's pass ran dense; the copies go with release."""
    from workbench.generation.fast import DensePrefill

    config = wb.DecodeConfig.greedy(max_new_tokens=5)
    prompts = [WorkItem(prompt=p, max_new_tokens=1 + i % 5) for i, p in enumerate(PROMPTS[:12])]  # rows end apart
    plain = run_workload(demo_loaded, prompts, config, format="raw", batch_size=4, decode_mode="static",
                         progress=False)
    calls = []
    real = DensePrefill.applied

    def applied(self, rows):
        calls.append(rows)
        return real(self, rows)

    try:
        DensePrefill.applied = applied
        # the first pass (4 prompts) is above the threshold, the one-prompt refills below it
        dense = run_workload(demo_loaded, prompts, config, format="raw", batch_size=4, decode_mode="static",
                             progress=False, refill_min=1, dense_prefill_rows=600)
    finally:
        DensePrefill.applied = real
    assert any(c >= 600 for c in calls) and any(c < 600 for c in calls), calls
    ids = [wb.encode_prompt(demo_loaded.tokenizer, [{"role": "human", "content": p.prompt}], format="raw")
           for p in prompts]
    eq = compare_answers(demo_loaded, ids, [r.token_ids for r in plain], [r.token_ids for r in dense])
    assert eq.passed, eq.divergences
    notes = [r.decode_note for r in dense]
    assert all("dense prefill from 600 rows" in n for n in notes)
    assert any("ran dequantize + cuBLAS" in n for n in notes) and any("ran the loaded kernel" in n for n in notes)
    assert not any("dense" in r.decode_note for r in plain)
    # the module's own forward is back after each pass: a plain run again gives the plain answers
    again = run_workload(demo_loaded, prompts, config, format="raw", batch_size=4, decode_mode="static",
                         progress=False)
    assert [r.token_ids for r in again] == [r.token_ids for r in plain]
    assert demo_loaded.dense_prefill is not None and demo_loaded.dense_prefill.min_rows == 600


def test_the_fast_step_runs_the_workload_with_slots(demo_loaded):
    """decode_mode="fast": the fast step with one position per row, rows
    refilled as they end. Its greedy answers are the static slot loop's (identical on the CPU in
    float32, or parting at near ties); its records say what ran; what it cannot do is refused."""
    from workbench.generation.fast import FastConfig, set_fast_config

    config = wb.DecodeConfig.greedy(max_new_tokens=12)
    items = [WorkItem(prompt=p, max_new_tokens=2 + (i * 5) % 9) for i, p in enumerate(PROMPTS[:10])]
    static = run_workload(demo_loaded, items, config, format="raw", batch_size=4, decode_mode="static",
                          progress=False, refill_min=1)
    try:
        set_fast_config(demo_loaded, FastConfig(fuse=False))  # the CPU's auto kernel (torch_fused) is not fusable
        fast = run_workload(demo_loaded, items, config, format="raw", batch_size=4, decode_mode="fast",
                            progress=False, refill_min=1)
        ids = [wb.encode_prompt(demo_loaded.tokenizer, [{"role": "human", "content": it.prompt}], format="raw")
               for it in items]
        eq = compare_answers(demo_loaded, ids, [r.token_ids for r in static], [r.token_ids for r in fast])
        assert eq.passed, eq.divergences
        assert [r.new_tokens for r in fast] == [it.max_new_tokens for it in items]  # each row ended on its own
        assert {r.decode_mode for r in fast} == {"fast"} and {r.batch_size for r in fast} == {4}
        assert all("slots: one position per row" in r.decode_note and "separate q/k/v" in r.decode_note for r in fast)
        with pytest.raises(ConfigError, match="FastConfig\\(dense_prefill_rows"):
            run_workload(demo_loaded, ["x"], decode_mode="fast", dense_prefill_rows=8, progress=False)
        set_fast_config(demo_loaded, FastConfig(fuse=False, attention="filled"))  # a Triton kernel: CUDA only
        with pytest.raises(ConfigError, match="needs a CUDA device"):
            run_workload(demo_loaded, ["x"], decode_mode="fast", progress=False)
    finally:
        set_fast_config(demo_loaded, FastConfig())


def test_the_fast_steps_tail_narrows_and_keeps_every_rows_answer(demo_loaded):
    """FastConfig.narrow_to: once no prompt waits, the rows left move to the front and step at a
    narrower width. Every row's answer is the one the full-width loop gives (greedy with a
    repetition penalty and min_new_tokens, and seeded sampling, whose per-row generators move with
    their rows), the records say the width they ended at, and the widths are made before the
    workload, once."""
    from workbench.generation.fast import FastConfig, set_fast_config

    items = [WorkItem(prompt=p, max_new_tokens=2 + (i * 7) % 13, seed=100 + i) for i, p in enumerate(PROMPTS[:11])]
    configs = [wb.DecodeConfig.greedy(max_new_tokens=16).replace(repetition_penalty=1.3, min_new_tokens=2),
               wb.DecodeConfig(do_sample=True, temperature=0.9, top_p=0.95, max_new_tokens=16, seed=7)]
    try:
        for config in configs:
            set_fast_config(demo_loaded, FastConfig(fuse=False))
            full = run_workload(demo_loaded, items, config, format="raw", batch_size=8, decode_mode="fast",
                                progress=False, refill_min=2)
            set_fast_config(demo_loaded, FastConfig(fuse=False, narrow_to=1))
            narrow = run_workload(demo_loaded, items, config, format="raw", batch_size=8, decode_mode="fast",
                                  progress=False, refill_min=2)
            assert [r.token_ids for r in narrow] == [r.token_ids for r in full]
            assert [r.new_tokens for r in narrow] == [it.max_new_tokens for it in items]
            widths = {r.decode_note.split("its last steps ran ")[1].split(" ")[0] for r in narrow
                      if "its last steps ran" in r.decode_note}
            assert widths and widths <= {"1", "2", "4"}, widths  # the last rows ended in narrower steps
            assert all("tail narrowed down to 1 rows" in r.decode_note for r in narrow)
            decoder = demo_loaded.decoder[1]
            assert decoder.tail_widths() == [1, 2, 4] and decoder.prepare_tail() == 0.0  # made once, kept
    finally:
        set_fast_config(demo_loaded, FastConfig())


def test_compacting_moves_each_rows_cache_and_state(demo_loaded):
    """compact(rows) puts the given rows' caches, positions, masks and flags at the front, in that
    order, and leaves the rows after them idle; RowChooser.compact moves the per-row counts alike;
    a width the decoder cannot step is refused by name."""
    import torch

    from workbench.generation.fast import FastConfig, set_fast_config
    from workbench.generation.sampling import RowChooser

    try:
        set_fast_config(demo_loaded, FastConfig(fuse=False, narrow_to=2))
        decoder = slots.slot_decoder_for(demo_loaded, 4, 32, "fast")
        assert decoder.tail_widths() == [2] and decoder.width_for(1) == 2 and decoder.width_for(3) == 4
        for i, k in enumerate(decoder.k_cache):
            k.copy_(torch.arange(4, dtype=k.dtype).view(4, 1, 1, 1) + 10 * i)
        decoder.pos.copy_(torch.tensor([5, 6, 7, 8]))
        decoder.active.copy_(torch.tensor([1, 0, 1, 1]))
        decoder.compact([3, 0])
        assert [int(k[r, 0, 0, 0]) for k in decoder.k_cache[:2] for r in range(2)] == [3, 0, 13, 10]
        assert decoder.pos[:2].tolist() == [8, 5] and decoder.active.tolist() == [1, 1, 0, 0]
        chooser = RowChooser(wb.DecodeConfig.greedy(), demo_loaded.tokenizer, 4, 32, torch.device("cpu"))
        chooser.new_tokens.copy_(torch.tensor([1, 2, 3, 4]))
        chooser.compact([3, 0])
        assert chooser.new_tokens[:2].tolist() == [4, 1]
        with pytest.raises(ConfigError, match="narrow\\(0\\): a width between 1 and"):
            decoder.narrow(0)
        with pytest.raises(ConfigError, match="FastConfig.narrow_to=-1"):
            FastConfig(narrow_to=-1)
    finally:
        set_fast_config(demo_loaded, FastConfig())


def test_workloads_of_one_cache_length_share_one_decoder(demo_loaded):
    """WorkloadConfig.cache_length: short workloads sized like a longer one run on one decoder of that
    length (a warm-up before a timed run compiles and captures what the timed run uses), and their
    answers are those of their own default cache."""
    config = wb.DecodeConfig.greedy(max_new_tokens=10)
    short = [WorkItem(prompt=p, max_new_tokens=2) for p in PROMPTS[:3]]
    length = workload.slot_cache_length(demo_loaded, PROMPTS[:6], config.replace(max_new_tokens=400), format="raw")
    assert length > workload.slot_cache_length(demo_loaded, short, config, format="raw")
    own = run_workload(demo_loaded, short, config, format="raw", batch_size=2, decode_mode="static", progress=False)
    sized = run_workload(demo_loaded, short, config, format="raw", batch_size=2, decode_mode="static", progress=False,
                         cache_length=length)
    decoder = demo_loaded.decoder
    assert decoder[0] == ("slots", 2, length, "static")
    run_workload(demo_loaded, PROMPTS[3:7], config, format="raw", batch_size=2, decode_mode="static", progress=False,
                 cache_length=length)
    assert demo_loaded.decoder is decoder
    assert [r.token_ids for r in sized] == [r.token_ids for r in own]


def test_a_batch_that_does_not_fit_names_one_that_would_and_keeps_what_finished(demo_loaded, monkeypatch):
    import torch

    real_step, steps = slots.SlotDecoder.step, []

    def step(self, tokens):
        steps.append(1)
        if len(steps) == 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_step(self, tokens)

    monkeypatch.setattr(slots.SlotDecoder, "step", step)
    kept = []
    items = [WorkItem(prompt=p, max_new_tokens=n) for p, n in zip(PROMPTS[:6], (1, 2, 30, 30, 30, 30))]
    with pytest.raises(BatchMemoryError) as e:
        run_workload(demo_loaded, items, format="raw", batch_size=4, decode_mode="static", refill_min=1,
                     progress=False, on_record=lambda i, r: kept.append(i))
    assert e.value.batch_size == 4 and 1 <= e.value.fits <= 2
    assert "batch_size=4 does not fit" in str(e.value) and f"batch_size={e.value.fits} would fit" in str(e.value)
    assert sorted(kept) == [0, 1] and [r.new_tokens for r in e.value.finished] == [1, 2]
    assert demo_loaded.decoder is None  # the cache that did not fit is released
    monkeypatch.setattr(workload, "_batch_that_fits", lambda *a: 3)  # the message uses the estimate as given
    steps.clear()
    with pytest.raises(BatchMemoryError, match="batch_size=3 would fit"):
        run_workload(demo_loaded, items, format="raw", batch_size=4, decode_mode="static", progress=False)


def test_the_benchmark_times_every_path_on_one_workload(demo_loaded):
    from workbench.studies.workload_bench import bench_workload, format_row

    lines = []
    result = bench_workload(demo_loaded, [2, 4], limit=4, eager_limit=2, decode_mode="static", batch_api_sizes=(2,),
                            cap=6, dense_prefill_rows=(0, 64), log=lines.append)
    paths = [(r["path"], r["batch_size"]) for r in result["rows"]]
    dense = "runner, dense prefill from 64 rows"
    assert paths == [("one at a time, eager", 1), ("batch API (rows run to the longest)", 2),
                     ("runner", 2), (dense, 2), ("runner", 4), (dense, 4)]
    assert result["rows"][3]["dense_prefill_build_s"] >= 0 and "dense_prefill_build_s" not in result["rows"][2]
    assert "not counted" in format_row(result["rows"][3]) and result["equality"]["2+dense64"]["passed"]
    budgets = result["workload"]["budgets"]
    assert result["rows"][2]["useful_tokens"] == sum(budgets)  # every row ran exactly its budget
    assert result["rows"][0]["useful_tokens"] == sum(budgets[:2])
    assert result["rows"][0]["subset"] == "first 2 of 4 problems"
    assert all(r["useful_tokens_per_s"] > 0 and r["total_s"] > 0 for r in result["rows"])
    assert result["equality"]["2"]["answers"] == 2 and result["equality"]["2"]["passed"]
    assert "useful tokens/s" in format_row(result["rows"][2]) and len(lines) >= 5


def test_the_benchmark_sweeps_fast_configs_refills_and_repeats(demo_loaded):
    """One process runs every fast config x refill threshold x repeat: each row says which, the
    answers are compared on the first run of each, a config the model cannot run leaves rows that
    say why (the others still run), and a bad repeat count is refused by name."""
    from workbench.generation.fast import FastConfig, fast_config, set_fast_config
    from workbench.studies.workload_bench import bench_workload

    configs = (FastConfig(fuse=False), FastConfig(fuse=True))
    try:
        result = bench_workload(demo_loaded, [2], limit=3, eager_limit=1, decode_mode="fast", cap=3,
                                refill_mins=(None, 1), fast_configs=configs, repeats=2, log=lambda line: None)
        runs = [(r["fast_config"]["fuse"], r["refill_min"], r["run"]) for r in result["rows"][1:]]
        assert runs == [(f, r, n) for f in (False, True) for r in (None, 1) for n in (1, 2)]
        ran, refused = result["rows"][1:5], result["rows"][5:]
        assert all(r["modes_ran"] == ["fast"] and "error" not in r for r in ran)
        assert all("FastConfig(fuse=True) rebuilds" in r["error"] for r in refused)  # demo_loaded runs torch_fused
        assert ran[1]["path"] == "runner (run 2 of 2)" and "refill at 1 free" in ran[2]["path"]
        assert sorted(result["equality"]) == ["2+fast0", "2+refill1+fast0"]
        assert fast_config(demo_loaded) == configs[-1]
        with pytest.raises(ConfigError, match="repeats=0"):
            bench_workload(demo_loaded, [2], limit=1, eager_limit=1, repeats=0, log=lambda line: None)
    finally:
        set_fast_config(demo_loaded, FastConfig())
