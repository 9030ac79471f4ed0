"""``cxr-train fit-gate``: the ood/ split, the threshold rule, and a small run end to end."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from cxr_infer.gate import GATE_CLASSES, GateModel
from cxr_train.gate import GateConfig, OodImage, choose_threshold, fit_gate, split_ood
from cxr_train.gate_negatives import GENERATORS, generate


def test_split_keeps_groups_together_and_holds_out_whole_categories_and_sources():
    images = [OodImage(Path(f"{c}/{i}.jpg"), c, f"repo-{c}" if i % 2 else "other-repo", f"patient {i // 3}") for c in ("ct", "lateral") for i in range(12)]
    split = split_ood(images, ["lateral"], val_fraction=0.3, seed=0)
    assert {i.category for i in split["held_out"]} == {"lateral"} and len(split["held_out"]) == 12
    train_groups = {i.group for i in split["train"]}
    assert split["val"] and not train_groups & {i.group for i in split["val"]}
    by_source = split_ood(images, ["other-repo"], val_fraction=0.3, seed=0)
    assert {i.source for i in by_source["held_out"]} == {"other-repo"}


def test_threshold_rejects_at_most_the_allowed_share_of_radiographs():
    scores = np.linspace(0.0, 1.0, 201)[1:]  # 200 validation radiographs
    threshold = choose_threshold(scores, 0.01)
    assert (scores < threshold).sum() == 2 and threshold == scores[2]


def test_generated_negatives_are_images_of_every_kind():
    for kind in GENERATORS:
        image = generate(kind, 1)
        assert image.dtype == np.uint8 and min(image.shape[:2]) >= 128, kind
        assert np.array_equal(image, generate(kind, 1)), kind  # seeded


@pytest.mark.data
def test_fit_gate_exports_a_self_describing_gate(shared_data, tmp_path):
    data = tmp_path / "data"
    for split in ("train", "val"):
        for label in ("covid", "normal"):
            (data / split / label).mkdir(parents=True)
            for source in sorted((shared_data / "cxr3-internal" / split / label).glob("*.jpg"))[:6]:
                shutil.copy(source, data / split / label / source.name)
    ood = tmp_path / "ood"
    rows = []
    for category in ("ct", "natural"):
        (ood / category).mkdir(parents=True)
        for n, source in enumerate(sorted((shared_data / "ood" / category).glob("*.jpg"))[:6]):
            shutil.copy(source, ood / category / source.name)
            rows.append({"category": category, "path": f"{category}/{source.name}", "source_repo": f"repo-{category}", "note": f"patient {n}"})
    with open(ood / "MANIFEST.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["category", "path", "source_repo", "note"])
        writer.writeheader()
        writer.writerows(rows)
    config = GateConfig(str(data), str(ood), str(tmp_path / "run"), hold_out=["natural"], epochs=2, batch_size=8, generated=16)
    path = fit_gate(config, command="test")
    gate = GateModel.load(path, "cpu", 1)
    assert gate.info.classes == GATE_CLASSES and not gate.info.explain
    assert gate.settings.positive_class == "frontal" and 0.0 <= gate.settings.threshold <= 1.0
    assert sorted(gate.info.card["ood_split"]["held_out"]) == sorted(r["path"] for r in rows if r["category"] == "natural")
    assert gate.scores(np.zeros((3, 1, 64, 64), np.float32)).shape == (3,)
    assert "frontal chest radiograph" in (tmp_path / "run" / "gate.md").read_text()
