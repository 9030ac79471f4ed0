"""``python -m benchmarks report-page``: what ``cxr-infer --report`` costs, and how fast its page renders.

Issue 15's targets: the report adds at most 10 % to a 1,000-image run, and the page of 1,000
inputs renders in under 2 s in headless Chromium. The run is the command's own code
(``run_classification`` with ``--explain``) on a labelled folder of real radiographs (links to
cxr3-external and cxr3-internal/test, classes interleaved), with and without a report, the
order reversed every repeat and the two paired; the model is loaded once. On a shared host the
paired runs' noise exceeds the report's cost, so its parts are timed apart too: a thumbnail per
image (one thread), writing the page (template and plots) and the imports it needs. The page
is then opened in Debian's chromium through selenium, a fresh profile each time: navigation
start to the load event, first contentful paint, and one sort and one filter over all rows.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import machine
from benchmarks.inputs import DATA, EXTERNAL, Labelled
from benchmarks.timing import Summary, paired_ratio
from cxr_infer.api import Classifier
from cxr_infer.cli import RunOptions, run_classification
from cxr_infer.readers import available_readers, read_image
from cxr_infer.report.page import REPORT_FILE, Report
from cxr_infer.overlay import write_overlay
from cxr_infer.report.thumbnails import STYLE as THUMBNAIL_STYLE, thumbnail

WITHOUT, WITH = "run without report", "run with --report"
COST_TARGET = 0.10  # the report may add this share to the run's time
RENDER_TARGET_MS = 2000
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=1360,900")  # fmt: skip
NAVIGATION = """const nav = performance.getEntriesByType('navigation')[0];
const paint = performance.getEntriesByName('first-contentful-paint')[0];
return {load_ms: nav.loadEventEnd, dom_ms: nav.domContentLoadedEventEnd, fcp_ms: paint ? paint.startTime : null,
        rows: document.querySelectorAll('#rows-body > .row').length};"""
INTERACT = """const timed = (work) => { const t = performance.now(); work(); document.body.offsetHeight; return performance.now() - t; };
const sort = timed(() => document.querySelector('#rows [data-sort=conf]').click());
const filter = timed(() => { const el = document.getElementById('f-label'); el.value = el.options[1].value; el.dispatchEvent(new Event('input')); });
return {sort_ms: sort, filter_ms: filter};"""


def labelled_folder(folder: Path, images: int) -> Labelled:
    """``folder/<class>/`` with links to ``images`` real radiographs, classes interleaved: the
    external collection first, then the internal test split."""
    external, internal = Labelled.discover(EXTERNAL), Labelled.discover(DATA / "cxr3-internal" / "test")
    pairs = [(path, label, "ext") for path, label in zip(external.files, external.labels)]
    pairs += [(path, label, "int") for path, label in zip(internal.files, internal.labels)]
    if len(pairs) < images:
        raise ValueError(f"only {len(pairs)} images in {EXTERNAL} and cxr3-internal/test, {images} asked")
    chosen = pairs[:images]
    for path, label, origin in chosen:
        (folder / label).mkdir(parents=True, exist_ok=True)
        (folder / label / f"{origin}_{path.name}").symlink_to(path.resolve())
    return Labelled(tuple(p for p, _, _ in chosen), tuple(label for _, label, _ in chosen))


class TimedReport(Report):
    """The command's report, with the seconds each page write took (template and plots)."""

    write_s: list[float] = []

    def write(self, *args: Any) -> Path:
        start = time.perf_counter()
        path = super().write(*args)
        TimedReport.write_s.append(time.perf_counter() - start)
        return path


def runner(classifier: Classifier, folder: Path, out: Path, batch: int, report: bool) -> Callable[[], object]:
    """One ``cxr-infer FOLDER --explain [--report]`` run on the loaded model; its printout swallowed."""
    options = RunOptions((str(folder),), out, explain=True, batch_size=batch, quiet=True)

    def run() -> object:
        with contextlib.redirect_stdout(io.StringIO()):
            return run_classification(classifier, options, TimedReport(out, classifier.classes) if report else None)

    return run


def alternate(variants: dict[str, Callable[[], object]], images: int, repeats: int) -> dict[str, list[float]]:
    """Images/s of each variant per repeat, the order reversed every repeat (AB, BA, ...). A run
    of a thousand images lasts minutes, so no warm-up or settling run is worth its time."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(repeats):
        for name in list(variants)[:: 1 if repeat % 2 == 0 else -1]:
            start = time.perf_counter()
            variants[name]()
            samples[name].append(images / (time.perf_counter() - start))
    return samples


def import_s() -> float:
    """Seconds a fresh process spends importing what the page needs (jinja2, matplotlib's
    Figure and SVG backend): paid once per ``cxr-infer --report`` run, not in the timed runs."""
    code = ("import time; t = time.perf_counter(); import jinja2, matplotlib.figure, matplotlib.backends.backend_svg; "
            "print(time.perf_counter() - t)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout)


def thumbnail_ms(files: tuple[Path, ...], out: Path) -> float:
    """Milliseconds per image to make and write a thumbnail from an already decoded image."""
    readers, seconds = available_readers(), 0.0
    for index, path in enumerate(files):
        image = read_image(path, readers)
        start = time.perf_counter()
        write_overlay(out / f"{index}.jpg", thumbnail(image), THUMBNAIL_STYLE)
        seconds += time.perf_counter() - start
    return 1000 * seconds / len(files)


def browser_figures(page: Path, repeats: int) -> dict[str, Any]:
    """Load the page ``repeats`` times in headless chromium (a fresh profile each), then sort and filter once."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return {"skipped": "selenium not installed (the dev extra)"}
    if chromium is None or chromedriver is None:
        return {"skipped": "chromium or chromedriver not installed (Debian packages chromium, chromium-driver)"}
    loads: list[dict[str, Any]] = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="cxr-chromium-") as profile:
            options = webdriver.ChromeOptions()
            options.binary_location = chromium
            for flag in (*FLAGS, f"--user-data-dir={profile}"):
                options.add_argument(flag)
            driver = webdriver.Chrome(options=options, service=Service(chromedriver))
            try:
                driver.get(page.as_uri())
                loads.append({**driver.execute_script(NAVIGATION), **driver.execute_script(INTERACT)})
            finally:
                driver.quit()
    summary = {key: _summary([load[key] for load in loads if load[key] is not None])
               for key in ("load_ms", "dom_ms", "fcp_ms", "sort_ms", "filter_ms")}
    return {"rows": loads[0]["rows"], "samples": loads, "ms": summary, "target_ms": RENDER_TARGET_MS,
            "met": summary["load_ms"]["median"] <= RENDER_TARGET_MS, "chromium": _chromium_version(chromium)}


def _chromium_version(chromium: str) -> str:
    done = subprocess.run([chromium, "--version"], capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


def run_report_page(model: str, images: int, batch: int, threads: int, repeats: int, loads: int, out: Path) -> Path:
    """Measure and write ``out/results-report-page.json``; returns its path."""
    result: dict[str, Any] = {
        "part": "report-page",
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
        "config": {"model": model, "images": images, "batch": batch, "threads": threads, "repeats": repeats, "loads": loads},
        "machine": machine.describe(),
        "load_before": machine.load_average(),
    }
    with tempfile.TemporaryDirectory(prefix="cxr-bench-report-") as tmp:
        work = Path(tmp)
        labelled = labelled_folder(work / "images", images)
        with Classifier.load(model, device="cpu", threads=threads) as classifier:
            variants = {WITHOUT: runner(classifier, work / "images", work / "plain", batch, report=False),
                        WITH: runner(classifier, work / "images", work / "report", batch, report=True)}
            samples = alternate(variants, images, repeats)
        result["img_s"] = {name: Summary.of(values).as_dict() for name, values in samples.items()}
        result["samples"] = samples
        overhead = paired_ratio(samples[WITHOUT], samples[WITH])  # time with / time without, per repeat
        result["import_s"] = import_s()
        first_run = Summary.of([(images / w + result["import_s"]) * p / images for p, w in zip(samples[WITHOUT], samples[WITH])])
        result["cost"] = {"ratio": overhead.as_dict(), "ratio_with_imports": first_run.as_dict(), "target": 1 + COST_TARGET,
                          "met": first_run.median <= 1 + COST_TARGET}
        result["page_write_s"] = Summary.of(TimedReport.write_s).as_dict()
        result["thumbnail_ms"] = thumbnail_ms(labelled.files[:100], work / "thumbs")
        result["sizes_kb"] = {"page": (work / "report" / REPORT_FILE).stat().st_size / 1024,
                              "thumbnails": sum(p.stat().st_size for p in (work / "report" / "thumbnails").rglob("*.jpg")) / 1024}
        result["browser"] = browser_figures(work / "report" / REPORT_FILE, loads)
    return machine.save_results(result, out, "results-report-page.json")


def report_page_section(result: dict[str, Any]) -> list[str]:
    """The RESULTS.md section of this measurement."""
    config, cost, browser = result["config"], result["cost"], result["browser"]
    cpu = result["machine"]["cpu"]
    ratio = cost["ratio"]
    lines = [
        "## cxr-infer --report: its cost and its page", "",
        f"`{result['command']}` at {result['generated_at']}: {config['images']} real radiographs (labelled), model "
        f"`{config['model']}`, `--explain`, batch {config['batch']}, {config['threads']} threads, {config['repeats']} repeats "
        f"(the order reversed each repeat). {cpu['model']} ({cpu['usable_cpus']} usable CPUs; flags {', '.join(cpu['flags'])}), shared with other "
        f"engineers' work (load average {result['load_before'][0]} before, {result['load_after'][0]} after).", "",
        "| figure | value | target |", "| --- | --- | --- |",
        f"| run without report, img/s | {_spread(result['img_s'][WITHOUT])} | |",
        f"| run with `--report`, img/s | {_spread(result['img_s'][WITH])} | |",
        f"| time with / time without (paired) | {_spread(ratio, 3)} | |",
        f"| the same, plus importing jinja2 and matplotlib ({result['import_s']:.2f} s, once per command) | "
        f"{_spread(cost['ratio_with_imports'], 3)} | <= {cost['target']:.2f} {'met' if cost['met'] else 'missed'} |",
        f"| 1 + the report's own work (thumbnails, page, imports; timed apart) / the run's time | {parts_ratio(result):.3f} | "
        f"<= {cost['target']:.2f} {'met' if parts_ratio(result) <= cost['target'] else 'missed'} |",
        f"| thumbnail (make + write JPEG) from the full-size decoded image, ms/image, one thread | {result['thumbnail_ms']:.2f} | |",
        f"| writing the page ({config['images']} rows: template and plots), s | {_spread(result['page_write_s'])} | |",
        f"| page size, KiB; thumbnails, KiB | {result['sizes_kb']['page']:.0f}; {result['sizes_kb']['thumbnails']:.0f} | |",
    ]
    if "skipped" in browser:
        return [*lines, "", f"Page rendering not measured: {browser['skipped']}.", ""]
    ms = browser["ms"]
    return [
        *lines,
        f"| page load in headless chromium (navigation start to load event), ms | {_spread(ms['load_ms'], 0)} | "
        f"<= {browser['target_ms']} {'met' if browser['met'] else 'missed'} |",
        f"| first contentful paint, ms | {_spread(ms['fcp_ms'], 0)} | |",
        f"| sort {browser['rows']} rows by probability, ms; filter by class, ms | {_spread(ms['sort_ms'], 0)}; {_spread(ms['filter_ms'], 0)} | |",
        "", f"Browser: {browser['chromium']}, {len(browser['samples'])} loads, each with a fresh profile.", "",
    ]


def parts_ratio(result: dict[str, Any]) -> float:
    """1 + the seconds the report's parts take (a thumbnail per image, the page write, the imports)
    over the run without a report: an estimate that the load of a shared host disturbs less than
    the paired runs, whose difference is a few seconds in more than a minute."""
    images = result["config"]["images"]
    extra = images * result["thumbnail_ms"] / 1000 + result["page_write_s"]["median"] + result["import_s"]
    return 1 + extra / (images / result["img_s"][WITHOUT]["median"])


def _summary(values: list[float]) -> dict[str, float] | None:
    """None when chromium reported no sample (a loaded host may never report a first paint)."""
    return Summary.of(values).as_dict() if values else None


def _spread(s: dict[str, float] | None, digits: int = 2) -> str:
    if s is None:
        return "not reported"
    return f"{s['median']:.{digits}f} [{s['q1']:.{digits}f}-{s['q3']:.{digits}f}]"
