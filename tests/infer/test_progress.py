"""The progress bar: total, percentage and ETA on a terminal (a pseudo-terminal here), a running
count for a stream of unknown length, and nothing at all when stderr is not a terminal."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cxr_infer import progress as progress_module
from cxr_infer.cli import main
from cxr_infer.progress import Progress

CXR_INFER = Path(sys.executable).with_name("cxr-infer")
ETA = re.compile(r"\b\d\d:\d\d:\d\d\b")


def read_terminal(master: int) -> str:
    """Everything written to the pseudo-terminal so far (its writers have closed their ends)."""
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: no process holds the terminal any more
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode("utf-8", "replace")


def run_on_terminal(args: list[str], stdin_text: str | None = None) -> tuple[int, str]:
    """Run a command with stdout and stderr on a pseudo-terminal; return its exit code and output."""
    master, slave = pty.openpty()
    process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=slave, stderr=slave, env={**os.environ, "COLUMNS": "120"})
    os.close(slave)
    process.stdin.write((stdin_text or "").encode())
    process.stdin.close()
    output = read_terminal(master)
    os.close(master)
    return process.wait(timeout=120), output


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """Twelve small noise PNGs and one file that is no image: enough to watch a bar fill."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        cv2.imwrite(str(folder / f"img{i:02}.png"), rng.integers(0, 256, (48, 48), dtype=np.uint8))
    (folder / "notes.png").write_text("not an image\n")
    return folder


def bar_lines(output: str) -> list[str]:
    """The redrawn states of the bar (click redraws in place with a carriage return)."""
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)  # cursor hide/show codes
    return [part.strip() for part in re.split(r"[\r\n]+", plain) if "img/s" in part and "inputs:" not in part]


def test_unit_bar_shows_position_total_percent_eta_and_errors(monkeypatch):
    monkeypatch.setattr(progress_module, "REFRESH_S", 0.0)
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as terminal:
        bar = Progress(total=10, stream=terminal)
        bar.update(failed=False)
        time.sleep(1.1)  # click estimates the remaining time once a second has passed
        bar.update(failed=True)
        bar.update(failed=False)
        assert (bar.count, bar.errors) == (3, 1)
        bar.close()
    output = read_terminal(master)
    os.close(master)
    last = bar_lines(output)[-1]
    assert "3/10" in last and "30%" in last and "1 error" in last, last
    assert ETA.search(last), f"no ETA in {last!r}"


def test_cli_on_a_terminal_counts_the_folder_first(images, tmp_path, tiny_model_path):
    code, output = run_on_terminal([str(CXR_INFER), str(images), "--model", str(tiny_model_path), "--out", str(tmp_path / "out")])
    assert code == 1, output
    states = bar_lines(output)
    assert states, output
    assert all("/13" in line for line in states), states  # the total is known from the start
    assert "13/13" in states[-1] and "100%" in states[-1] and "1 error" in states[-1], states[-1]


def test_cli_on_a_terminal_counts_a_stream_of_unknown_length(images, tmp_path, tiny_model_path):
    paths = "".join(f"{p}\n" for p in sorted(images.glob("img*.png")))
    code, output = run_on_terminal([str(CXR_INFER), "-", "--model", str(tiny_model_path), "--out", str(tmp_path / "out")], paths)
    assert code == 0, output
    final = bar_lines(output)[-1]
    assert re.search(r"\]\s+12\s", final) and "%" not in final and "12/" not in final, final  # a count, no total


def test_piped_output_has_no_bar(images, tmp_path, tiny_model_path):
    result = CliRunner().invoke(main, [str(images), "--model", str(tiny_model_path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "\r" not in result.output and "%" not in result.output
    lines = result.output.splitlines()
    assert len(lines) == 2 and lines[0].startswith("model ") and lines[1].startswith("13 inputs: "), lines
