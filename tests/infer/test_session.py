"""Execution-provider options: TensorRT keeps its engines between runs; a GPU device the session
did not really get is an error, never a silent CPU run."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from cxr_infer.session import CPU, CUDA, TENSORRT, DeviceError, open_session, provider_options, tensorrt_cache_dir


def test_tensorrt_caches_engines_and_timings_in_the_given_folder(tmp_path):
    options = provider_options(TENSORRT, tmp_path)
    assert options["trt_engine_cache_enable"] == "True" and options["trt_timing_cache_enable"] == "True"
    assert options["trt_engine_cache_path"] == options["trt_timing_cache_path"] == str(tmp_path)


def test_other_providers_get_no_options():
    assert provider_options(CUDA) == {} and provider_options(CPU) == {}


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CXR_TENSORRT_CACHE", str(tmp_path / "engines"))
    assert tensorrt_cache_dir() == tmp_path / "engines"
    assert provider_options(TENSORRT)["trt_engine_cache_path"] == str(tmp_path / "engines")
    monkeypatch.delenv("CXR_TENSORRT_CACHE")
    assert tensorrt_cache_dir().parts[-2:] == ("cxr-toolkit", "tensorrt")


def test_tensorrt_without_a_gpu_is_an_error(tiny_model_path, monkeypatch, tmp_path):
    probe = ort.InferenceSession(str(tiny_model_path), providers=[CUDA, CPU])
    if CUDA in probe.get_providers():
        pytest.skip("this host really has CUDA")
    monkeypatch.setenv("CXR_TENSORRT_CACHE", str(tmp_path / "engines"))
    with pytest.raises(DeviceError, match="--device tensorrt: TensorrtExecutionProvider"):
        open_session(tiny_model_path, "tensorrt")
