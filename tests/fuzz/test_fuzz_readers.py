"""CI's brief run of the reader fuzz harness (``fuzz_readers.py`` beside this file).

A few thousand libFuzzer executions from real seeds: any input that escapes as something other
than a ReadError/ValueError, crashes a native decoder or passes the RSS limit fails the run. The
documented long run (``-runs=1000000``) is in the harness's docstring and the closing notes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

HARNESS = Path(__file__).with_name("fuzz_readers.py")
SAMPLES = Path(__file__).parents[2] / "exported" / "samples"
# Linux gives a process started straight from this one (vfork + exec) this one's peak RSS as its
# own, and libFuzzer checks -rss_limit_mb against it: after a test that made the pytest process
# big, the first (empty) input was an "OOM". A small process in between starts the harness afresh.
SPAWN = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"


def test_a_short_fuzz_run_finds_nothing(tmp_path) -> None:
    from pydicom.data import get_testdata_file

    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for seed in [*sorted(SAMPLES.glob("*.jpg"))[:2], Path(get_testdata_file("CT_small.dcm"))]:
        shutil.copy(seed, seeds / seed.name)
    run = subprocess.run(
        [sys.executable, "-c", SPAWN, sys.executable, str(HARNESS), str(seeds), "-runs=3000", "-timeout=20", "-rss_limit_mb=1500", "-seed=1"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    done = re.search(r"^Done (\d+) runs", run.stderr, flags=re.MULTILINE)  # libFuzzer may overshoot -runs a little
    assert done is not None and int(done.group(1)) >= 3000, run.stderr[-3000:]
