"""The report's figures (matplotlib, Agg): PNG bytes as data URIs, so the page stands alone.

Each figure repeats numbers the page also shows in a table, so the report reads with images off.
"""

from __future__ import annotations

import base64
import io
import itertools
from typing import Any

WIDTH, HEIGHT, DPI = 7.5, 3.2, 110


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _figure(height: float = HEIGHT) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(WIDTH, height))


def training_curve(stages: list[dict], key: str, ylabel: str) -> str | None:
    """`key` (loss, reward) of every training stage, one after another on a common step axis."""
    runs = [(s["name"], s["section"]["curves"][key]) for s in stages if key in s["section"].get("curves", {})]
    if not runs:
        return None
    fig, ax = _figure()
    offset = 0
    for name, points in runs:
        steps = [offset + p[0] for p in points]
        ax.plot(steps, [p[1] for p in points], label=name, linewidth=1.4)
        offset = steps[-1]
    ax.set_xlabel("optimizer step (stages in order)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=3)
    return _png(fig)


def mixture_bars(mixtures: dict[str, dict[str, float]]) -> str | None:
    """Grouped bars: each source's weight in each mixture (Eq. 5 phases, co-evolution stages)."""
    if not mixtures:
        return None
    import numpy as np

    sources = sorted({s for weights in mixtures.values() for s in weights})
    fig, ax = _figure(HEIGHT + 0.6)
    width = 0.8 / len(mixtures)
    x = np.arange(len(sources))
    for i, (name, weights) in enumerate(mixtures.items()):
        ax.bar(x + i * width, [weights.get(s, 0.0) for s in sources], width, label=name)
    ax.set_xticks(x + width * (len(mixtures) - 1) / 2, sources, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("weight")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def influence_histograms(section: dict) -> str | None:
    """Histogram of the joint influence score of each source's samples (the paper's Fig. 5 view)."""
    sources = section.get("sources", {})
    if not sources:
        return None
    edges = section["bin_edges"]
    centers = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
    fig, ax = _figure()
    for name, data in sources.items():
        ax.step(centers, data["counts"], where="mid", label=name, linewidth=1.2)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("joint influence score (Eq. 3-4; > 0 lowers the probing losses)")
    ax.set_ylabel("samples")
    ax.legend(fontsize=7, ncol=3)
    ax.grid(alpha=0.3)
    return _png(fig)
