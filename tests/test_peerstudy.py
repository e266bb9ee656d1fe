"""bench-peer end to end on the demo model on the CPU: every path gives a row, measured or with its
reason, the fast path is proven before it is timed, and the table puts them side by side."""

import pytest

from workbench.errors import ConfigError
from workbench.studies.peer import LADDER, PeerBenchConfig, bench_peer, table


def test_config_is_validated():
    with pytest.raises(ConfigError, match="unknown steps"):
        PeerBenchConfig(ladder=("fused", "turbo"))
    with pytest.raises(ConfigError, match="steps=0"):
        PeerBenchConfig(steps=0)
    assert list(LADDER) == ["fused", "+compile", "+filled-attention", "+dense-prefill", "+store-in-rotary",
                            "+combo-kernels", "+triton-gemv"]
    with pytest.raises(ConfigError, match="peer_attentions"):
        PeerBenchConfig(peer_attentions=("flash",))


@pytest.mark.slow
def test_bench_peer_on_the_cpu(demo_model_path):
    config = PeerBenchConfig(contexts=(24,), steps=4, prefill_tokens=24, prefill_repeats=1, prove_steps=4,
                             kernel="torch", ladder=("fused", "+compile"), profile=False)
    saved = []
    result = bench_peer(demo_model_path, "cpu", config, log=lambda line: None, save=saved.append)
    rows = {(r["path"], r.get("context_tokens"), "ttft_ms" in r): r for r in result["rows"]}
    assert "why_not" in rows[("exllamav2-engine", None, False)]  # no package / no CUDA here: a reason, not a number
    assert "CUDA" in rows[("torch graph", None, False)]["why_not"]
    fused = rows[("torch fast fused", 24, False)]
    assert fused["token_ms_p50"] > 0 and fused["decode_mode"] == "fast" and fused["steps"] == 4
    assert rows[("torch fast fused", None, True)]["ttft_ms"] > 0
    assert "needs a CUDA device" in rows[("torch fast +compile", None, False)]["why_not"]
    assert [p["path"] for p in result["proofs"]] == ["torch fast fused"] and result["proofs"][0]["passed"]
    assert saved and saved[-1] is result
    text = table(result)
    assert "torch fast fused" in text and "yes" in text and "needs a CUDA device" in text
