"""The shortcut audit exposes a model that learned a source's look instead of the image.

A deliberately confounded training set: every class-``a`` image carries a burned-in marker (the
"source" ``marked``), no class-``b`` image does. The model learns the marker. On a test set where
both classes come from both sources, overall figures only look mediocre; the per-(class, source)
audit shows the shortcut plainly: each class is found only when it has its training source's look.
"""

from __future__ import annotations

import json

import cv2
import pytest
from click.testing import CliRunner

from cxr_train.cli import main

pytestmark = pytest.mark.data


def _write(images, folder, name, marked, table):
    image = images.pop()
    if marked:
        image = image.copy()
        image[4:20, 4:20] = 255  # a burned-in corner marker: the "marked" source's look
    path = folder / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)
    table.append(f"{path.relative_to(folder.parents[1]).as_posix()},{'marked' if marked else 'plain'}")


@pytest.fixture(scope="module")
def confounded(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("confounded")
    sources = sorted((shared_data / "cxr3-internal" / "train" / "normal").iterdir())[:96]
    images = [cv2.resize(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), (64, 64)) for p in sources]
    table: list[str] = []
    for split, n in (("train", 20), ("val", 8)):  # confounded: class a marked, class b plain
        for i in range(n):
            _write(images, root / split / "a", f"a{i}", True, table)
            _write(images, root / split / "b", f"b{i}", False, table)
    for i in range(16):  # test: both classes from both sources
        _write(images, root / "test" / "a", f"a{i}", i % 2 == 0, table)
        _write(images, root / "test" / "b", f"b{i}", i % 2 == 0, table)
    (root / "sources.csv").write_text("path,source\n" + "\n".join(table) + "\n")
    return root


def test_audit_exposes_a_confounded_model(confounded, tmp_path) -> None:
    runner = CliRunner()  # batch 4: enough steps in 6 epochs for BatchNorm's running statistics to settle
    fitted = runner.invoke(main, ["fit", "--data", str(confounded), "--model", "simplecnn", "--epochs", "6",
                                  "--image-size", "32", "--batch-size", "4", "--threads", "2", "--seed", "0",
                                  "--out", str(tmp_path / "run"), "--sources", str(confounded / "sources.csv"),
                                  "--balance", "class-source"])
    assert fitted.exit_code == 0, fitted.output
    scored = runner.invoke(main, ["evaluate", str(tmp_path / "run" / "best.pt"), "--data", str(confounded / "test"),
                                  "--sources", str(confounded / "sources.csv")])
    assert scored.exit_code == 0, scored.output
    (report,) = json.loads(scored.stdout).values()
    audit = report["per_source"]
    assert audit["a"]["marked"]["n"] == audit["a"]["plain"]["n"] == 8
    # the class is found where it has its training source's look, and missed where it does not
    assert audit["a"]["marked"]["recall"] - audit["a"]["plain"]["recall"] >= 0.5
    assert audit["b"]["plain"]["recall"] - audit["b"]["marked"]["recall"] >= 0.5
    assert "recall per source" in scored.stderr
