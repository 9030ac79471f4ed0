"""Labelled-folder discovery, file-list hash, tensor cache, and the one shared preprocessing."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from cxr_infer.preprocess import PreprocessSpec, preprocess
from cxr_infer.readers import read_image
from cxr_train import data
from cxr_train.data import discover, load_tensors, split_folders


def test_real_split_collection_is_discovered(shared_data) -> None:
    root = shared_data / "cxr3-internal"
    assert set(split_folders(root)) == {"train", "val", "test"}
    val = discover(root / "val")
    assert val.classes == ["covid", "normal", "pneumonia"]  # sorted folder names
    assert val.counts() == [88, 133, 201]  # the data README's table (version 2)
    assert all(f.split("/")[0] == val.classes[y] for f, y in zip(val.files, val.labels))


def test_split_collection_is_not_taken_for_classes(shared_data) -> None:
    with pytest.raises(ValueError, match="split folders"):
        discover(shared_data / "cxr3-internal")


def test_model_classes_fix_the_label_order(tmp_path, shared_data) -> None:
    source = next((shared_data / "cxr3-external" / "normal").iterdir())
    (tmp_path / "normal").mkdir()
    (tmp_path / "normal" / source.name).symlink_to(source)
    subset = discover(tmp_path, classes=["covid", "normal", "pneumonia"])
    assert subset.labels == [1] and subset.counts() == [0, 1, 0]
    with pytest.raises(ValueError, match="not among the model's classes"):
        discover(tmp_path, classes=["covid", "pneumonia"])


def test_file_list_hash_covers_paths_and_labels(shared_data) -> None:
    val = discover(shared_data / "cxr3-internal" / "val")
    lines = sorted(f"{f}\t{val.classes[y]}" for f, y in zip(val.files, val.labels))
    assert val.file_list_sha256() == hashlib.sha256("\n".join(lines).encode()).hexdigest()
    subset = val.limit_per_class(3, seed=0)
    assert subset.counts() == [3, 3, 3] and subset.file_list_sha256() != val.file_list_sha256()
    assert subset.files == val.limit_per_class(3, seed=0).files


def test_training_decodes_with_the_inference_functions() -> None:
    assert data.preprocess is preprocess  # the very function cxr_infer exposes, not a copy
    assert data.read_image is read_image


def test_tensors_equal_preprocess_output_and_are_cached(tmp_path, shared_data) -> None:
    subset = discover(shared_data / "cxr3-internal" / "val").limit_per_class(2, seed=1)
    spec = PreprocessSpec(size=48)
    x, y = load_tensors(subset, spec, cache_dir=tmp_path)
    first = subset.root / subset.files[0]
    assert np.array_equal(x[0].numpy(), preprocess(read_image(first), spec))
    assert y.tolist() == subset.labels and x.shape == (6, 1, 48, 48)
    cached = list(tmp_path.glob("*.pt"))
    assert len(cached) == 1
    torch.save({"x": torch.zeros_like(x), "y": y}, cached[0])  # prove the second load reads the cache
    assert load_tensors(subset, spec, cache_dir=tmp_path)[0].abs().sum() == 0
    load_tensors(subset, PreprocessSpec(size=40), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == 2  # another spec, another cache file


def test_unreadable_image_names_the_file(tmp_path) -> None:
    (tmp_path / "covid").mkdir()
    bad = tmp_path / "covid" / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        load_tensors(discover(tmp_path), PreprocessSpec(size=32))
