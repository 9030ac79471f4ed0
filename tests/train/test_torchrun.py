"""``cxr-train fit`` under torchrun: two CPU processes (gloo) train as one process does.

The runs use :mod:`ddp_support`'s model (no BatchNorm, no Dropout: see there why) on 6 real images
per class at 32 px, global batch 6 (three images per process), with class/source loss weights;
the resumed runs draw their batches with the class/source-weighted sampler instead. The
tolerance, 1e-5 relative, is float32 rounding: two processes compute the same sums in another
order (two half-batch convolutions, an all-reduce of gradients); a wrong share, normaliser or
gradient scale moves the losses by 1e-3 or more.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import ddp_support
from cxr_infer.api import Classifier
from cxr_train.checkpoint import Checkpoint
from cxr_train.cli import main
from cxr_train.distributed import World
from cxr_train.export import export_onnx

SUPPORT = Path(ddp_support.__file__)
RTOL = 1e-5
COMMON = ["--model", ddp_support.MODEL, "--limit-per-class", "6", "--image-size", "32", "--batch-size", "6",
          "--threads", "1", "--seed", "5", "--lr", "0.03", "--balance", "class-source"]
SAMPLER = ["--balanced-sampling", "--no-class-weights"]


@pytest.fixture(scope="module", autouse=True)
def plain_model():
    ddp_support.register()
    yield
    ddp_support.unregister()


def one_process(data: Path, out: Path, *extra: str) -> Path:
    result = CliRunner().invoke(main, ["fit", "--data", str(data), "--out", str(out), *COMMON, *extra])
    assert result.exit_code == 0, result.output
    return out


def two_processes(data: Path, out: Path, *extra: str) -> Path:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(SUPPORT),
               "fit", "--data", str(data), "--out", str(out), *COMMON, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)  # two torch processes on a loaded 2-core CI host
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def losses(run: Path) -> list[float]:
    return [entry["train_loss"] for entry in log(run)]


@pytest.mark.data
@pytest.mark.torchrun
def test_two_processes_train_as_one_resume_across_world_sizes_and_export(tmp_path, shared_data) -> None:
    """One test, not several sharing a fixture: pytest-xdist would start the runs once per worker."""
    data = shared_data / "cxr3-internal"
    # val macro-F1 does not gain in epoch 2: rank 0 stops early, and the other process with it
    one = one_process(data, tmp_path / "one", "--epochs", "4", "--patience", "1")
    two = two_processes(data, tmp_path / "two", "--epochs", "4", "--patience", "1")
    check_same_training(one, two)
    # a one-process last.pt resumed on one and on two processes, now with the weighted sampler
    resumed_one = one_process(data, tmp_path / "resumed-one", "--epochs", "3", "--resume", str(one / "last.pt"), *SAMPLER)
    resumed_two = two_processes(data, tmp_path / "resumed-two", "--epochs", "3", "--resume", str(one / "last.pt"), *SAMPLER)
    assert [entry["epoch"] for entry in log(resumed_two)] == [entry["epoch"] for entry in log(resumed_one)] == [3]
    assert losses(resumed_two) == pytest.approx(losses(resumed_one), rel=RTOL)
    check_exports(two / "best.pt", tmp_path, shared_data)


def check_same_training(one: Path, two: Path) -> None:
    assert len(losses(one)) == len(losses(two)) == 2  # stopped early, together
    assert losses(two) == pytest.approx(losses(one), rel=RTOL)
    assert losses(one)[1] < losses(one)[0] - 1e-3  # it trains: a wrong gradient would show in epoch 2
    weights = [Checkpoint.load(run / "last.pt").state_dict for run in (one, two)]
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, rtol=1e-4, atol=1e-6)
    assert Checkpoint.load(two / "best.pt").args["processes"] == 2


def check_exports(checkpoint: Path, tmp_path: Path, shared_data: Path) -> None:
    """The two-process checkpoint exports with the Grad-CAM outputs and classifies a radiograph."""
    best = Checkpoint.load(checkpoint)
    exported = export_onnx(best, tmp_path / "ddp.onnx", explain=True, name="ddp").path
    image = next((shared_data / "cxr3-internal" / "val" / "covid").iterdir())
    with Classifier.load(exported, device="cpu", gate="off") as classifier:
        prediction = classifier.predict_one(str(image), explain=True)
    assert prediction.error is None and prediction.label in best.classes and prediction.heatmap is not None


@pytest.mark.parametrize("size", [1, 2, 3])
def test_shares_partition_every_global_batch_in_order(size) -> None:
    for n in (2 * size, 7, 32):
        batch = torch.randperm(n)
        shares = [batch[World(rank, size).span(n)] for rank in range(size)]
        assert torch.equal(torch.cat(shares), batch) and max(map(len, shares)) - min(map(len, shares)) <= 1
        partner = torch.randperm(n)
        for rank, share in enumerate(shares):
            local = World(rank, size).local_partner(partner, n)
            assert sorted(local.tolist()) == list(range(len(share)))
