"""Tests of the AutoGPTQ engine and of what crosses between the two environments.

`make test-legacy` runs this folder in .venv-autogptq (auto-gptq 0.7.1, transformers 4.57);
under the main environment the tests that need auto_gptq skip and say so, and the rest check
the main environment's side (the engine's kernels are listed, not loadable).
"""
