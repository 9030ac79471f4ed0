"""Fixtures shared by the example plugins' tests: real radiographs, and the team's tiny models.

The tiny random-weight checkpoint and its ONNX exports are the fixtures of ``tests/conftest.py``,
re-used here (pytest shows each conftest only to the folder below it) instead of copied.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tests.data_root import DATA

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("covid", "normal", "pneumonia")


def _team_fixtures():
    spec = importlib.util.spec_from_file_location("cxr_tests_conftest", REPO / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_team = _team_fixtures()
tiny_checkpoint_path, tiny_model_path = _team.tiny_checkpoint_path, _team.tiny_model_path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def dozen_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labelled folder of 12 real training radiographs (4 per class), linked, not copied."""
    root = tmp_path_factory.mktemp("dozen")
    for name in CLASSES:
        (root / name).mkdir()
        for source in sorted((DATA / "cxr3-internal" / "train" / name).iterdir())[:4]:
            (root / name / source.name).symlink_to(source.resolve())
    return root


@pytest.fixture(scope="session")
def preprocessed(dozen_images: Path) -> np.ndarray:
    """The dozen images as the trainer sees them: (12, 1, 64, 64) float32 in [0, 1]."""
    from cxr_infer.preprocess import PreprocessSpec, preprocess
    from cxr_infer.readers import read_image

    spec = PreprocessSpec(size=64)
    return np.stack([preprocess(read_image(path), spec) for path in sorted(dozen_images.glob("*/*"))])


@pytest.fixture
def allow_only(monkeypatch: pytest.MonkeyPatch):
    """``allow_only("a,b")`` restricts installed plugins as ``CXR_PLUGINS=a,b`` would, for one test."""
    from cxr_infer.plugins import ALLOW_ENV, reset_plugin_manager

    def restrict(names: str) -> None:
        monkeypatch.setenv(ALLOW_ENV, names)
        reset_plugin_manager()

    yield restrict
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    reset_plugin_manager()

