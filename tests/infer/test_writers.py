"""Built-in writers keep every row, even with values JSON cannot encode."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from cxr_infer.writers import available_writers

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
