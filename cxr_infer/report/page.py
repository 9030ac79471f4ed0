"""``OUT/report.html``: the run on one page, built from the rows, run record and metrics of the run.

The page is one file that works offline: no CDN, no external script or font; images (the
overlays under ``OUT/heatmaps`` and the thumbnails under ``OUT/thumbnails``) are linked by
relative URLs, plots are inline SVG, and sorting and filtering are a small inline script over
the table the template renders (the rows are readable without script too). With labels, the
misclassified inputs come first.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxr_infer.errors import error_kind
from cxr_infer.report.thumbnails import Thumbnails
from cxr_infer.writers import utf8_text

REPORT_FILE = "report.html"
THUMBNAILS = "thumbnails"
TEMPLATE = "report.html.j2"


@dataclass(frozen=True)
class RowView:
    """What the page shows of one result row (display strings safe to encode, URLs relative)."""

    index: int
    path: str
    name: str
    folder: str
    href: str
    thumbnail: str | None
    overlay: str | None
    true_label: str
    label: str
    probabilities: tuple[float | None, ...]
    confidence: float | None
    wrong: bool
    gate: str
    gate_score: str
    gate_reason: str
    error: str
    error_kind: str


class Report:
    """Collects a run's rows in input order and writes the page once the run is over.

    ``thumbnails.annotator(...)`` is the run annotator that writes each input's thumbnail.
    """

    def __init__(self, out: Path, classes: Sequence[str]):
        self.out = out
        self.classes = tuple(classes)
        self.rows: list[dict[str, Any]] = []
        self.thumbnails = Thumbnails(out / THUMBNAILS)

    def add(self, row: Mapping[str, Any]) -> None:
        self.rows.append(dict(row))

    def write(self, run: Mapping[str, Any], metrics: Mapping[str, Any] | None, truth: Sequence[int], probs: Sequence[Sequence[float]]) -> Path:
        """Render the page; ``metrics`` is the run's metrics report and ``truth``/``probs`` the
        labelled inputs it was computed on (for the ROC curves and reliability bins)."""
        views = [self._view(i, row) for i, row in enumerate(self.rows, 1)]
        if metrics is not None:
            views.sort(key=lambda view: (not view.wrong, view.index))
        path = self.out / REPORT_FILE
        html = render(run=run, metrics=metrics, classes=self.classes, rows=views, plots=plots_of(metrics, truth, probs, self.classes))
        path.write_text(html, encoding="utf-8")
        return path

    def _view(self, index: int, row: Mapping[str, Any]) -> RowView:
        path = utf8_text(row["path"])
        probabilities = tuple(_number(row.get(f"prob_{c}")) for c in self.classes)
        known = [p for p in probabilities if p is not None]
        true_label, label = str(row.get("true_label") or ""), str(row.get("label") or "")
        thumbnail = self.thumbnails.of(row["path"])
        return RowView(
            index=index,
            path=path,
            name=os.path.basename(path) or path,
            folder=os.path.dirname(path),
            href=relative_url(row["path"], self.out),
            thumbnail=None if thumbnail is None else relative_url(thumbnail, self.out),
            overlay=relative_url(row["heatmap"], self.out) if row.get("heatmap") else None,
            true_label=true_label,
            label=label,
            probabilities=probabilities,
            confidence=max(known) if known else None,
            wrong=bool(true_label and label and true_label != label),
            gate=str(row.get("gate") or ""),
            gate_score=_fixed(row.get("gate_score")),
            gate_reason=utf8_text(row.get("gate_reason") or ""),
            error=utf8_text(row.get("error") or ""),
            error_kind=error_kind(row.get("error")) or "",
        )


def plots_of(metrics: Mapping[str, Any] | None, truth: Sequence[int], probs: Sequence[Sequence[float]], classes: Sequence[str]) -> dict[str, str]:
    """The inline SVG plots of a labelled run (none without metrics)."""
    if metrics is None or not truth:
        return {}
    from cxr_infer.metrics import reliability_bins, roc_curves
    from cxr_infer.report.plots import class_colors, reliability_svg, roc_svg

    return {
        "roc": roc_svg(roc_curves(truth, probs, list(classes)), metrics["roc_auc"], class_colors(classes)),
        "reliability": reliability_svg(reliability_bins(truth, probs), metrics["ece"]),
    }


def render(**context: Any) -> str:
    """The page from the package's Jinja2 template (autoescaped)."""
    import jinja2

    from cxr_infer.report.plots import class_colors

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("cxr_infer.report", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    return environment.get_template(TEMPLATE).render(colors=class_colors(context["classes"]), **context)


def relative_url(target: str | os.PathLike[str], base: Path) -> str:
    """``target`` as a URL relative to the folder ``base`` (percent-encoded, any file name)."""
    relative = os.path.relpath(os.path.abspath(target), os.path.abspath(base))
    return urllib.parse.quote(os.fsencode(relative.replace(os.sep, "/")), safe="/")


def _fixed(value: Any, digits: int = 2) -> str:
    return "" if value in (None, "") else f"{float(value):.{digits}f}"


def _number(value: Any) -> float | None:
    return None if value in (None, "") else float(value)
