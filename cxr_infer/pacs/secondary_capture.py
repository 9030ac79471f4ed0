"""Secondary Capture result: the radiograph with the Grad-CAM overlay and the result burned in.

Every viewer can show a Secondary Capture, so this is the result a radiologist actually sees.
The class, every class probability and "NOT FOR DIAGNOSTIC USE" are drawn into a band at the
bottom of the image and repeated in SeriesDescription, because burned-in text is the only
annotation no viewer can hide.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import cv2
import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

from cxr_infer.pacs.identity import MANUFACTURER, ModelIdentity, result_uid

NOT_FOR_DIAGNOSTIC_USE = "NOT FOR DIAGNOSTIC USE"
SC_SERIES_NUMBER = 9901
FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE = (255, 255, 255)
YELLOW = (0, 255, 255)

# Patient and physician names are copied from the source as they are; whether "Anonymized" has
# one component is not ours to judge, and the warning would repeat for every image received.
warnings.filterwarnings("ignore", message=r"The string .* is unlikely to represent the intended person name")


def result_lines(label: str, probabilities: Mapping[str, float], model: ModelIdentity) -> list[str]:
    """The text burned into the image, one entry per banner line."""
    scores = "  ".join(f"{name} {value:.2f}" for name, value in probabilities.items())
    return [f"{model.name}: {label}", scores, NOT_FOR_DIAGNOSTIC_USE]


def series_description(label: str, model: ModelIdentity) -> str:
    """SeriesDescription (LO, 64 chars): the disclaimer first so truncation never drops it."""
    return f"{NOT_FOR_DIAGNOSTIC_USE} - {model.name}: {label}"[:64]


def _fit_scale(text: str, width: int, wanted: float) -> float:
    """Largest font scale up to ``wanted`` at which ``text`` fits in ``width`` pixels."""
    text_width = cv2.getTextSize(text, FONT, 1.0, 1)[0][0]
    return max(0.2, min(wanted, 0.95 * width / max(text_width, 1)))


def burn_in(image: np.ndarray, lines: list[str]) -> np.ndarray:
    """Draw ``lines`` on a darkened band at the bottom of a BGR image; the last line in yellow.

    The band lies inside the image so the SC keeps the source's geometry (a viewer can link the
    two); the bottom of a chest film is abdomen, the least useful place to cover.
    """
    out = image.copy()
    height, width = out.shape[:2]
    wanted = max(0.35, min(width, height) / 900)
    line_height = int(round(34 * wanted))
    top = max(0, height - line_height * len(lines) - line_height // 2)
    out[top:] = (out[top:].astype(np.float32) * 0.3).astype(np.uint8)
    for row, text in enumerate(lines):
        scale = _fit_scale(text, width, wanted)
        thickness = max(1, int(round(2 * scale)))
        color = YELLOW if row == len(lines) - 1 else WHITE
        origin = (int(0.02 * width), top + (row + 1) * line_height)
        cv2.putText(out, text, origin, FONT, scale, color, thickness, cv2.LINE_AA)
    return out


def contributing_equipment(model: ModelIdentity) -> hd.ContributingEquipment:
    """Contributing Equipment item naming the model file that processed the image."""
    return hd.ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=model.name[:64],
        software_versions=model.software_versions,
        contribution_description=model.description[:1024],
    )


def _orientation(source: Dataset) -> tuple[str, str]:
    value = source.get("PatientOrientation")
    return tuple(value) if value is not None and len(value) == 2 else ("L", "F")


def secondary_capture(
    source: Dataset,
    overlay: np.ndarray,
    label: str,
    probabilities: Mapping[str, float],
    model: ModelIdentity,
) -> Dataset:
    """Build the SC of one source image from its rendered BGR ``overlay``.

    Patient and Study modules come from ``source``; Series and SOP Instance UIDs are derived
    from the source instance and the model (see :func:`result_uid`).
    """
    pixels = cv2.cvtColor(burn_in(overlay, result_lines(label, probabilities, model)), cv2.COLOR_BGR2RGB)
    source_uid = source.SOPInstanceUID
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=result_uid(source_uid, model, "sc-series"),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=result_uid(source_uid, model, "sc"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=_orientation(source),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        contributing_equipment=[contributing_equipment(model)],
    )
    if "PatientOrientation" not in source:
        sc.PatientOrientation = None  # Type 2: unknown stays empty rather than guessed
    sc.Laterality = source.get("Laterality") or None  # Type 2C (General Series): the source's, else empty
    sc.SeriesDescription = series_description(label, model)
    sc.BurnedInAnnotation = "YES"
    sc.ImageComments = " | ".join(result_lines(label, probabilities, model))
    sc.DerivationDescription = f"Grad-CAM overlay and classification result; {model.description}"[:1024]
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source_uid
    sc.SourceImageSequence = [reference]
    return sc
