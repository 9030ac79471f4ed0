"""``python -m benchmarks report-page`` runs end to end at a tiny scale and renders its section.

No timing is asserted (the figures depend on the machine and its load): what is checked is that
both runs ran, the page was written and opened (or the browser's absence is said), and the
RESULTS.md section holds every figure and verdict.
"""

from __future__ import annotations

import json

import pytest

from benchmarks.report_page import WITH, WITHOUT, report_page_section, run_report_page


@pytest.mark.data  # benchmarks read real radiographs (benchmarks/inputs.py)
def test_report_page_benchmark_runs_and_reports(tmp_path, tiny_model_path):
    path = run_report_page(str(tiny_model_path), images=6, batch=4, threads=1, repeats=1, loads=1, out=tmp_path)
    result = json.loads(path.read_text())
    assert set(result["samples"]) == {WITH, WITHOUT} and all(len(v) == 1 for v in result["samples"].values())
    assert result["page_write_s"]["n"] == 1 and result["thumbnail_ms"] > 0 and result["import_s"] > 0
    assert result["sizes_kb"]["page"] > 0 and result["sizes_kb"]["thumbnails"] > 0
    section = "\n".join(report_page_section(result))
    assert "| 1 + the report's own work" in section and "<= 1.10" in section
    browser = result["browser"]
    if "skipped" in browser:
        assert "Page rendering not measured" in section
    else:
        assert browser["rows"] == 6 and browser["ms"]["load_ms"]["n"] == 1
        assert "page load in headless chromium" in section
