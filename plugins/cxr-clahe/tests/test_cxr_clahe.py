"""The installed ``cxr-clahe`` plugin: registered through its entry point, promised statistics,
used by ``cxr-train fit --augment clahe``, excluded by ``CXR_PLUGINS``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import cxr_clahe
from cxr_infer.plugins import describe_plugins
from cxr_train.augment import available_augmentations, build_pipeline
from cxr_train.checkpoint import Checkpoint
from cxr_train.cli import main as train_main
from cxr_train.plugins import get_plugin_manager


def local_contrast(batch: torch.Tensor) -> float:
    """Mean absolute difference between neighbouring pixels: what CLAHE raises."""
    return float((batch[..., 1:, :] - batch[..., :-1, :]).abs().mean())


def test_installed_and_listed() -> None:
    assert available_augmentations()["clahe"].plugin == "clahe"
    row = next(row for row in describe_plugins(get_plugin_manager()) if row["name"] == "clahe")
    assert row["package"] == "cxr-clahe" and row["version"] and row["hooks"] == ["register_augmentations"]


def test_raises_local_contrast_of_real_radiographs_and_keeps_range(preprocessed: np.ndarray) -> None:
    batch = torch.from_numpy(preprocessed)
    out = build_pipeline(["clahe:p=1,clip_limit=4.0"])(batch, torch.Generator().manual_seed(0))
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert local_contrast(out) > 1.2 * local_contrast(batch)


def test_p0_is_identity_and_seed_makes_it_reproducible(preprocessed: np.ndarray) -> None:
    batch = torch.from_numpy(preprocessed)
    assert build_pipeline(["clahe:p=0"])(batch, torch.Generator()) is batch
    runs = [build_pipeline(["clahe"])(batch, torch.Generator().manual_seed(seed)) for seed in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    changed = (runs[0] != batch).flatten(1).any(dim=1)
    assert 0 < int(changed.sum()) < len(batch)  # p=0.5 by default: some images, not all


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="clip_limit >= 1"):
        build_pipeline(["clahe:clip_limit=0.5"])


def test_allow_list_excludes_it(allow_only) -> None:
    allow_only("densenet,fhir")
    assert "clahe" not in available_augmentations()
    assert "gamma" in available_augmentations()  # built-ins stay


def test_fit_applies_it(monkeypatch: pytest.MonkeyPatch, data_dir: Path, tmp_path: Path) -> None:
    limits: list[float] = []
    equalize = cxr_clahe._equalize
    monkeypatch.setattr(cxr_clahe, "_equalize", lambda image, limit, tiles: limits.append(limit) or equalize(image, limit, tiles))
    option = "clahe:p=1,clip_limit=2.5"
    args = ["fit", "--data", str(data_dir / "cxr3-internal"), "--model", "simplecnn", "--epochs", "1", "--limit-per-class", "4",
            "--image-size", "64", "--batch-size", "12", "--augment", option, "--out", str(tmp_path)]
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 0, result.output
    assert len(limits) == 12 and all(1.0 <= limit <= 2.5 for limit in limits)  # every training image, once
    assert Checkpoint.load(tmp_path / "best.pt").args["augment"] == [option]
