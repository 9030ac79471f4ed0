"""The embeddable API: ``Classifier`` loads a model once and classifies paths, arrays or DICOM datasets.

This is what a PACS integration calls, and what ``cxr-infer`` itself runs on, so the command
line and an embedding application get the same rows from the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Union

import numpy as np
from pydicom.dataset import Dataset

from cxr_infer import contract, errors, gradcam
from cxr_infer.concurrency import split_threads
from cxr_infer.errors import error_text
from cxr_infer.bundled import resolve_model
from cxr_infer.dicom import dataset_to_image
from cxr_infer.image_header import raster_size
from cxr_infer.gate import DEFAULT_MODE, GateModel, GateResult, Inspection, check_mode, dicom_header, inspect
from cxr_infer.pipeline import stream
from cxr_infer.preprocess import preprocess
from cxr_infer.readers import DEFAULT_MAX_PIXELS, ReadError, available_readers, read_image
from cxr_infer.session import ModelFileInfo, open_session, read_contract

ImageInput = Union[str, Path, np.ndarray, Dataset]
Annotator = Callable[["Prediction", np.ndarray], dict[str, Any]]
DEFAULT_BATCH_SIZE = 16
DECODE_MARGIN = 2  # a reduced decode keeps at least this many times the model's input side


class ExplainError(ValueError):
    """Explaining was asked of a model that cannot, or for a class it does not know."""


class ClosedError(RuntimeError):
    """The classifier was closed (its worker threads are gone); load a new one."""


@dataclass(frozen=True)
class Prediction:
    """One input's result. ``error`` is set when the input could not be classified (then
    ``label`` is ``None``) or when a later step such as writing its overlay failed.

    ``heatmap`` is float32 in [0, 1] at the decoded image's resolution, when explaining (a
    JPEG far larger than the model needs is decoded reduced: see :meth:`Classifier.stream`).
    ``gate`` is the input gate's verdict (:class:`~cxr_infer.gate.GateResult`); an input the gate
    rejected in ``reject`` mode has ``label=None``, no probabilities and no ``error``.
    """

    source: str
    label: str | None
    probabilities: dict[str, float]
    heatmap: np.ndarray | None = field(default=None, compare=False)
    error: str | None = None
    gate: GateResult = field(default_factory=GateResult)


@dataclass
class _Loaded:
    source: str
    image: np.ndarray | None = None
    tensor: np.ndarray | None = None
    error: str | None = None
    inspection: Inspection | None = None


@dataclass
class _Output:
    probs: np.ndarray | None  # None: rejected by the gate, not classified
    cam: np.ndarray | None
    gate: GateResult = field(default_factory=GateResult)


class Classifier:
    """A loaded model: one onnxruntime session, created once, safe to share between threads.

    ``threads`` is the number of cores to use (default: the usable CPUs), split between the
    onnxruntime intra-op threads and the worker threads that decode, preprocess and finish
    (Grad-CAM resize, annotators) images by :func:`cxr_infer.concurrency.split_threads`.

    ``gate`` is the input gate's mode (``reject``, ``warn`` or ``off``, see :mod:`cxr_infer.gate`)
    used when a call does not name one; ``gate_model`` is the gate (default: the bundled one,
    loaded when a call first needs it).
    """

    def __init__(
        self,
        session: Any,
        info: ModelFileInfo,
        threads: int | None = None,
        gate: str = DEFAULT_MODE,
        gate_model: GateModel | None = None,
        device: str = "auto",
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        _check_threads(threads)
        self._max_pixels = max_pixels
        self._closed = False
        self._session = session
        self.info = info
        self.gate = check_mode(gate)
        self._gate_model = gate_model
        self._device, self._split = device, split_threads(threads)
        self._readers = available_readers()
        self._pool = ThreadPoolExecutor(max_workers=self._split.workers, thread_name_prefix="cxr-worker")

    @classmethod
    def load(
        cls,
        name_or_path: str | Path | None = None,
        device: str = "auto",
        threads: int | None = None,
        gate: str = DEFAULT_MODE,
        gate_model: str | Path | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> "Classifier":
        """Open a bundled model by name, an ONNX file by path, or the default bundled model, and
        (unless ``gate="off"``) the input gate: the bundled one or the ``gate_model`` file.
        Files and datasets declaring more than ``max_pixels`` (frames included) are refused
        before decoding."""
        _check_threads(threads)
        path = resolve_model(name_or_path)
        intra_op = split_threads(threads).intra_op
        session = open_session(path, device, intra_op)
        gate_net = GateModel.load(gate_model, device, intra_op) if check_mode(gate) != "off" or gate_model else None
        return cls(session, read_contract(session, path), threads, gate, gate_net, device, max_pixels)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really got (not merely those installed)."""
        return self._session.get_providers()

    def predict(
        self,
        images: Sequence[ImageInput],
        explain: bool = False,
        explain_class: str | None = None,
        gate: str | None = None,
        decode_long_side: int | None = 0,
    ) -> list[Prediction]:
        """Classify a list of file paths, decoded images or pydicom datasets, in input order.
        ``gate`` overrides the instance's gate mode for this call; ``decode_long_side`` is as in
        :meth:`stream` (``None``: heatmaps at each file's full size)."""
        if isinstance(images, (str, Path, np.ndarray, Dataset)):
            raise TypeError("predict() takes a list of images; use predict_one() for a single image")
        chosen = self.stream(images, explain=explain, explain_class=explain_class, gate=gate, decode_long_side=decode_long_side)
        return [prediction for prediction, _ in chosen]

    def predict_one(
        self, image: ImageInput, explain: bool = False, explain_class: str | None = None, gate: str | None = None, decode_long_side: int | None = 0
    ) -> Prediction:
        return self.predict([image], explain=explain, explain_class=explain_class, gate=gate, decode_long_side=decode_long_side)[0]

    def stream(
        self,
        images: Iterable[ImageInput],
        *,
        explain: bool = False,
        explain_class: str | None = None,
        annotators: Sequence[Annotator] = (),
        batch_size: int = DEFAULT_BATCH_SIZE,
        gate: str | None = None,
        decode_long_side: int | None = 0,
    ) -> Iterator[tuple[Prediction, dict[str, Any]]]:
        """Lazily classify an iterable of any length; yields ``(prediction, fields)`` in input order.

        Files are decoded only as large as needed (:func:`cxr_infer.readers.read_image`): for the
        model, a JPEG is scaled down in the decoder while its short side keeps
        :data:`DECODE_MARGIN` times the model's input side, whatever is asked for display, so
        the answers are the same with or without heatmaps. Heatmaps and annotators get an image
        whose long side is at least ``decode_long_side`` (what an overlay's display size needs;
        ``None``: every file's own size; 0: the model's decode), decoded a second time only
        when the model's decode is smaller than that.

        Each annotator runs in a worker thread on every classified image as
        ``annotator(prediction, decoded_image) -> dict`` (for example writing an overlay and
        returning its path); the dicts are merged into ``fields``. An annotator that raises
        marks that prediction's ``error`` with its name, and the stream goes on. Inputs the
        gate rejects in ``reject`` mode are not classified and not annotated.
        """
        if self._closed:
            raise ClosedError("this Classifier is closed (close() or the end of its with-block); load a new one to classify")
        target = self._explain_target(explain, explain_class)
        mode = check_mode(gate or self.gate)
        if mode != "off" and self._gate_model is None:
            self._gate_model = GateModel.load(None, self._device, self._split.intra_op)
        return stream(
            enumerate(images),
            lambda numbered: self._load(numbered, mode != "off", decode_long_side),
            lambda batch: self._infer(batch, explain, target, mode),
            lambda loaded, output: self._finish(loaded, output, annotators),
            pool=self._pool,
            batch_size=batch_size,
        )

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=True)

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _explain_target(self, explain: bool, explain_class: str | None) -> int | None:
        """Class index to explain (``None``: the predicted class); refuse impossible requests early."""
        if not explain:
            if explain_class is not None:
                raise ExplainError("explain_class needs explain=True (--explain)")
            return None
        if not self.info.explain:
            raise ExplainError(
                f"{self.info.path}: this model was exported without the Grad-CAM outputs "
                f"({', '.join(contract.EXPLAIN_OUTPUTS)}); use a model exported with them, or classify without --explain"
            )
        if explain_class is None:
            return None
        if explain_class not in self.classes:
            raise ExplainError(f"unknown class {explain_class!r} to explain; the model's classes: {', '.join(self.classes)}")
        return self.classes.index(explain_class)

    def _load(self, numbered: tuple[int, ImageInput], gated: bool, long_side: int | None) -> _Loaded:
        """Decode, inspect for the gate and preprocess one input (worker thread); failures
        become the row's error."""
        index, item = numbered
        source = _source_name(index, item)
        try:
            image, display = self._decode(item, long_side)
            inspection = inspect(image, _header(item)) if gated else None
            return _Loaded(source, display, preprocess(image, self.info.preprocess), inspection=inspection)
        except ReadError as error:
            return _Loaded(source, error=error_text(error.kind, str(error)))
        except Exception as error:
            return _Loaded(source, error=error_text(errors.INTERNAL, f"{type(error).__name__}: {error}"))

    def _decode(self, item: ImageInput, long_side: int | None) -> tuple[np.ndarray, np.ndarray]:
        """``(model image, display image)``. The model always sees the decode its own input size
        asks for, so an answer never depends on ``--explain`` or the overlay size; heatmaps and
        annotators get a second, larger decode only when they need more than that and the file
        was decoded reduced."""
        if isinstance(item, (str, Path)):
            short_side = DECODE_MARGIN * self.info.preprocess.size
            image = read_image(item, self._readers, self._max_pixels, min_side=short_side)
            return image, self._display_image(Path(item), image, long_side)
        if isinstance(item, Dataset):
            image = dataset_to_image(item, self._max_pixels)
            return image, image
        if isinstance(item, np.ndarray):
            image = _checked_array(item)
            return image, image
        what = "None" if item is None else f"a {type(item).__name__}"
        raise ReadError(f"cannot classify {what}: pass a path (str or Path), a numpy image or a pydicom Dataset", errors.INVALID_INPUT)

    def _display_image(self, path: Path, image: np.ndarray, long_side: int | None) -> np.ndarray:
        """The model's decode when it is large enough for display (``long_side`` 0: any size;
        ``None``: the file's own size), else the file decoded again at the size asked."""
        have = max(image.shape[:2])
        if long_side == 0 or (long_side is not None and have >= long_side):
            return image
        declared = raster_size(path)
        if declared is None or max(declared.width, declared.height) <= have:
            return image  # decoded whole already
        if long_side is None:
            return read_image(path, self._readers, self._max_pixels)
        return read_image(path, self._readers, self._max_pixels, min_side=DECODE_MARGIN * self.info.preprocess.size, min_long_side=long_side)

    def _infer(self, batch: list[_Loaded], explain: bool, target: int | None, mode: str) -> list[_Output | None]:
        """Gate the batch's readable images, then run the session once on those it lets through
        (all of them unless ``mode`` is ``reject``; no padding)."""
        readable = [i for i, loaded in enumerate(batch) if loaded.error is None]
        outputs: list[_Output | None] = [None] * len(batch)
        verdicts: dict[int, GateResult] = {}
        if mode != "off" and readable:
            verdicts = dict(zip(readable, self._gate_model.decide([batch[i].inspection for i in readable])))
        good = [i for i in readable if not (mode == "reject" and verdicts[i].rejected)]
        for i in set(readable) - set(good):
            outputs[i] = _Output(None, None, verdicts[i])
        if not good:
            return outputs
        names = [contract.PROBS, *(contract.EXPLAIN_OUTPUTS if explain else ())]
        tensors = np.stack([batch[i].tensor for i in good])
        results = self._session.run(names, {contract.INPUT: tensors})
        probs = results[0]
        cams: list[np.ndarray | None] = [None] * len(good)
        if explain:
            picked = probs.argmax(axis=1) if target is None else np.full(len(good), target)
            cams = list(gradcam.class_maps(results[1], results[2], picked))
        for slot, row, cam in zip(good, probs, cams):
            outputs[slot] = _Output(row, cam, verdicts.get(slot, GateResult()))
        return outputs

    def _finish(self, loaded: _Loaded, output: _Output | None, annotators: Sequence[Annotator]) -> tuple[Prediction, dict[str, Any]]:
        """Build the prediction (worker thread): label, probabilities, full-size heatmap, annotations."""
        if output is None:
            return Prediction(loaded.source, None, {}, error=loaded.error), {}
        if output.probs is None:
            return Prediction(loaded.source, None, {}, gate=output.gate), {}
        probabilities = {name: float(p) for name, p in zip(self.classes, output.probs)}
        heatmap = None
        if output.cam is not None:
            heatmap = gradcam.upsample(output.cam, *loaded.image.shape[:2])
        label = self.classes[int(np.argmax(output.probs))]
        prediction = Prediction(loaded.source, label, probabilities, heatmap, gate=output.gate)
        fields: dict[str, Any] = {}
        for annotate in annotators:
            try:
                fields.update(annotate(prediction, loaded.image))
            except Exception as error:
                name = getattr(annotate, "__name__", type(annotate).__name__)
                message = error_text(errors.OUTPUT, f"{name}: {type(error).__name__}: {error}")
                prediction = replace(prediction, error="; ".join(filter(None, [prediction.error, message])))
        return prediction, fields


def _header(item: ImageInput) -> Dataset | None:
    """The DICOM header of an input, for the gate's header checks (``None`` for other inputs)."""
    if isinstance(item, Dataset):
        return item
    if isinstance(item, (str, Path)):
        return dicom_header(Path(item))
    return None


def _source_name(index: int, item: ImageInput) -> str:
    """How a result names its input: the path, the DICOM file or SOP instance, or the list index."""
    if isinstance(item, (str, Path)):
        return str(item)
    if isinstance(item, Dataset):
        filename = getattr(item, "filename", None)
        if isinstance(filename, str) and filename:
            return filename
        uid = item.get("SOPInstanceUID")
        return f"dicom:{uid}" if uid else f"dataset[{index}]"
    if isinstance(item, np.ndarray):
        return f"array[{index}]"
    return f"input[{index}]"


def _checked_array(image: np.ndarray) -> np.ndarray:
    """A decoded image must hold real numbers: complex, object or text arrays are no image."""
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating) or image.dtype == np.bool_):
        raise ReadError(f"an array of dtype {image.dtype} is no image (real numbers expected)", errors.INVALID_INPUT)
    return image


def _check_threads(threads: int | None) -> None:
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ValueError(f"threads must be a whole number >= 1 (or None: the CPU count), got {threads!r}")
