"""The notebooks' figures. Each function takes measured data and returns a matplotlib Figure;
the data itself is saved by the notebook, so a figure can always be redrawn from its JSON."""

from __future__ import annotations

from typing import Sequence


def _figure(width=7.0, height=3.6):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), constrained_layout=True)
    return fig, ax


def token_latency(records, title: str = "Per-token latency"):
    """Latency of every new token against its position; the first token (TTFT) is marked."""
    records = records if isinstance(records, (list, tuple)) else [records]
    fig, ax = _figure()
    for r in records:
        gaps_ms = [g * 1e3 for g in r.token_gaps_s]
        label = f"{r.kernel or '?'}"
        if len({x.decode_mode for x in records}) > 1:
            label += f" · {r.decode_mode}"
        elif len(records) > 1:
            label += f" #{r.batch_index}" if r.batch_size > 1 else f" ({r.format})"
        ax.plot(range(2, len(gaps_ms) + 2), gaps_ms, lw=1, label=label)
        ax.scatter([1], [r.ttft_s * 1e3], marker="o", s=18)
    ax.set_xlabel("new token")
    ax.set_ylabel("ms (token 1: time to first token)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def line(x: Sequence, ys: dict[str, Sequence], xlabel: str, ylabel: str, title: str, logy=False, logx=False):
    """Several named series over a shared x axis."""
    fig, ax = _figure()
    for name, y in ys.items():
        ax.plot(list(x)[: len(y)], list(y), marker="o", ms=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log", base=2)
    if len(ys) > 1:
        ax.legend(fontsize=8)
    return fig


def bars(labels: Sequence[str], values: Sequence[float], ylabel: str, title: str, errors=None, note=None):
    """One bar per label, optionally with an error bar (e.g. p90 above the median)."""
    fig, ax = _figure(width=max(5.0, 1.1 * len(labels) + 2))
    ax.bar(list(labels), list(values), yerr=errors, capsize=4, color="#4c78a8")
    for i, v in enumerate(values):
        if v == v:  # not NaN
            ax.annotate(f"{v:.3g}", (i, v), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if note:
        ax.text(0.01, 0.97, note, transform=ax.transAxes, va="top", fontsize=8, color="#555")
    return fig


def grouped_bars(frame, group: str, series: str, value: str, ylabel: str, title: str):
    """Bars of `value` for each `group` (x axis), one colour per `series` (e.g. kernel x mode)."""
    groups = list(dict.fromkeys(frame[group]))
    names = list(dict.fromkeys(frame[series]))
    fig, ax = _figure(width=max(5.0, 1.4 * len(groups) + 2))
    width = 0.8 / max(1, len(names))
    for j, name in enumerate(names):
        sub = frame[frame[series] == name]
        values = [float(sub[sub[group] == g][value].iloc[0]) if (sub[group] == g).any() else float("nan")
                  for g in groups]
        xs = [i + (j - (len(names) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, values, width=width, label=str(name))
        for x, v in zip(xs, values):
            if v == v:
                ax.annotate(f"{v:.3g}", (x, v), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def stacked_bars(labels: Sequence[str], parts: dict[str, Sequence[float]], ylabel: str, title: str):
    """One bar per label, split into named parts stacked on each other."""
    fig, ax = _figure(width=max(5.0, 1.2 * len(labels) + 3))
    bottom = [0.0] * len(labels)
    for name, values in parts.items():
        ax.bar(list(labels), list(values), bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values)]
    for i, total in enumerate(bottom):
        ax.annotate(f"{total:.3g}", (i, total), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=20)
    ax.legend(fontsize=8)
    return fig

def heatmap(frame, index: str, columns: str, value: str, title: str, fmt: str = "{:.2f}"):
    """A pivot of `value` over two parameters, each cell annotated."""
    import numpy as np

    table = frame.pivot_table(index=index, columns=columns, values=value, aggfunc="mean")
    fig, ax = _figure(width=1.0 * len(table.columns) + 3, height=0.6 * len(table.index) + 1.8)
    im = ax.imshow(table.values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(table.columns)), [str(c) for c in table.columns])
    ax.set_yticks(range(len(table.index)), [str(i) for i in table.index])
    ax.set_xlabel(columns)
    ax.set_ylabel(index)
    ax.set_title(title)
    finite = table.values[np.isfinite(table.values)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0
    for (i, j), v in np.ndenumerate(table.values):
        if np.isfinite(v):
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=8,
                    color="white" if v < mid else "black")
    fig.colorbar(im, ax=ax)
    return fig


def logprob_distribution(distributions: dict[str, Sequence[tuple[str, float]]], title: str):
    """Side-by-side top-k next-token probabilities, one panel per prompt format."""
    import math

    import matplotlib.pyplot as plt

    n = len(distributions)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 3.2), constrained_layout=True, sharey=True)
    axes = [axes] if n == 1 else list(axes)
    for ax, (name, top) in zip(axes, distributions.items()):
        pieces = [repr(p)[1:-1][:10] for p, _ in top]
        ax.barh(range(len(top)), [math.exp(lp) for _, lp in top], color="#f58518")
        ax.set_yticks(range(len(top)), pieces, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(name, fontsize=9)
        ax.set_xlim(0, 1)
    fig.suptitle(title, fontsize=10)
    return fig
