"""Short real fits of both built-in models; evaluate reproduces their validation metrics."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from cxr_train.checkpoint import Checkpoint
from cxr_train.cli import main
from cxr_train.data import discover
from cxr_train.evaluate import evaluate_checkpoint
from cxr_train.fit import FitConfig, build_trainer, fit, inverse_frequency_weights, sample_weights

# model -> (image size, epochs). One full batch of 12 images per epoch: each epoch is one
# optimizer step on the same images, so the training loss must fall (and the test stays cheap).
# The step is small (lr 1e-4): Adam's first step moves every weight by about lr whatever its
# gradient, and at the default 1e-3 that overshoots for ResNet-50 on some CPUs' numerics.
RUNS = {"simplecnn": (64, 2), "resnet50": (32, 2)}
LIMIT = 4


@pytest.fixture(scope="module", params=sorted(RUNS))
def fitted(request, tmp_path_factory, shared_data):
    """One short fit per model on 4 real images per class (train) and 4 per class (val)."""
    model = request.param
    size, epochs = RUNS[model]
    out = tmp_path_factory.mktemp(f"fit-{model}")
    args = ["fit", "--data", str(shared_data / "cxr3-internal"), "--model", model, "--epochs", str(epochs),
            "--out", str(out), "--limit-per-class", str(LIMIT), "--image-size", str(size), "--batch-size", "12",
            "--threads", "2", "--seed", "3", "--lr", "1e-4"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return model, out


def test_fit_lowers_loss_and_logs_every_epoch(fitted) -> None:
    model, out = fitted
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in log] == [1, 2]
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert all(entry["img_per_s"] > 0 and 0 <= entry["val"]["macro_f1"] <= 1 for entry in log)


def test_checkpoint_records_what_was_trained(fitted, shared_data) -> None:
    model, out = fitted
    best = Checkpoint.load(out / "best.pt")
    train = discover(shared_data / "cxr3-internal" / "train").limit_per_class(LIMIT, seed=3)
    assert best.model == model and best.classes == ["covid", "normal", "pneumonia"]
    assert best.trained_on["file_list_sha256"] == train.file_list_sha256()
    assert best.trained_on["datasets"] == ["cxr3-internal/train"]
    assert best.class_weights == [1.0, 1.0, 1.0]  # balanced subset
    assert best.args["seed"] == 3
    command = best.args["command"]
    assert command.startswith("cxr-train fit --data ") and f"--model {model}" in command and "--seed 3" in command
    assert best.training == {} and Checkpoint.load(out / "last.pt").training["optimizer"]


def test_evaluate_reproduces_the_validation_metrics(fitted, shared_data) -> None:
    _, out = fitted
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    best_entry = [entry for entry in log if entry["best"]][-1]
    best = Checkpoint.load(out / "best.pt")
    assert best.epoch == best_entry["epoch"]
    # evaluate scores whole folders; compare on the same val subset fit used
    val = discover(shared_data / "cxr3-internal" / "val").limit_per_class(LIMIT, seed=3)
    subset = out / "val-subset"
    for name in val.files:
        (subset / name).parent.mkdir(parents=True, exist_ok=True)
        (subset / name).symlink_to(val.root / name)
    report = evaluate_checkpoint(out / "best.pt", [subset])["val-subset"]
    for key in ("accuracy", "macro_f1", "confusion_matrix"):
        assert report[key] == best_entry["val"][key]
    # the log scores the raw softmax; evaluate (like the exported model) the temperature-scaled one
    assert report["ece_uncalibrated"] == pytest.approx(best_entry["val"]["ece"], abs=1e-6)
    assert report["ece"] == pytest.approx(best.calibration["ece_after"], abs=1e-6)
    assert report["temperature"] == best.temperature != 1.0


@pytest.mark.parametrize("fitted", ["simplecnn"], indirect=True)  # the loop is model-agnostic; ResNet-50 saves are slow
def test_resume_continues_from_last(fitted, shared_data) -> None:
    model, out = fitted
    size, epochs = RUNS[model]
    config = FitConfig(data=str(shared_data / "cxr3-internal"), model=model, epochs=epochs + 1, out=str(out),
                       limit_per_class=LIMIT, image_size=size, batch_size=12, threads=2, seed=3,
                       resume=str(out / "last.pt"))
    fit(config)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in log] == [1, 2, 3]


def test_class_weights_are_inverse_frequencies(shared_data) -> None:
    counts = discover(shared_data / "cxr3-internal" / "train").counts()
    assert counts == [409, 625, 940]  # the data README's table (version 2)
    weights = inverse_frequency_weights(counts)
    total = sum(counts)
    assert weights == pytest.approx([total / (3 * n) for n in counts])
    assert [w * n for w, n in zip(weights, counts)] == pytest.approx([total / 3] * 3)


def test_balanced_sampling_excludes_class_weights(shared_data) -> None:
    train = discover(shared_data / "cxr3-internal" / "train")
    config = FitConfig(data="", model="simplecnn", epochs=1, out="", balanced_sampling=True)
    weights, _ = sample_weights(train, "class", 0.5)
    with pytest.raises(ValueError, match="--no-class-weights"):
        build_trainer(config, train, weights, torch.device("cpu"))
    config.class_weights = False
    trainer = build_trainer(config, train, weights, torch.device("cpu"))
    assert trainer.loss_weights is None
    drawn = torch.tensor(train.labels)[torch.cat(trainer.batches(len(train)))]
    assert torch.bincount(drawn, minlength=3).float().div(len(drawn)).sub(1 / 3).abs().max() < 0.05


def test_pretrained_fails_clearly_without_network(tmp_path, shared_data, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    args = ["fit", "--data", str(shared_data / "cxr3-internal"), "--model", "resnet50", "--epochs", "1",
            "--out", str(tmp_path / "run"), "--pretrained", "--limit-per-class", "2", "--image-size", "32"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert "ImageNet" in str(result.exception) and "without --pretrained" in str(result.exception)
