"""cxr_infer works where torch cannot be imported: every module imports, and a classification runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infer_support import DICOMS, ORIGINALS
from tests.torch_blocker import PREAMBLE

SCRIPT = PREAMBLE + r'''
import importlib, json, pkgutil

import cxr_infer
modules = sorted(m.name for m in pkgutil.walk_packages(cxr_infer.__path__, "cxr_infer."))
for name in modules:
    importlib.import_module(name)
from cxr_infer.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
    code = 0
except SystemExit as stop:
    code = stop.code
print(json.dumps({"modules": modules, "exit": code, "leaked": leaked()}))
'''


@pytest.mark.data
def test_every_module_imports_and_classification_runs_without_torch(tmp_path, tiny_model_path):
    out = tmp_path / "out"
    args = [str(ORIGINALS[12]), str(DICOMS[0]), "--model", str(tiny_model_path), "--explain", "--out", str(out), "-q"]
    env = {**os.environ, "CXR_PLUGINS": ""}  # installed third-party plugins may need the training side
    done = subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["exit"] == 0 and report["leaked"] == []
    assert {"cxr_infer.api", "cxr_infer.cli", "cxr_infer.session", "cxr_infer.gradcam"} <= set(report["modules"])
    assert len((out / "results.csv").read_text().splitlines()) == 3
    assert len([p for p in Path(out / "heatmaps").rglob("*") if p.is_file()]) == 2  # one overlay per image, whatever its format
