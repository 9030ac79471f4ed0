"""Classification metrics shared by ``cxr-train evaluate`` and the inference-side report.

numpy and scikit-learn only (no torch), so ``cxr_infer`` can report the same figures from ONNX
outputs that training reports from PyTorch ones. Every value is plain JSON (floats, ints, lists,
``None``) because reports go into checkpoints, ONNX metadata and model cards.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, auc, confusion_matrix, precision_recall_fscore_support, roc_curve

ECE_BINS = 15


def _check_inputs(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> None:
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise ValueError(f"probs must have shape (N, {len(classes)}), got {probs.shape}")
    if y_true.shape != (probs.shape[0],):
        raise ValueError(f"y_true must have shape ({probs.shape[0]},), got {y_true.shape}")
    if y_true.size == 0:
        raise ValueError("no samples to score")
    if y_true.min() < 0 or y_true.max() >= len(classes):
        raise ValueError(f"labels must lie in 0..{len(classes) - 1}")


def reliability_bins(y_true: Any, probs: Any, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """The non-empty equal-width bins of top-class confidence: edges, count, mean confidence and
    accuracy. The ECE and the report's reliability diagram read these same bins."""
    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    return [
        {"low": float(edges[b]), "high": float(edges[b + 1]), "n": int(mask.sum()),
         "confidence": float(confidence[mask].mean()), "accuracy": float(correct[mask].mean())}
        for b in range(bins) if (mask := which == b).any()
    ]  # fmt: skip


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size.

    A model that says 0.99 and is right 80 % of the time misleads a reader of its probabilities
    even when its accuracy looks fine; this is that gap.
    """
    rows = reliability_bins(y_true, probs, bins)
    total = sum(row["n"] for row in rows)
    return float(sum(row["n"] / total * abs(row["accuracy"] - row["confidence"]) for row in rows))


def roc_auc_per_class(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, float | None]:
    """One-vs-rest ROC-AUC per class; ``None`` where the class is absent (or the only one present)."""
    return {name: None if curve is None else float(auc(*curve)) for name, curve in roc_curves(y_true, probs, classes).items()}


def roc_curves(y_true: Any, probs: Any, classes: list[str]) -> dict[str, tuple[list[float], list[float]] | None]:
    """One-vs-rest ROC curve (false and true positive rates) per class, the AUCs' and the
    report's plot's source; ``None`` where the class is absent (or the only one present)."""
    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=np.float64)
    curves: dict[str, tuple[list[float], list[float]] | None] = {}
    for k, name in enumerate(classes):
        positives = y_true == k
        if positives.all() or not positives.any():
            curves[name] = None
        else:
            fpr, tpr, _ = roc_curve(positives, probs[:, k])
            curves[name] = (fpr.tolist(), tpr.tolist())
    return curves


def source_audit(y_true: np.ndarray, y_pred: np.ndarray, sources: list[str], classes: list[str]) -> dict[str, Any]:
    """Recall of each class per source, with what the misses were called: the shortcut audit.

    A class whose recall is high for one source and low for another was learned from the
    source's look, not from the lungs; the overall figures average that away.
    """
    if len(sources) != y_true.size:
        raise ValueError(f"sources has {len(sources)} entries for {y_true.size} samples")
    names = np.asarray(sources, dtype=object)
    audit: dict[str, Any] = {}
    for k, name in enumerate(classes):
        rows = {}
        for source in sorted(set(names[y_true == k])):
            mask = (y_true == k) & (names == source)
            predicted = np.bincount(y_pred[mask], minlength=len(classes))
            rows[source] = {
                "n": int(mask.sum()),
                "recall": float(predicted[k] / mask.sum()),
                "predicted": {c: int(predicted[j]) for j, c in enumerate(classes)},
            }
        audit[name] = rows
    return audit


def classification_metrics(y_true: Any, probs: Any, classes: list[str], sources: list[str] | None = None) -> dict[str, Any]:
    """All figures of one data set: accuracy, per-class P/R/F1/support, macro-F1, macro recall,
    confusion matrix (rows = true class, columns = predicted, in ``classes`` order), one-vs-rest
    ROC-AUC per class and macro (mean over classes where defined) and 15-bin ECE; with
    ``sources`` (one per sample) also ``per_source``, the :func:`source_audit`.

    Per-class and macro figures range over *all* ``classes``, so a class missing from the data
    shows up as recall 0 / support 0 instead of silently vanishing from the average.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    _check_inputs(y_true, probs, classes)
    labels = list(range(len(classes)))
    y_pred = probs.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    aucs = roc_auc_per_class(y_true, probs, classes)
    defined = [v for v in aucs.values() if v is not None]
    report = {
        "n": int(y_true.size),
        "classes": list(classes),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(np.mean(f1)),
        "macro_recall": float(np.mean(recall)),
        "per_class": {
            name: {
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(support[k]),
            }
            for k, name in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "roc_auc": aucs,
        "roc_auc_macro": float(np.mean(defined)) if defined else None,
        "ece": expected_calibration_error(y_true, probs),
    }
    if sources is not None:
        report["per_source"] = source_audit(y_true, y_pred, list(sources), list(classes))
    return report


def _fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:.3f}"


def format_metrics(report: dict[str, Any]) -> str:
    """A fixed-width text table of one report: per-class rows, summary lines, confusion matrix."""
    classes = report["classes"]
    width = max(9, *(len(c) for c in classes))
    lines = [f"{'class':<{width}}  precision  recall     f1  roc_auc  support"]
    for name in classes:
        row = report["per_class"][name]
        lines.append(
            f"{name:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:5.3f}"
            f"  {_fmt(report['roc_auc'][name]):>7}  {row['support']:7d}"
        )
    lines.append(
        f"accuracy {report['accuracy']:.3f}  macro-F1 {report['macro_f1']:.3f}  "
        f"macro recall {report['macro_recall']:.3f}  macro ROC-AUC {_fmt(report['roc_auc_macro'])}  "
        f"ECE {report['ece']:.3f}{_uncalibrated(report)}  (n={report['n']})"
    )
    lines.append("confusion matrix (rows true, columns predicted):")
    lines.append(" " * width + "".join(f"  {name[:9]:>9}" for name in classes))
    for name, row in zip(classes, report["confusion_matrix"]):
        lines.append(f"{name:<{width}}" + "".join(f"  {count:>9d}" for count in row))
    if report.get("per_source"):
        lines += ["recall per source (shortcut audit; misses as predicted counts):", *format_audit(report["per_source"])]
    return "\n".join(lines)


def _uncalibrated(report: dict[str, Any]) -> str:
    if "ece_uncalibrated" not in report:
        return ""
    return f" (before temperature {report['temperature']:.2f}: {report['ece_uncalibrated']:.3f})"


def format_audit(audit: dict[str, Any]) -> list[str]:
    """One line per (class, source): n, recall, and what the images were called."""
    lines = []
    for name, rows in audit.items():
        for source, row in rows.items():
            called = ", ".join(f"{c} {n}" for c, n in row["predicted"].items() if n)
            lines.append(f"  {name:<10} {source:<60} n={row['n']:<4d} recall {row['recall']:.3f}  ({called})")
    return lines
