"""The report's plots as inline SVG (matplotlib): one-vs-rest ROC curves and the reliability diagram.

Figures are drawn with matplotlib's object API (``Figure``, no pyplot), so no GUI backend is
chosen and nothing global changes in the process. Text stays text in the SVG (``svg.fonttype``
``none``) and takes the page's font; each figure gets its own id salt, so two inline SVGs on
one page never share a clip-path id. The curves and bins come from :mod:`cxr_infer.metrics`,
the functions the run's metrics are computed with.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

PALETTE = ("#3366cc", "#dd6b20", "#2f855a", "#805ad5", "#c53030", "#2c7a7b", "#b7791f", "#4a5568")
INK, MUTED, GRID = "#1f2328", "#6e7781", "#e6e9ed"
SIZE = (3.3, 3.0)  # inches; the page shows them at their natural size (about 320 px)


def class_colors(classes: Sequence[str]) -> dict[str, str]:
    """One colour per class, in the model's class order (the page and the plots agree)."""
    return {name: PALETTE[k % len(PALETTE)] for k, name in enumerate(classes)}


def roc_svg(curves: Mapping[str, tuple[list[float], list[float]] | None], aucs: Mapping[str, float | None], colors: Mapping[str, str]) -> str:
    """One-vs-rest ROC curves, one per class that has positives and negatives, AUC in the legend."""
    figure, axes = _figure("false positive rate", "true positive rate")
    axes.plot([0, 1], [0, 1], linestyle=(0, (3, 3)), color=MUTED, linewidth=0.8)
    for name, curve in curves.items():
        if curve is not None:
            axes.plot(*curve, color=colors[name], linewidth=1.6, label=f"{_literal(name)}  AUC {aucs[name]:.3f}")
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="lower right", frameon=False, fontsize=8, handlelength=1.4)
    return _svg(figure, "roc")


def reliability_svg(bins: Sequence[Mapping[str, Any]], ece: float) -> str:
    """Accuracy per confidence bin (bars) with the bin's mean confidence (dots), the diagonal of a
    calibrated model, and each bin's share of the inputs (grey bars along the bottom, a fifth of
    the height at most). The page's caption says so; the figure has no legend to hide bars."""
    figure, axes = _figure("confidence (top-class probability)", "accuracy")
    axes.plot([0, 1], [0, 1], linestyle=(0, (3, 3)), color=MUTED, linewidth=0.8)
    largest = max((b["n"] for b in bins), default=1)
    lows = [b["low"] for b in bins]
    widths = [b["high"] - b["low"] for b in bins]
    axes.bar(lows, [b["accuracy"] for b in bins], width=widths, align="edge", color=PALETTE[0], alpha=0.8, edgecolor="white", linewidth=0.6)
    axes.bar(lows, [0.2 * b["n"] / largest for b in bins], width=widths, align="edge", color=MUTED, alpha=0.35, edgecolor="white", linewidth=0.6)
    axes.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color=INK, markersize=2.5)
    axes.text(0.03, 0.96, f"ECE {ece:.3f}", transform=axes.transAxes, va="top", fontsize=8.5, color=INK)
    return _svg(figure, "reliability")


def _figure(xlabel: str, ylabel: str):
    from matplotlib.figure import Figure

    figure = Figure(figsize=SIZE, dpi=96, layout="constrained")
    axes = figure.add_subplot()
    axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel=xlabel, ylabel=ylabel)
    axes.set_aspect("equal")
    axes.grid(color=GRID, linewidth=0.6)
    axes.set_axisbelow(True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        axes.spines[side].set_color(MUTED)
    axes.tick_params(colors=MUTED, labelcolor=INK, labelsize=8, length=3)
    axes.xaxis.label.set(color=INK, fontsize=8.5)
    axes.yaxis.label.set(color=INK, fontsize=8.5)
    return figure, axes


def _svg(figure, salt: str) -> str:
    """The figure as an ``<svg>`` element (no XML prolog), text as text, no date, stable ids."""
    from matplotlib import rc_context

    buffer = io.StringIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": salt, "font.size": 8}):
        figure.savefig(buffer, format="svg", metadata={"Date": None}, transparent=True)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _literal(text: str) -> str:
    """A class name as matplotlib shows it verbatim: ``$`` would start mathtext, and a legend
    label starting with ``_`` would be hidden."""
    text = text.replace("$", r"\$")
    return f"\u200b{text}" if text.startswith("_") else text
