"""The Classifier API on real radiographs and DICOM with the tiny exported models."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from cxr_infer import Classifier, Prediction
from cxr_infer.api import DECODE_MARGIN, ExplainError
from cxr_infer.dicom import read_dataset
from cxr_infer.preprocess import preprocess
from cxr_infer.readers import read_image
from cxr_infer.session import DeviceError
from infer_support import DICOMS, ORIGINALS

SMALL_ORIGINALS = [p for p in ORIGINALS if p.stat().st_size < 60_000]


@pytest.fixture(scope="module")
def classifier(tiny_model_path):
    with Classifier.load(tiny_model_path, threads=2) as loaded:
        yield loaded


def test_load_reports_contract_file_and_real_providers(classifier, tiny_model_path):
    assert classifier.classes == classifier.info.classes and len(classifier.classes) == 3
    assert classifier.info.path == tiny_model_path and len(classifier.info.sha256) == 64
    assert classifier.info.explain
    assert classifier.providers == ["CPUExecutionProvider"]


@pytest.mark.data
def test_predict_gives_one_prediction_per_input_in_order(classifier, tmp_path):
    missing = tmp_path / "missing.png"
    inputs = [*ORIGINALS, *DICOMS, missing]
    predictions = classifier.predict(inputs, gate="warn")  # the gate rejects the inverted fake MONOCHROME1 (test_gate.py)
    assert [p.source for p in predictions] == [str(p) for p in inputs]
    for prediction in predictions[:-1]:
        assert prediction.error is None and prediction.heatmap is None
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction.label == max(prediction.probabilities, key=prediction.probabilities.get)
    assert predictions[-1].label is None and "file not found" in predictions[-1].error


@pytest.mark.data
def test_arrays_datasets_and_paths_agree(classifier):
    path = DICOMS[0]
    by_path, by_dataset, by_array = classifier.predict([path, read_dataset(path), read_image(path)])
    assert by_dataset.source == str(path) and by_array.source == "array[2]"
    for other in (by_dataset, by_array):
        assert other.label == by_path.label
        assert other.probabilities == pytest.approx(by_path.probabilities, abs=1e-6)


@pytest.mark.data
def test_heatmap_is_grad_cam_of_the_raw_session_outputs(classifier, tiny_model_path):
    """Recompute Grad-CAM by hand from a bare onnxruntime session: the API must agree. The API
    decodes this 1050 x 973 JPEG reduced (the tiny model needs far less), as asked here."""
    path = ORIGINALS[2]
    image = read_image(path, min_side=DECODE_MARGIN * classifier.info.preprocess.size)
    assert max(image.shape) < 1050
    prediction = classifier.predict_one(path, explain=True)
    session = ort.InferenceSession(str(tiny_model_path), providers=["CPUExecutionProvider"])
    probs, act, grad = session.run(["probs", "activations", "gradients"], {"image": preprocess(image, classifier.info.preprocess)[None]})
    k = int(probs[0].argmax())
    cam = np.maximum(sum(grad[0, k, c].mean() * act[0, c] for c in range(act.shape[1])), 0)
    expected = cv2.resize(cam.astype(np.float32), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    expected /= expected.max()
    assert prediction.label == classifier.classes[k]
    assert prediction.heatmap.shape == image.shape[:2] and prediction.heatmap.dtype == np.float32
    np.testing.assert_allclose(prediction.heatmap, expected, atol=1e-4)


@pytest.mark.data
def test_full_decode_on_request_gives_full_size_heatmaps(classifier):
    path = ORIGINALS[2]
    reduced = classifier.predict_one(path, explain=True)
    full = classifier.predict_one(path, explain=True, decode_long_side=None)
    assert full.heatmap.shape == read_image(path).shape[:2] and reduced.heatmap.shape != full.heatmap.shape
    assert full.label == reduced.label
    assert full.probabilities == reduced.probabilities  # the display size never changes the answer


@pytest.mark.data
def test_explain_class_picks_the_class(classifier):
    path = ORIGINALS[0]
    maps = {name: classifier.predict_one(path, explain=True, explain_class=name).heatmap for name in classifier.classes}
    assert not np.allclose(maps[classifier.classes[0]], maps[classifier.classes[1]])
    with pytest.raises(ExplainError, match="unknown class 'fracture'"):
        classifier.predict_one(path, explain=True, explain_class="fracture")


@pytest.mark.data
def test_plain_model_refuses_to_explain(tiny_plain_model_path):
    with Classifier.load(tiny_plain_model_path) as plain:
        assert plain.predict_one(ORIGINALS[0]).error is None
        with pytest.raises(ExplainError, match="without the Grad-CAM outputs"):
            plain.predict_one(ORIGINALS[0], explain=True)


@pytest.mark.data
def test_predict_is_thread_safe_on_one_instance(classifier):
    inputs = [*SMALL_ORIGINALS, *DICOMS] * 2
    expected = [p.probabilities for p in classifier.predict(inputs)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = list(pool.map(lambda _: classifier.predict(inputs), range(3)))
    for run in runs:
        assert [p.probabilities for p in run] == [pytest.approx(e, abs=1e-6) for e in expected]


@pytest.mark.data
def test_annotator_errors_mark_the_prediction_and_the_stream_goes_on(classifier):
    def broken(prediction: Prediction, image: np.ndarray) -> dict:
        raise OSError("disk full")

    results = list(classifier.stream(ORIGINALS[:3], annotators=[lambda p, i: {"seen": i.shape}, broken]))
    assert len(results) == 3
    for prediction, fields in results:
        assert prediction.label is not None and "broken: OSError: disk full" in prediction.error
        assert "seen" in fields


def test_predict_wants_a_list(classifier):
    with pytest.raises(TypeError, match="predict_one"):
        classifier.predict("chest.png")


def test_cuda_on_this_host_is_a_clear_error(tiny_model_path):
    if "CUDAExecutionProvider" in ort.InferenceSession(str(tiny_model_path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]).get_providers():
        pytest.skip("this host really has CUDA")
    with pytest.raises(DeviceError, match="--device cuda: CUDAExecutionProvider"):
        Classifier.load(tiny_model_path, device="cuda")
