"""quiet(): the libraries' warnings are hidden by the modules that emit them, nobody else's."""

import warnings

from workbench.model.libraries import LIBRARIES, quiet


def _warn_from(module: str, category) -> None:
    """warnings.warn as code in `module` calls it (a warning is attributed to its module)."""
    exec(compile(f"warnings.warn('from {module}', {category.__name__})", f"<{module}>", "exec"),
         {"__name__": module, "warnings": warnings, category.__name__: category})


def test_quiet_hides_library_warnings_and_keeps_everyone_elses():
    with warnings.catch_warnings(record=True) as shown:  # the process's filters come back afterwards
        warnings.simplefilter("always")
        quiet()
        for module in ("transformers.generation.utils", "torch.nn.modules.module", "gptqmodel.models.base", "peft"):
            for category in (UserWarning, FutureWarning):
                _warn_from(module, category)
        for module in ("__main__", "my_analysis", "workbench.generation.generate", "torchvision_like"):
            _warn_from(module, UserWarning)
            _warn_from(module, FutureWarning)
    assert sorted(str(w.message) for w in shown) == sorted(
        f"from {m}" for m in ("__main__", "my_analysis", "workbench.generation.generate", "torchvision_like")
        for _ in range(2))


def test_the_library_list_names_the_engines():
    assert {"torch", "transformers", "gptqmodel", "auto_gptq", "accelerate"} <= set(LIBRARIES)
