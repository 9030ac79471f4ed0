"""The DICOM results of one classified radiograph (Secondary Capture + Structured Report).

Three callers share :func:`build_results`: the Python API (:func:`dicom_results`), the
``--dicom-out`` step of ``cxr-infer`` (:func:`dicom_out_annotator`) and the listener. Each
hands over the image the classifier already decoded, so pixels are decoded once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydicom import Dataset

from cxr_infer.api import Classifier, Prediction
from cxr_infer.dicom import read_dataset
from cxr_infer.gate import GateResult
from cxr_infer.overlay import render_overlay, to_display
from cxr_infer.pacs.identity import ModelIdentity, uid_problem
from cxr_infer.pacs.secondary_capture import secondary_capture
from cxr_infer.pacs.spool import write_dataset
from cxr_infer.pacs.structured_report import structured_report
from cxr_infer.readers import available_readers, choose_reader

DICOM_OUT_FIELD = "dicom_out"


class ResultsError(RuntimeError):
    """A DICOM input could not be classified, so it has no results; the message names it."""


class InputRejected(ResultsError):
    """The input gate judged the input not a frontal chest radiograph: no results are made."""

    def __init__(self, message: str, gate: GateResult):
        super().__init__(message)
        self.gate = gate


@dataclass(frozen=True)
class DicomResults:
    """The Secondary Capture and the Structured Report made for one source instance, and the
    predicted class they report."""

    secondary_capture: Dataset
    structured_report: Dataset
    label: str

    @property
    def datasets(self) -> list[Dataset]:
        return [self.secondary_capture, self.structured_report]

    def save(self, folder: str | Path) -> list[Path]:
        """Write both as Part-10 files named ``SC_<uid>.dcm`` / ``SR_<uid>.dcm`` (UIDs never collide)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return [
            write_dataset(folder / f"{prefix}_{ds.SOPInstanceUID}.dcm", ds)
            for prefix, ds in (("SC", self.secondary_capture), ("SR", self.structured_report))
        ]


def build_results(source: Dataset, image: np.ndarray, prediction: Prediction, model: ModelIdentity) -> DicomResults:
    """SC and SR for ``source`` from its decoded ``image`` and its classification."""
    source_uid_problem = uid_problem(source.get("SOPInstanceUID"))
    if source_uid_problem:
        raise ResultsError(f"no DICOM results: {source_uid_problem}; the results' UIDs are derived from it")
    probability = prediction.probabilities[prediction.label]
    if prediction.heatmap is not None:
        overlay = render_overlay(image, prediction.heatmap, prediction.label, probability)
    else:
        overlay = cv2.cvtColor(to_display(image), cv2.COLOR_GRAY2BGR)
    sc = secondary_capture(source, overlay, prediction.label, prediction.probabilities, model)
    sr = structured_report(source, sc, prediction.label, prediction.probabilities, model)
    return DicomResults(sc, sr, prediction.label)


def dicom_results(classifier: Classifier, source: Dataset, model: ModelIdentity | None = None) -> DicomResults:
    """Classify one DICOM dataset (with Grad-CAM when the model has it) and return its results.

    Raises :class:`InputRejected` when the classifier's input gate rejects the dataset."""
    model = model or ModelIdentity.of(classifier)
    built: list[DicomResults] = []

    def build(prediction: Prediction, image: np.ndarray) -> dict[str, Any]:
        built.append(build_results(source, image, prediction, model))
        return {}

    prediction, _ = next(iter(classifier.stream([source], explain=classifier.info.explain, annotators=[build])))
    if prediction.label is None and prediction.gate.rejected:
        raise InputRejected(f"{prediction.source}: rejected by the input gate: {prediction.gate.reason}", prediction.gate)
    if prediction.error or not built:
        raise ResultsError(f"{prediction.source}: no DICOM results: {prediction.error}")
    return built[0]


def dicom_out_annotator(folder: str | Path, model: ModelIdentity) -> Callable[[Prediction, np.ndarray], dict[str, Any]]:
    """The ``--dicom-out DIR`` step: write the SC and SR of every DICOM input into ``folder``.

    Used as a :meth:`Classifier.stream` annotator; non-DICOM inputs pass untouched, and the
    written paths land in the row's ``dicom_out`` field.
    """
    readers = available_readers()

    def dicom_out(prediction: Prediction, image: np.ndarray) -> dict[str, Any]:
        path = Path(prediction.source)
        if not path.is_file() or choose_reader(path, readers).name != "dicom":
            return {}
        written = build_results(read_dataset(path), image, prediction, model).save(folder)
        return {DICOM_OUT_FIELD: ";".join(str(p) for p in written)}

    return dicom_out
