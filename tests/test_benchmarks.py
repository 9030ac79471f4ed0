"""benchmarks/: the harness runs end to end in its tiny mode and writes a complete report.

No timing is asserted (the figures depend on the machine and its load); what is checked is that
every measurement ran, the report holds every section, the inference-only part needs no torch,
and the FLOP count the GFLOP/s figures rest on is right.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import throughput
from benchmarks.decode import RULE
from benchmarks.folder import BARE, SETTINGS, STAGES
from benchmarks.harness import CALIBRATION
from benchmarks.inputs import EXTERNAL, Labelled
from benchmarks.models import ModelFiles, read_info, with_plain
from benchmarks.profiling import model_flops, node_flops
from benchmarks.sessions import open_session
from benchmarks.timing import interleave
from cxr_infer.contract import CLASSIFY_OUTPUTS, INPUT
from tests.torch_blocker import PREAMBLE

ROOT = Path(__file__).resolve().parents[1]

# Runs the CLI with the training stack unimportable, as after a plain `pip install .`.
NO_TORCH = PREAMBLE + r"""
import json

sys.argv[0] = "benchmarks"
from benchmarks.__main__ import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    print(json.dumps(leaked()))
"""


@pytest.fixture(scope="module")
def tiny_int8_path(tiny_model_path, tmp_path_factory) -> Path:
    from cxr_train.quantize import quantize_int8

    out = tmp_path_factory.mktemp("bench_int8") / "tiny-int8.onnx"
    quantize_int8(tiny_model_path, out, CALIBRATION, EXTERNAL, calibration_limit=3, compare_limit=3)
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model_path, tiny_plain_model_path, tiny_int8_path) -> Path:
    """The whole harness in its tiny mode, without torch, on the shared tiny model's files."""
    out = tmp_path_factory.mktemp("bench_out")
    files = [f"--onnx={p}" for p in (tiny_model_path, tiny_plain_model_path, tiny_int8_path)]
    args = [sys.executable, "-c", NO_TORCH, "run", "--tiny", f"--out={out}", *files]
    env = {**os.environ, "CXR_PLUGINS": ""}
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [], "torch was imported"
    return out


@pytest.mark.data  # benchmarks read real radiographs (benchmarks/inputs.py)
def test_tiny_run_without_torch_measures_every_onnx_variant(tiny_run):
    result = json.loads((tiny_run / "results-cpu.json").read_text())
    assert [r["batch"] for r in result["throughput"]] == [1, 2]
    onnx_variants = {throughput.ORT, throughput.EXPLAIN, throughput.CAM, throughput.INT8}
    for record in result["throughput"]:
        assert set(record["img_s"]) == onnx_variants  # the torch baselines need torch
        assert all(len(samples) == 2 and min(samples) > 0 for samples in record["samples"].values())
    assert {c["comparison"] for c in result["comparisons"]} == {"explain_cost", "int8_speed"}
    assert set(result["peak_gflops"]["by_library"]) == {"numpy"}
    assert {g["variant"] for g in result["gflops"]} == {throughput.ORT}
    assert set(result["profiles"]["simplecnn"]) == {throughput.ORT, throughput.EXPLAIN, throughput.INT8}
    (accuracy,) = result["int8_accuracy"]
    assert accuracy["images"] == 3 and 0 <= accuracy["top1_agreement"] <= 1
    assert result["machine"]["cpu"]["usable_cpus"] >= 1 and "onnxruntime" in "".join(result["machine"]["versions"])


@pytest.mark.data  # benchmarks read real radiographs (benchmarks/inputs.py)
def test_tiny_run_writes_the_report_and_plot(tiny_run):
    text = (tiny_run / "RESULTS.md").read_text()
    for heading in ("## CPU", "### Ratios against the targets", "### 4. int8 vs fp32 answers",
                    "### 6. Achieved GFLOP/s", "### Where onnxruntime",
                    "## 7. GPU", "load average"):
        assert heading in text
    assert (tiny_run / "throughput-cpu.png").stat().st_size > 1000
    gpu = json.loads((tiny_run / "results-gpu.json").read_text())
    assert gpu["throughput"] or gpu["skipped"][0]["reason"]  # measured on a CUDA host, else says why not


@pytest.mark.data  # benchmarks read real radiographs (benchmarks/inputs.py)
def test_pipeline_and_decode_agreement_run_and_report(tmp_path, tiny_model_path):
    """Measurement 5 (both settings against the bare session, step costs, threads against
    processes) and the decode agreement, at smoke scale, into their JSON and RESULTS.md."""
    model = f"--models={tiny_model_path}"
    for args in (["pipeline", model, "--batches=2", "--repeats=1", "--images=4"], ["decode-agreement", model, "--limit=6"]):
        done = subprocess.run([sys.executable, "-m", "benchmarks", *args, f"--out={tmp_path}"], cwd=ROOT,
                              capture_output=True, text=True, timeout=300, env={**os.environ, "CXR_PLUGINS": ""})
        assert done.returncode == 0, done.stderr[-3000:]
    (record,) = json.loads((tmp_path / "results-pipeline.json").read_text())["pipeline"]
    assert set(record["img_s"]) == {BARE, *SETTINGS} and set(record["ratios"]) == set(SETTINGS)
    assert all(set(ms) == set(STAGES) and ms["decode"] > 0 for ms in record["stage_ms"].values())
    decode = json.loads((tmp_path / "results-decode.json").read_text())
    for entry in decode["folders"].values():
        (compared,) = entry["models"]
        assert compared["by_way"][RULE]["images"] == 6 and 0 <= compared["by_way"][RULE]["top1_agreement"] <= 1
    assert {"1/2", "1/4", "1/8"} <= set(decode["folders"]["cxr3-external"]["models"][0]["by_way"])  # all JPEG
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## 5. Folder pipeline vs bare session" in text and "## 5a. Reduced JPEG decoding" in text
    assert "processes / threads" in text


@pytest.mark.data  # benchmarks read real radiographs (benchmarks/inputs.py)
def test_torch_baselines_join_the_interleaved_run(tiny_checkpoint_path, tiny_model_path, tiny_plain_model_path):
    model = ModelFiles("simplecnn", tiny_model_path, tiny_plain_model_path, checkpoint=tiny_checkpoint_path)
    images = Labelled.discover(EXTERNAL, per_class=1).tensors(read_info(tiny_model_path).preprocess)
    (record,) = throughput.measure(model, images, [2], threads=1, repeats=1, images_per_block=2)
    assert {throughput.TORCH, throughput.EAGER_CAM, throughput.EAGER_CAM_ALL} <= set(record["img_s"])
    assert {c["comparison"] for c in throughput.compare([record])} == {"onnx_vs_torch", "explain_cost", "gradcam", "gradcam_all"}


def test_shipped_explain_files_get_a_plain_file_cut_from_them(tiny_model_path, tmp_path):
    """Shipped models come as explain files only; explain/plain needs the same graph without the backward pass."""
    model = with_plain(ModelFiles("simplecnn", tiny_model_path), tmp_path)
    info = read_info(model.plain)
    assert info.outputs == CLASSIFY_OUTPUTS and not info.explain and info.classes == read_info(tiny_model_path).classes
    images = np.random.default_rng(0).random((2, 1, 64, 64), dtype=np.float32)
    explain = open_session(tiny_model_path, 1).run(list(CLASSIFY_OUTPUTS), {INPUT: images})
    plain = open_session(model.plain, 1).run(None, {INPUT: images})
    assert all(np.array_equal(a, b) for a, b in zip(explain, plain))
    assert with_plain(model, tmp_path) == model


def test_flop_count_from_the_profiler_matches_torch(tiny_checkpoint_path, tiny_plain_model_path):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from cxr_train.checkpoint import Checkpoint

    network = Checkpoint.load(tiny_checkpoint_path).build()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        network(torch.zeros(1, 1, 64, 64))
    assert model_flops(tiny_plain_model_path, (1, 64, 64)) == counter.get_total_flops()
    assert node_flops("Gemm", [[4, 2048], [128, 2048]], [[4, 128]]) == 2 * 4 * 128 * 2048
    assert node_flops("Relu", [[4, 8]], [[4, 8]]) == 0


def test_interleave_rotates_the_order_and_samples_every_repeat():
    calls: list[str] = []
    samples = interleave({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 4, repeats=3, warmup=1, settle=0)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert {name: len(values) for name, values in samples.items()} == {"a": 3, "b": 3}
    assert all(np.isfinite(v) and v > 0 for values in samples.values() for v in values)


def test_every_timed_block_starts_after_a_settling_call_of_its_own_variant():
    """A block must not pay for its predecessor's still-spinning worker threads."""
    calls: list[str] = []
    interleave({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 1, repeats=2, calls=2, warmup=0)
    assert calls == ["a"] * 3 + ["b"] * 3 + ["b"] * 3 + ["a"] * 3


def test_gpu_part_options_and_skips_on_a_host_without_cuda(tiny_model_path, tmp_path):
    """The GPU part cannot run here; what it hands onnxruntime and TensorRT can still be checked."""
    from benchmarks import gpu

    (provider, options), *fallback = gpu.tensorrt(True, 96, 32, tmp_path)
    assert provider == gpu.TENSORRT and fallback == [gpu.CUDA, "CPUExecutionProvider"]
    assert options["trt_engine_cache_enable"] == "True" and options["trt_engine_cache_path"] == str(tmp_path / "trt-cache")
    assert options["trt_fp16_enable"] is True
    assert (options["trt_profile_min_shapes"], options["trt_profile_max_shapes"]) == ("image:1x1x96x96", "image:32x1x96x96")
    if gpu.unavailable() is None:
        pytest.skip("this host has a GPU")
    engines, skipped = gpu.bare_engines(ModelFiles("simplecnn", tiny_model_path), 64, 4, tmp_path)
    assert engines == {} and [s["variant"] for s in skipped] == ["bare TensorRT fp32", "bare TensorRT fp16"]
