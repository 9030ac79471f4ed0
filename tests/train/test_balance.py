"""Source-aware training: (class, source) weights and mixup in the loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cxr_train.data import LabelledSet
from cxr_train.fit import FitConfig, build_trainer, group_masses, sample_weights

CLASSES = ["covid", "normal", "pneumonia"]


def _confounded_set() -> LabelledSet:
    """covid: 40 web + 10 icu; normal: 90 kids + 10 adults; pneumonia: 100 kids."""
    groups = [(0, "web", 40), (0, "icu", 10), (1, "kids", 90), (1, "adults", 10), (2, "kids", 100)]
    labels = [k for k, _, n in groups for _ in range(n)]
    sources = [s for _, s, n in groups for _ in range(n)]
    files = [f"{CLASSES[k]}/{i}.png" for i, k in enumerate(labels)]
    return LabelledSet(Path("."), CLASSES, files, labels, sources)


def test_class_source_weights_equalise_classes_and_temper_sources() -> None:
    train = _confounded_set()
    weights, table = sample_weights(train, "class-source", 0.5)
    labels, sources = np.asarray(train.labels), np.asarray(train.sources)
    assert weights.mean() == pytest.approx(1.0)
    mass = {k: weights[labels == k].sum() for k in range(3)}
    assert mass[0] == pytest.approx(mass[1]) and mass[1] == pytest.approx(mass[2])  # every class 1/K
    adults, kids = (weights[(labels == 1) & (sources == s)].sum() for s in ("adults", "kids"))
    assert adults / kids == pytest.approx((10 / 90) ** 0.5)  # sqrt: 0.33, not the natural 0.11
    assert {g["source"] for g in table["groups"]} == {"web", "icu", "kids", "adults"}


def test_power_one_is_plain_class_balance_and_zero_equal_sources() -> None:
    train = _confounded_set()
    class_only, _ = sample_weights(train, "class", 0.5)
    np.testing.assert_allclose(sample_weights(train, "class-source", 1.0)[0], class_only)
    masses = group_masses(train.groups(), 0.0)
    assert masses[("normal", "adults")] == pytest.approx(masses[("normal", "kids")]) == pytest.approx(1 / 6)


def test_class_source_needs_sources() -> None:
    train = _confounded_set()
    unsourced = LabelledSet(train.root, train.classes, train.files, train.labels)
    with pytest.raises(ValueError, match="MANIFEST.csv beside the data or --sources"):
        sample_weights(unsourced, "class-source", 0.5)


def test_weighted_loss_matches_torch_class_weights_and_mixup_blends_targets() -> None:
    train = _confounded_set()
    weights, table = sample_weights(train, "class", 0.5)
    trainer = build_trainer(FitConfig(data="", model="simplecnn", epochs=1, out=""), train, weights, torch.device("cpu"))
    y = torch.tensor(train.labels)
    index = torch.tensor([0, 45, 60, 150, 199])
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.cross_entropy(logits, y[index], weight=torch.tensor(table["class_weights"], dtype=torch.float32))
    assert trainer.loss(logits, index, y, None, 1.0) == pytest.approx(float(expected), rel=1e-5)
    swap = torch.tensor([1, 0, 3, 2, 4])
    half = trainer.loss(logits, index, y, swap, 0.5)
    assert torch.isfinite(half) and half != trainer.loss(logits, index, y, None, 1.0)
    assert trainer.loss(logits, index, y, swap, 1.0) == pytest.approx(float(expected), rel=1e-5)  # lam 1 = no mixing


def test_mixup_draws_are_seeded_and_off_by_default() -> None:
    train = _confounded_set()
    weights, _ = sample_weights(train, "class", 0.5)
    plain = build_trainer(FitConfig(data="", model="simplecnn", epochs=1, out=""), train, weights, torch.device("cpu"))
    assert plain.mix_partner(8) == (None, 1.0)
    draws = []
    for _ in range(2):
        mixing = build_trainer(FitConfig(data="", model="simplecnn", epochs=1, out="", mixup=0.2), train, weights,
                               torch.device("cpu"))
        partner, lam = mixing.mix_partner(8)
        draws.append((partner.tolist(), lam))
        assert sorted(partner.tolist()) == list(range(8)) and 0.5 <= lam <= 1.0
    assert draws[0] == draws[1]
