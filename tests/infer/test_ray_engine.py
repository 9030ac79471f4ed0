"""``cxr-infer --engine ray`` on a local Ray (2 CPUs) writes the rows the plain command writes.

The inputs: a labelled folder of 60 real radiographs (20 per class) with a truncated JPEG, a
text file named ``.png``, a ``.txt`` and a hidden file among them, two files of the same name
from two folders (their overlays must be ``img.jpg`` and ``img-2.jpg`` in both runs) and a
path that does not exist. Labels, errors, skip reasons, gate verdicts and overlay names must be
the same text; probabilities the same to 1e-6 (both are rounded to 6 digits; the batches are the
same, so they normally agree exactly).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cxr_infer.cli import main

PER_CLASS = 20
CLASSES = ("covid", "normal", "pneumonia")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, shared_data) -> list[str]:
    root = tmp_path_factory.mktemp("ray-inputs")
    for name in CLASSES:
        (root / "cases" / name).mkdir(parents=True)
        for source in sorted((shared_data / "cxr3-external" / name).iterdir())[:PER_CLASS]:
            (root / "cases" / name / source.name).symlink_to(source)
    jpeg = next((shared_data / "cxr3-external" / "covid").iterdir()).read_bytes()
    (root / "cases" / "covid" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (root / "cases" / "normal" / "text.png").write_bytes(b"not an image\n" * 20)
    (root / "cases" / "notes.txt").write_text("skipped: unsupported type\n")
    (root / "cases" / ".hidden.jpg").write_bytes(jpeg)
    for folder in ("a", "b"):
        (root / folder).mkdir()
        (root / folder / "img.jpg").write_bytes(jpeg)
    return [str(root / "cases"), str(root / "a" / "img.jpg"), str(root / "b" / "img.jpg"), str(root / "missing.png")]


def classify(inputs: list[str], out: Path, *engine: str, stdin: str | None = None) -> list[dict[str, str]]:
    args = [*inputs, "--model", "simplecnn", "--explain", "--out", str(out), "--quiet", "--threads", "2", *engine]
    result = CliRunner().invoke(main, args, input=stdin)
    assert result.exit_code == 1, result.output  # some inputs failed, by design
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["heatmap"] = os.path.relpath(row["heatmap"], out) if row["heatmap"] else ""
    return rows


@pytest.mark.data
@pytest.mark.ray
def test_ray_engine_writes_the_rows_of_the_plain_command(inputs, tmp_path) -> None:
    """One test, not several sharing a Ray fixture: pytest-xdist would start Ray once per worker."""
    ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        check_same_rows(inputs, tmp_path / "folders")
        check_uri_manifest(inputs, tmp_path / "uris")
    finally:
        ray.shutdown()


def check_same_rows(inputs: list[str], tmp_path: Path) -> None:
    plain = classify(inputs, tmp_path / "plain")
    on_ray = classify(inputs, tmp_path / "ray", "--engine", "ray")
    assert len(plain) == 3 * PER_CLASS + 7
    assert [row["path"] for row in on_ray] == [row["path"] for row in plain]
    probabilities = [f"prob_{name}" for name in CLASSES]
    for mine, theirs in zip(on_ray, plain):
        assert {k: v for k, v in mine.items() if k not in probabilities} == {k: v for k, v in theirs.items() if k not in probabilities}
        for column in probabilities:
            assert (mine[column] == theirs[column] == "") or float(mine[column]) == pytest.approx(float(theirs[column]), abs=1e-6)
    record = json.loads((tmp_path / "ray" / "run.json").read_text())  # the actors' providers, not the driver's
    assert record["providers"] == ["CPUExecutionProvider"] and record["finished_at"]
    errors = [row["error"].split(":")[0] for row in plain if row["error"]]
    assert sorted(errors) == ["missing", "not-an-image", "skipped", "skipped", "truncated"]
    assert {row["heatmap"] for row in plain if row["path"].endswith("img.jpg")} == {"heatmaps/img.jpg", "heatmaps/img-2.jpg"}
    for row in on_ray:
        assert not row["heatmap"] or (tmp_path / "ray" / row["heatmap"]).is_file()


def check_uri_manifest(inputs: list[str], tmp_path: Path) -> None:
    """A manifest of file:// URIs on stdin: rows named by the URIs, with the files' labels."""
    images = sorted(str(path) for path in (Path(inputs[0]) / "pneumonia").iterdir())[:2]
    uris = [Path(image).resolve().as_uri() for image in images] + [(tmp_path / "gone.jpg").as_uri()]
    plain = classify([*images, str(tmp_path / "gone.jpg")], tmp_path / "plain")
    on_ray = classify(["-"], tmp_path / "ray", "--engine", "ray", stdin="\n".join(uris) + "\n")
    assert [row["path"] for row in on_ray] == uris
    for mine, theirs in zip(on_ray[:2], plain[:2]):
        assert mine["label"] == theirs["label"] and mine["prob_covid"] == theirs["prob_covid"] and mine["error"] == ""
        assert (tmp_path / "ray" / mine["heatmap"]).is_file()
    assert on_ray[2]["error"].startswith(f"missing: {uris[2]}: ") and on_ray[2]["label"] == ""


def test_ray_engine_refusals_are_usage_errors(monkeypatch, tmp_path) -> None:
    """Without Ray, and with --report (made by the plain command only): exit 2, saying why."""
    image = Path(__file__).resolve().parents[2] / "exported" / "samples" / "covid_cxnet_1.jpg"
    args = [str(image), "--model", "simplecnn", "--out", str(tmp_path), "--engine", "ray"]
    refused = CliRunner().invoke(main, [*args, "--report"])
    assert refused.exit_code == 2 and "--report is made by --engine local only" in refused.output
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the [ray] extra were not installed
    missing = CliRunner().invoke(main, args)
    assert missing.exit_code == 2 and "pip install 'cxr-toolkit[ray]'" in missing.output
    assert not (tmp_path / "results.csv").exists()


def test_an_unreachable_ray_cluster_is_a_usage_error(monkeypatch, tmp_path) -> None:
    """A wrong --ray-address: exit 2 naming the address, not an internal error with a crash log."""
    ray = pytest.importorskip("ray", reason="the [ray] extra")

    def unreachable(**kwargs):
        raise ConnectionError(f"could not connect to {kwargs.get('address')}")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", unreachable)
    image = Path(__file__).resolve().parents[2] / "exported" / "samples" / "covid_cxnet_1.jpg"
    args = [str(image), "--model", "simplecnn", "--out", str(tmp_path), "--engine", "ray", "--ray-address", "10.0.0.9:6379"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "cannot start or reach Ray (10.0.0.9:6379)" in result.output


def test_an_actor_that_cannot_load_is_named_by_its_reason() -> None:
    """Ray's text of a dead actor is a long traceback; the usage error keeps its last error line."""
    from cxr_infer.distributed import actor_failure

    text = ("The actor died because of an error raised in its creation task, ray::MapWorker.__init__()\n"
            "Traceback (most recent call last):\n  File \"session.py\", line 98, in open_session\n"
            "cxr_infer.session.DeviceError: --device cuda: CUDAExecutionProvider could not be initialised on this host\n")
    assert actor_failure(RuntimeError(text)) == "DeviceError: --device cuda: CUDAExecutionProvider could not be initialised on this host"
    assert actor_failure(RuntimeError("actor gone\nno more")) == "actor gone"
