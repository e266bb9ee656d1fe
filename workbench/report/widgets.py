"""Interactive controls for JupyterLab: sliders that regenerate one answer live.

The callbacks are plain methods, so tests drive them without a browser and papermill runs
never need the widgets to render.
"""

from __future__ import annotations

from ..generation.config import DecodeConfig
from ..generation.generate import generate


class DecodingExplorer:
    """Sliders for temperature, top-p, top-k, repetition penalty and seed over one prompt;
    every change regenerates the answer into one output area, replacing the old one."""

    def __init__(self, loaded, prompt, format: str = "codefuse", max_new_tokens: int = 48,
                 config: DecodeConfig | None = None):
        import ipywidgets as w

        self.loaded, self.prompt, self.format = loaded, prompt, format
        base = config or DecodeConfig.card(max_new_tokens=max_new_tokens, seed=0)
        self.config = base
        self.history: list = []  # every record generated, for the notebook to save
        style = {"description_width": "150px"}
        layout = w.Layout(width="460px")
        self.sliders = {
            "temperature": w.FloatSlider(value=base.temperature, min=0.05, max=2.0, step=0.05,
                                         description="temperature", style=style, layout=layout),
            "top_p": w.FloatSlider(value=base.top_p, min=0.05, max=1.0, step=0.05,
                                   description="top_p", style=style, layout=layout),
            "top_k": w.IntSlider(value=base.top_k, min=0, max=200, step=1,
                                 description="top_k (0 = off)", style=style, layout=layout),
            "repetition_penalty": w.FloatSlider(value=base.repetition_penalty, min=0.8, max=2.0, step=0.05,
                                                description="repetition_penalty", style=style, layout=layout),
            "seed": w.IntSlider(value=base.seed or 0, min=0, max=99, description="seed", style=style, layout=layout),
        }
        self.status = w.HTML()
        self.output = w.Output(layout=w.Layout(border="1px solid #ccc", padding="4px", min_height="80px"))
        self.output.add_class("workbench-answer")
        for slider in self.sliders.values():
            slider.observe(self._on_change, names="value")  # fires on release (continuous_update off)
            slider.continuous_update = False
        self.widget = w.VBox([*self.sliders.values(), self.status, self.output])

    def _on_change(self, change) -> None:
        try:
            self.regenerate()
        except Exception as e:  # an observer's exception would only reach JupyterLab's log console
            self.status.value = f"<b style='color:#b00'>generation failed: {type(e).__name__}: {e}</b>"

    def current_config(self) -> DecodeConfig:
        values = {name: s.value for name, s in self.sliders.items()}
        return self.config.replace(do_sample=True, temperature=float(values["temperature"]),
                                   top_p=float(values["top_p"]), top_k=int(values["top_k"]),
                                   repetition_penalty=float(values["repetition_penalty"]),
                                   seed=int(values["seed"]))

    def regenerate(self):
        """Generate with the sliders' settings and show the answer in place of the old one."""
        config = self.current_config()
        self.status.value = f"<i>generating answer #{len(self.history) + 1} ...</i>"
        record = generate(self.loaded, self.prompt, config, format=self.format)
        self.history.append(record)
        # Replace the output's content in one assignment: it works outside a kernel too (tests)
        # and the old answer never flickers away before the new one is there.
        self.output.outputs = ({"output_type": "stream", "name": "stdout", "text": record.text + "\n"},)
        self.status.value = (
            f"<b>answer #{len(self.history)}</b> · T={config.temperature:.2f} top_p={config.top_p:.2f} "
            f"top_k={config.top_k} rep={config.repetition_penalty:.2f} seed={config.seed} · "
            f"{record.new_tokens} tokens, stop: {record.stop_reason}, "
            f"mean logprob {sum(record.logprobs) / max(1, len(record.logprobs)):.2f}"
        )
        return record

    def _ipython_display_(self):
        from IPython.display import display

        if not self.history:
            self.regenerate()
        display(self.widget)
