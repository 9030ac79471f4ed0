"""check-splits: finds planted exact and near duplicates, passes on the real internal splits."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
from click.testing import CliRunner

from cxr_train.cli import main
from cxr_train.splits import find_pairs, fingerprint


def _plant(tmp_path, shared_data):
    """train/val/test with two images each, val holding an exact copy and test a re-encoded one."""
    sources = sorted((shared_data / "cxr3-internal" / "train" / "covid").iterdir())[:4]
    for split in ("train", "val", "test"):
        (tmp_path / split / "covid").mkdir(parents=True)
    shutil.copy(sources[0], tmp_path / "train" / "covid" / "a.jpg")
    shutil.copy(sources[1], tmp_path / "train" / "covid" / "b.jpg")
    shutil.copy(sources[0], tmp_path / "val" / "covid" / "a-copy.jpg")
    shutil.copy(sources[2], tmp_path / "val" / "covid" / "c.jpg")
    image = cv2.imread(str(sources[1]), cv2.IMREAD_GRAYSCALE)
    brighter = cv2.resize(np.clip(image.astype(np.int16) + 12, 0, 255).astype(np.uint8), None, fx=0.8, fy=0.8)
    cv2.imwrite(str(tmp_path / "test" / "covid" / "b-resized.png"), brighter)
    shutil.copy(sources[3], tmp_path / "test" / "covid" / "d.jpg")


def test_planted_duplicates_are_found(tmp_path, shared_data) -> None:
    _plant(tmp_path, shared_data)
    pairs = {(p.kind, p.a, p.b) for p in find_pairs(fingerprint(tmp_path))}
    assert pairs == {
        ("exact", "train/covid/a.jpg", "val/covid/a-copy.jpg"),
        ("near", "test/covid/b-resized.png", "train/covid/b.jpg"),
    }
    result = CliRunner().invoke(main, ["check-splits", str(tmp_path)])
    assert result.exit_code == 1
    assert "a-copy.jpg" in result.output and "b-resized.png" in result.output


def test_duplicates_inside_one_split_are_not_leaks(tmp_path, shared_data) -> None:
    source = next((shared_data / "cxr3-internal" / "val" / "normal").iterdir())
    for split in ("train", "val"):
        (tmp_path / split / "normal").mkdir(parents=True)
    shutil.copy(source, tmp_path / "train" / "normal" / "x.jpg")
    shutil.copy(source, tmp_path / "train" / "normal" / "x-again.jpg")
    shutil.copy(next((shared_data / "cxr3-internal" / "val" / "covid").iterdir()), tmp_path / "val" / "normal" / "other.jpg")
    assert find_pairs(fingerprint(tmp_path)) == []


def test_real_internal_splits_pass(shared_data) -> None:
    result = CliRunner().invoke(main, ["check-splits", str(shared_data / "cxr3-internal")])
    assert result.exit_code == 0, result.output
    assert "2815 images, 0 duplicate pair(s)" in result.output  # the data README (version 2)
