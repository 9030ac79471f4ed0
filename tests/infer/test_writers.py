"""Built-in writers keep every row, even with values JSON cannot encode."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cxr_infer.writers import available_writers
from infer_support import ORIGINALS

ROW = {"path": "a.png", "label": "covid", "error": ""}
EXTRA = {"report": Path("/tmp/a.sr.dcm"), "score": np.float32(0.5)}


def test_csv_and_jsonl_write_unencodable_fields_as_text(tmp_path):
    writers = available_writers()
    for name in ("csv", "jsonl"):
        path = tmp_path / f"rows{writers[name].extension}"
        writer = writers[name].factory(path, list(ROW))
        writer.write({**ROW, **EXTRA})
        writer.close()
        if name == "csv":
            with open(path, newline="") as handle:
                (row,) = list(csv.DictReader(handle))
            extra = json.loads(row["extra"])
        else:
            extra = json.loads(path.read_text())
        assert extra["report"] == "/tmp/a.sr.dcm" and extra["score"] == "0.5"


def test_parquet_keeps_the_csv_columns_with_numbers_as_doubles(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow comes with the [ray] extra")
    columns = ["path", "label", "prob_covid", "gate", "gate_score", "heatmap", "error"]
    rows = [
        {"path": "a.png", "label": "covid", "prob_covid": 0.25, "gate": "pass", "gate_score": 1.0, "heatmap": "", "error": "", **EXTRA},
        {"path": "b\udcff.png", "label": "", "prob_covid": "", "gate": "", "gate_score": "", "heatmap": "", "error": "missing: no such file"},
    ]
    writer = available_writers()["parquet"].factory(tmp_path / "rows.parquet", columns)
    for row in rows:
        writer.write(row)
    writer.close()
    table = pq.read_table(tmp_path / "rows.parquet").to_pylist()
    assert [list(row) for row in table] == [[*columns, "extra"]] * 2
    assert table[0]["prob_covid"] == 0.25 and table[1]["prob_covid"] is None and table[1]["gate_score"] is None
    assert table[1]["path"] == "b\\udcff.png" and table[1]["error"] == "missing: no such file"
    assert json.loads(table[0]["extra"]) == {"report": "/tmp/a.sr.dcm", "score": "0.5"} and table[1]["extra"] == ""


@pytest.mark.data
def test_parquet_without_pyarrow_is_a_usage_error(tmp_path, tiny_model_path):
    """No pyarrow on the host: exit 2 with the install hint, not an internal error (exit 3)."""
    script = "import sys; sys.modules['pyarrow'] = None; from cxr_infer.cli import main; main()"
    args = [str(ORIGINALS[12]), "--model", str(tiny_model_path), "--format", "parquet", "--out", str(tmp_path / "out"), "-q"]
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "--format parquet needs pyarrow" in done.stderr and "Traceback" not in done.stderr
