"""The study's arithmetic: agreement between logits, bytes per decode step, the floor."""

import math

import pytest
import torch

from workbench.errors import ConfigError
from workbench.studies.floor import floor_ms, kv_bytes_per_token
from workbench.studies.kernels import agreement


def test_agreement_of_identical_and_shifted_logits():
    ref = [torch.randn(5, 11), torch.randn(3, 11)]
    same = agreement("a", "b", ref, [r.clone() for r in ref], [[1, 2]], [[1, 2]])
    assert same.max_abs_dlogit == 0 and same.mean_kl_nats == 0
    assert same.top1_agreement == 1 and same.greedy_identical == 1
    shifted = agreement("a", "b", ref, [r + 0.5 for r in ref], [[1]], [[2]])
    # A constant shift changes every logit by 0.5 but not the distribution.
    assert math.isclose(shifted.max_abs_dlogit, 0.5, rel_tol=1e-6) and shifted.mean_kl_nats < 1e-6
    assert shifted.top1_agreement == 1 and shifted.greedy_identical == 0


def test_nan_never_passes():
    ref = [torch.randn(4, 7)]
    bad = ref[0].clone()
    bad[1, 3] = float("nan")
    a = agreement("a", "b", ref, [bad], [[1]], [[1]])
    assert math.isnan(a.max_abs_dlogit) and math.isnan(a.top1_agreement) and math.isnan(a.greedy_identical)
    assert a.nonfinite_share == 1 / 56


def test_floor_and_kv_bytes_match_facts():
    class Config:  # CodeFuse-CodeLlama-34B's attention shapes
        hidden_size, num_attention_heads, num_key_value_heads, num_hidden_layers = 8192, 64, 8, 48

    assert kv_bytes_per_token(Config()) == 192 * 1024  # docs/model-facts.md: 192 KiB per cached token
    assert math.isclose(floor_ms(18.4e9, 3020), 6.09, rel_tol=1e-2)  # docs/h100-baseline.md's floor
    assert floor_ms(1e9, None) is None


def test_study_configs_mirror_their_notebooks_and_name_a_bad_field():
    from workbench.studies import DecodingGridConfig, KernelStudyConfig, LatencyStudyConfig

    kernels = KernelStudyConfig(kernels=["torch", "marlin"], decode_modes=["eager", "graph"],
                                attention_kernels=["reference"], attentions=["sdpa"], reference="marlin")
    assert kernels.kernels == ("torch", "marlin") and kernels.compares_attention_on("marlin")
    assert not kernels.compares_attention_on("torch") and kernels.contexts == [kernels.prefill_tokens]
    for bad, field in [({"kernels": []}, "kernels"), ({"dtype": "int8"}, "dtype"),
                       ({"decode_tokens": 1}, "decode_tokens"), ({"decode_modes": ["turbo"]}, "decode_modes"),
                       ({"prove_steps": -1}, "prove_steps")]:
        with pytest.raises(ConfigError, match=f"KernelStudyConfig.{field}="):
            KernelStudyConfig(**bad)
    with pytest.raises(ConfigError, match="attention"):
        KernelStudyConfig(attentions=["flash-9"])
    assert LatencyStudyConfig(batch_sizes=[1, 8]).batch_sizes == (1, 8)
    for bad, field in [({"card_cells": "yes"}, "card_cells"), ({"contexts": [0]}, "contexts"),
                       ({"decode_modes": ["eager", "turbo"]}, "decode_modes"),
                       ({"long_new_tokens": 1}, "long_new_tokens")]:
        with pytest.raises(ConfigError, match=f"LatencyStudyConfig.{field}="):
            LatencyStudyConfig(**bad)
    assert DecodingGridConfig(temperatures=[0.5], top_ps=[0.9]).point(0.5, 0.9).temperature == 0.5
    with pytest.raises(ConfigError, match="DecodingGridConfig.samples="):
        DecodingGridConfig(samples=0)
    with pytest.raises(ConfigError, match="DecodeConfig.top_p="):  # a grid point's own settings are checked too
        DecodingGridConfig(top_ps=[1.5])


def test_floor_share_and_median():
    from workbench.measure import median
    from workbench.studies.floor import floor_share

    assert floor_share(6.0, 12.0) == 0.5
    assert floor_share(None, 12.0) is None and floor_share(6.0, float("nan")) is None
    # the middle value, or the mean of the middle two
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([4.0, 1.0, 2.0, 3.0]) == 2.5
