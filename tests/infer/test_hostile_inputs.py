"""Hostile and odd inputs through the command line and the API: one row per entry, nothing hangs,
nothing is decoded past the pixel limit, every error has a kind, no traceback reaches the user.

Every input is generated here, in ``tmp_path``; no data set is needed.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from hostile_corpus import png_declaring
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from cxr_infer.api import Classifier, ClosedError
from cxr_infer.cli import main
from cxr_infer.errors import error_kind, is_failure
from cxr_infer.readers import ReadError, read_image
from cxr_infer.writers import spreadsheet_safe

CLI = [sys.executable, "-c", "from cxr_infer.cli import main; main()"]


def gradient_png(path: Path, size: int = 64) -> Path:
    cv2.imwrite(str(path), (np.add.outer(np.arange(size), np.arange(size)) * (255 // (2 * size - 2))).astype(np.uint8))
    return path


def small_dicom(rows: int = 32, columns: int = 32, pixels: bool = True, **attributes) -> Dataset:
    """A valid uncompressed 16-bit CR dataset (``pixels=False``: without Pixel Data)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality, ds.ViewPosition = "CR", "PA"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if pixels:
        ds.PixelData = (np.arange(32 * 32, dtype=np.uint16) % 4096).tobytes()
    for name, value in attributes.items():
        setattr(ds, name, value)
    return ds


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def hostile_folder(folder: Path) -> dict[str, str | None]:
    """Make one entry of each kind; returns {entry name: expected error kind (None: classified)}."""
    folder.mkdir()
    good = gradient_png(folder / "good.png").read_bytes()
    dicom = save(small_dicom(), folder / "good.dcm").read_bytes()
    files = {
        "=HYPERLINK(0).png": (good, None),
        "png-content.dcm": (good, None),  # content wins over the extension
        "empty.png": (b"", "truncated"),
        "cut.png": (good[: len(good) // 2], "truncated"),
        "cut.dcm": (dicom[: len(dicom) - 100], "truncated"),
        "cut-header.dcm": (dicom[:300], "truncated"),
        "text.dcm": (b"not a radiograph\n" * 20, "not-an-image"),
        "text-no-extension": (b"not a radiograph\n" * 20, "not-an-image"),
        "text.png": (b"not a radiograph\n" * 20, "not-an-image"),
        "bomb.png": (png_declaring(9000, 9000), "too-large"),
        "radiance.png": (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 15000 +X 15000\n" + bytes(64), "too-large"),
        "anim.gif": (b"GIF89a", "skipped"),
        "notes.txt": (b"hello", "skipped"),
        ".hidden.png": (good, "skipped"),
    }
    for name, (content, _) in files.items():
        (folder / name).write_bytes(content)
    save(small_dicom(15000, 15000), folder / "bomb.dcm")  # 32x32 pixels stored, 15000x15000 declared
    save(small_dicom(pixels=False), folder / "no-pixels.dcm")
    (folder / "subfolder.jpg").mkdir()
    (folder / "dangling.png").symlink_to(folder / "absent.png")
    (folder / "loop-a.png").symlink_to(folder / "loop-b.png")
    (folder / "loop-b.png").symlink_to(folder / "loop-a.png")
    os.mkfifo(folder / "fifo")
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.png"), "wb") as handle:  # not UTF-8
        handle.write(good)
    expected = {name: kind for name, (_, kind) in files.items()}
    expected |= {"good.png": None, "good.dcm": None, "bomb.dcm": "too-large", "no-pixels.dcm": "no-pixels", "subfolder.jpg": "skipped"}
    expected |= {"dangling.png": "missing", "loop-a.png": "unreadable", "loop-b.png": "unreadable", "fifo": "not-a-file"}
    expected[os.fsdecode(b"caf\xe9.png")] = None
    return expected


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:  # must be valid UTF-8
        return list(csv.DictReader(handle))


def test_every_folder_entry_gets_one_row_with_its_kind(tmp_path, tiny_model_path):
    expected = hostile_folder(tmp_path / "inbox")
    out = tmp_path / "out"
    result = subprocess.run(
        [*CLI, str(tmp_path / "inbox"), "--model", str(tiny_model_path), "--gate", "off", "--out", str(out), "-q", "--threads", "1"],
        capture_output=True, timeout=300, text=True, errors="backslashreplace",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr == "" and "Traceback" not in result.stdout  # -q: no decoder warnings either
    rows = read_csv(out / "results.csv")
    assert len(rows) == len(os.listdir(tmp_path / "inbox")) == len(expected)
    got = {Path(row["path"]).name.replace("\\udce9", "\udce9"): error_kind(row["error"]) for row in rows}
    assert got == expected
    for row in rows:
        assert bool(row["label"]) == (error_kind(row["error"]) is None)
    jsonl = tmp_path / "jsonl"
    again = CliRunner().invoke(main, [str(tmp_path / "inbox"), "--model", str(tiny_model_path), "--gate", "off", "--out", str(jsonl), "-q", "--format", "jsonl"])
    assert again.exit_code == 1
    names = {Path(json.loads(line)["path"]).name for line in (jsonl / "results.jsonl").read_text(encoding="utf-8").splitlines()}
    assert names == set(expected)  # JSON escapes the surrogate and reads back to the same name


def test_fifo_and_device_arguments_are_refused_without_hanging(tmp_path, tiny_model_path):
    os.mkfifo(tmp_path / "fifo")
    out = tmp_path / "out"
    result = subprocess.run(
        [*CLI, str(tmp_path / "fifo"), "/dev/zero", "--model", str(tiny_model_path), "--gate", "off", "--out", str(out), "-q"],
        capture_output=True, timeout=120, text=True,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    errors = [row["error"] for row in read_csv(out / "results.csv")]
    assert errors == ["not-a-file: not a regular file (a FIFO)", "not-a-file: not a regular file (a character device)"]


def test_only_skipped_entries_exit_0(tmp_path, tiny_model_path):
    folder = tmp_path / "inbox"
    folder.mkdir()
    gradient_png(folder / "chest.png")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "README.txt").write_text("films of ward 7")
    result = CliRunner().invoke(main, [str(folder), "--model", str(tiny_model_path), "--gate", "off", "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    rows = read_csv(tmp_path / "out" / "results.csv")
    assert [error_kind(r["error"]) for r in rows] == ["skipped", "skipped", None]  # .DS_Store, README.txt, chest.png
    assert not any(is_failure(r["error"]) for r in rows)


def test_a_symbolic_link_cycle_is_entered_once(tmp_path, tiny_model_path):
    folder = tmp_path / "inbox"
    (folder / "a").mkdir(parents=True)
    gradient_png(folder / "a" / "chest.png")
    (folder / "a" / "back").symlink_to(folder)
    result = CliRunner().invoke(main, [str(folder), "-r", "--model", str(tiny_model_path), "--gate", "off", "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    rows = read_csv(tmp_path / "out" / "results.csv")
    assert [(Path(r["path"]).name, error_kind(r["error"])) for r in rows] == [("back", "skipped"), ("chest.png", None)]


def test_csv_cells_cannot_be_formulas(tmp_path, tiny_model_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    gradient_png(tmp_path / "=HYPERLINK(1).png")
    result = CliRunner().invoke(main, ["=HYPERLINK(1).png", "-q", "--model", str(tiny_model_path), "--gate", "off", "--out", "out"])
    assert result.exit_code == 0, result.output
    (row,) = read_csv(tmp_path / "out" / "results.csv")
    assert row["path"] == "'=HYPERLINK(1).png" and row["label"]
    for value in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert spreadsheet_safe(value) == "'" + value
    assert spreadsheet_safe("chest.png") == "chest.png" and spreadsheet_safe(0.5) == 0.5


def test_pixel_limit_is_configurable_and_checked_before_decoding(tmp_path, tiny_model_path):
    (tmp_path / "big.png").write_bytes(png_declaring(5000, 5000))  # 25 MP: under the default limit
    save(small_dicom(3000, 3000), tmp_path / "big.dcm")
    for name in ("big.png", "big.dcm"):
        with pytest.raises(ReadError, match="exceeds the 1,000,000-pixel limit") as refused:
            read_image(tmp_path / name, max_pixels=1_000_000)
        assert refused.value.kind == "too-large"
    frames = save(small_dicom(2000, 2000, NumberOfFrames=20), tmp_path / "frames.dcm")  # 80 MP in all
    with pytest.raises(ReadError, match=r"2000x2000 x 20 frames pixels exceeds the 40,000,000"):
        read_image(frames)
    result = CliRunner().invoke(
        main, [str(tmp_path / "big.png"), "--max-pixels", "1000000", "--model", str(tiny_model_path), "--gate", "off", "--out", str(tmp_path / "out"), "-q"]
    )
    assert result.exit_code == 1
    assert read_csv(tmp_path / "out" / "results.csv")[0]["error"].startswith("too-large: PNG of 5000x5000 pixels")


def test_dicom_errors_say_what_is_wrong(tmp_path):
    dicom = save(small_dicom(), tmp_path / "good.dcm").read_bytes()
    cases = {
        "text.dcm": (b"MZ\x90\x00" + bytes(400), "not-an-image", "not DICOM"),
        "cut-pixels.dcm": (dicom[:-10], "truncated", "pixel data holds"),
        "cut-element.dcm": (dicom[:200], "truncated", "truncated DICOM"),
    }
    for name, (content, kind, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ReadError, match=message) as refused:
            read_image(tmp_path / name)
        assert refused.value.kind == kind, name
    save(small_dicom(pixels=False), tmp_path / "none.dcm")
    with pytest.raises(ReadError, match="has no pixel data") as refused:
        read_image(tmp_path / "none.dcm")
    assert refused.value.kind == "no-pixels"


def test_dicom_out_without_sop_instance_uid_is_a_clear_row_error(tmp_path, tiny_model_path):
    ds = small_dicom()
    del ds.SOPInstanceUID
    path = save(ds, tmp_path / "anonymous.dcm")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [str(path), "--dicom-out", str(tmp_path / "dcm"), "--model", str(tiny_model_path), "--gate", "off", "--out", str(out), "-q"])
    assert result.exit_code == 1
    (row,) = read_csv(out / "results.csv")
    assert row["error"].startswith("output: ") and "no SOP Instance UID (0008,0018)" in row["error"]
    assert "AttributeError" not in row["error"]


def test_an_internal_error_exits_3_with_one_line_and_a_log(tmp_path, tiny_model_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("unforeseen\nsecond line")

    monkeypatch.setattr("cxr_infer.cli.run_classification", broken)
    result = CliRunner().invoke(main, [str(gradient_png(tmp_path / "a.png")), "--model", str(tiny_model_path), "--gate", "off", "--out", str(tmp_path / "out")])
    assert result.exit_code == 3
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert "internal error (RuntimeError: unforeseen)" in line and "Traceback" not in result.output
    log = Path(line.rsplit(" ", 1)[-1])
    assert "Traceback" in log.read_text() and "second line" in log.read_text()
    log.unlink()


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_load_refuses_a_thread_count_below_one(tiny_model_path, threads):
    with pytest.raises(ValueError, match="threads must be a whole number >= 1"):
        Classifier.load(tiny_model_path, threads=threads, gate="off")


def test_api_names_odd_inputs_and_refuses_them_clearly(tiny_model_path):
    with Classifier.load(tiny_model_path, threads=1, gate="off") as classifier:
        image = np.add.outer(np.arange(64.0), np.arange(64.0))
        predictions = classifier.predict([None, b"\x89PNG", image.astype(np.complex64), image.astype(object), image])
    assert [p.source for p in predictions] == ["input[0]", "input[1]", "array[2]", "array[3]", "array[4]"]
    assert [error_kind(p.error) for p in predictions] == ["invalid-input"] * 4 + [None]
    assert "cannot classify None" in predictions[0].error and "cannot classify a bytes" in predictions[1].error
    assert "complex64 is no image" in predictions[2].error
    with pytest.raises(ClosedError, match="closed"):
        classifier.predict([image])
