"""Result rows (DESIGN.md "Results"): one per input, in input order, with a fixed set of columns.

``path, [true_label,] label, prob_<class>..., gate, gate_score, gate_reason, heatmap, error``:
``label`` is the predicted class, ``true_label`` appears when the inputs carry labels, ``gate`` is
the input gate's ``pass``/``reject`` (empty with the gate off) with its score and reason,
``heatmap`` is the overlay written with ``--explain``, and ``error`` is empty when the input was
read. A rejected input (gate ``reject`` mode) has an empty label and empty probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pluggy

from cxr_infer.api import Prediction
from cxr_infer.plugins import PluginError, process_result

PROBABILITY_DIGITS = 6
GATE_COLUMNS = ("gate", "gate_score", "gate_reason")


def columns(classes: Sequence[str], labelled: bool) -> list[str]:
    return ["path", *(["true_label"] if labelled else []), "label", *(f"prob_{c}" for c in classes), *GATE_COLUMNS, "heatmap", "error"]


def make_row(prediction: Prediction, classes: Sequence[str], fields: dict[str, Any], true_label: str | None, labelled: bool) -> dict[str, Any]:
    """The row of one prediction; ``fields`` are what annotators added (such as ``heatmap``)."""
    row: dict[str, Any] = {"path": prediction.source}
    if labelled:
        row["true_label"] = true_label or ""
    row["label"] = prediction.label or ""
    for name in classes:
        value = prediction.probabilities.get(name)
        row[f"prob_{name}"] = "" if value is None else round(value, PROBABILITY_DIGITS)
    gate = prediction.gate
    row["gate"] = gate.verdict
    row["gate_score"] = "" if gate.score is None else round(gate.score, PROBABILITY_DIGITS)
    row["gate_reason"] = gate.reason
    row["heatmap"] = ""
    row.update(fields)
    row["error"] = prediction.error or ""
    return row


def apply_process_result(pm: pluggy.PluginManager, row: dict[str, Any]) -> None:
    """Run the ``process_result`` plugins on a row; a plugin that raises marks the row's error
    (naming the plugin) instead of stopping the run."""
    try:
        process_result(pm, row)
    except PluginError as error:
        row["error"] = "; ".join(filter(None, [row.get("error"), str(error)]))
