"""One decode step captured in a CUDA graph, proven on the step it was captured on.

A decoder (decode.StaticDecoder, fastpath.FastDecoder) keeps every input of its step in a
buffer of its own and puts the step's device work in `_step_body()`; `CapturedStep.step` then
runs that body eagerly, or captures it once and replays it. A graph is used only when its first
replay gives the logits the same step gives run eagerly, within what two eager runs differ by;
otherwise the decoder goes on eagerly and `note` says why.
"""

from __future__ import annotations

import contextlib
import time


class CapturedStep:
    """Mixin: subclasses set `device`, `graph_wanted`, `graph` (None), `graph_note` ("") and `logits`, and
    define `_step_body()` (the step's device work, buffers in and out) and `_state()` (the buffers
    a step advances, which a rewind puts back)."""

    NO_GRAPH = "ran static"  # what a note says the decoder did instead of replaying a graph

    def _step_context(self):
        return contextlib.nullcontext()

    def step(self, token_ids):
        """Feed one token per row ([B]) and return this step's [B, V] float32 logits (a buffer that
        the next step overwrites)."""
        import torch

        with torch.profiler.record_function("wb::step"), self._step_context():  # wb::step: for breakdown.py
            self.ids.copy_(token_ids.view(-1, 1))
            if self.graph_wanted and self.graph is None and not self.graph_note:
                self._capture()  # takes this step too, and checks the graph on it
            elif self.graph is not None:
                self.graph.replay()
            else:
                self._step_body()
        return self.logits

    def _capture(self):
        """Capture the step, then prove the graph on this very step: run it eagerly, rewind, replay,
        and compare. Either way the step has been taken once when this returns."""
        import torch

        saved = [t.clone() for t in self._state()]

        def rewind():
            for t, s in zip(self._state(), saved):
                t.copy_(s)

        started = time.perf_counter()
        try:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):  # warm up off the main stream, as CUDA graphs want
                for _ in range(2):
                    self._step_body()
                    rewind()
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._step_body()
        except Exception as e:  # a GPU op that syncs, allocates or launches off-stream while capturing
            torch.cuda.synchronize(self.device)
            rewind()
            why = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            self.graph_note = f"graph capture failed ({why}); {self.NO_GRAPH}"
            self._step_body()
            return
        capture_s = time.perf_counter() - started
        # The eager step twice, then the replay: the graph must be as close to the eager step as
        # the eager step is to itself (GPU ops that add with atomics do not repeat to the bit).
        self._step_body()
        first = self.logits.clone()
        rewind()
        self._step_body()
        eager = self.logits.clone()
        rewind()
        graph.replay()
        problem = graph_mismatch(eager, self.logits, tolerance(first, eager))
        if problem:
            self.graph_note = f"graph replay differs from the eager step ({problem}); {self.NO_GRAPH}"
            rewind()  # the replay wrote this step's cache slot too: take the step again, eagerly
            self._step_body()
            return
        self.graph = graph
        self.graph_note = f"graph captured in {capture_s:.2f} s and checked against the eager step"


def tolerance(first, second) -> float:
    """How far two logit vectors of the same step may differ: four times what two eager runs
    differ by, and never less than 1e-4 of the largest logit (float32 rounding)."""
    noise = float((first - second).abs().max())
    return max(4 * noise, 1e-4 * float(second.abs().max()))


def graph_mismatch(eager, replayed, atol: float) -> str:
    """Why a replayed step's logits cannot be trusted, or "" when they equal the eager step's.
    Non-finite values never pass (a graph without its GEMMs gave NaN: docs/h100-baseline.md)."""
    import torch

    if not torch.isfinite(replayed).all():
        return "non-finite logits"
    diff = float((eager - replayed).abs().max())
    return f"max |dlogit| {diff:.3g} > {atol:.3g}" if diff > atol else ""
