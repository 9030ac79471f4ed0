"""The report page in a real headless Chromium (Debian's chromium and chromium-driver, through
selenium): no console error, every row's images decoded, filtering and sorting work, and a
screenshot comes out. Skipped, saying why, where the browser is missing (.ci/run installs it
where apt works)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest

from report_support import make_labelled_folder, results, run_report

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=1360,900")  # fmt: skip

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium or chromedriver not installed (Debian packages chromium, chromium-driver; .ci/run installs them where apt works)",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory, tiny_model_path):
    folder = tmp_path_factory.mktemp("report-browser")
    out = folder / "out"
    assert run_report(make_labelled_folder(folder / "images"), out, tiny_model_path).exit_code == 1
    return out


@pytest.fixture(scope="module")
def browser(report) -> Iterator:
    """The page loaded in headless Chromium with a fresh profile, console messages recorded."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    with tempfile.TemporaryDirectory(prefix="cxr-chromium-") as profile:
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        try:
            driver.get((report / "report.html").as_uri())
            yield driver
        finally:
            driver.quit()


def visible(driver) -> list[dict]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#rows-body > .row')).filter(tr => !tr.hidden)"
        ".map(tr => ({i: +tr.dataset.i, label: tr.dataset.label, conf: tr.dataset.conf, name: tr.dataset.name}))"
    )


def set_control(driver, element_id: str, value: str) -> None:
    """Change a filter control as a user does (its value, then the ``input`` event)."""
    driver.execute_script(
        "const el = document.getElementById(arguments[0]); el.value = arguments[1];"
        "el.dispatchEvent(new Event('input', {bubbles: true}));", element_id, value
    )


def test_the_page_loads_without_console_errors_and_every_row_shows_its_images(browser, report):
    rows = results(report)
    images = _loaded_images(browser)
    classified = {i for i, row in enumerate(rows, 1) if row["label"]}
    assert {image["row"] for image in images} == classified
    assert len(images) == 2 * len(classified)  # thumbnail and Grad-CAM overlay
    assert all(image["width"] > 0 for image in images), images
    errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    assert errors == []


def _loaded_images(driver) -> list[dict]:
    """Scroll every image into view (they are lazy), wait for each, report its natural width."""
    driver.set_script_timeout(20)
    return driver.execute_async_script(
        """const done = arguments[arguments.length - 1];
        const imgs = Array.from(document.querySelectorAll('#rows img'));
        (async () => {
          for (const img of imgs) {
            img.scrollIntoView();
            if (!img.complete) await new Promise((ok) => { img.addEventListener('load', ok); img.addEventListener('error', ok); });
          }
          window.scrollTo(0, 0);
          done(imgs.map((img) => ({row: +img.closest('.row').dataset.i, width: img.naturalWidth})));
        })();"""
    )


def test_filters_by_class_name_and_probability(browser, report):
    rows = results(report)
    total = len(rows)
    set_control(browser, "f-label", "normal")
    assert {r["label"] for r in visible(browser)} == {"normal"}
    assert len(visible(browser)) == sum(r["label"] == "normal" for r in rows)
    set_control(browser, "f-label", "")
    set_control(browser, "f-text", "#1 a")
    assert [r["name"].rsplit("/", 1)[-1] for r in visible(browser)] == ["case #1 a.png"]
    set_control(browser, "f-text", "")
    set_control(browser, "f-status", "kind:not-an-image")
    assert [r["name"].rsplit("/", 1)[-1] for r in visible(browser)] == ["broken.png"]
    set_control(browser, "f-status", "")
    probabilities = sorted(float(r["conf"]) for r in visible(browser) if r["conf"])
    middle = probabilities[len(probabilities) // 2]
    set_control(browser, "f-min", str(middle))
    shown = visible(browser)
    assert shown and all(float(r["conf"]) >= middle for r in shown) and len(shown) < total
    set_control(browser, "f-min", "0")
    assert len(visible(browser)) == total
    assert browser.find_element("id", "count").text == f"{total} of {total}"


def test_sorts_by_probability_and_back_to_input_order(browser, report):
    def click(selector: str):
        control = browser.find_element("css selector", selector)
        browser.execute_script("arguments[0].click()", control)  # the control itself, not what lies at its centre
        return control

    header = click("#rows [data-sort=conf]")  # the first click on a probability sorts the highest first
    order = [float(r["conf"]) if r["conf"] else None for r in visible(browser)]
    known = [p for p in order if p is not None]
    assert known == sorted(known, reverse=True) and order[: len(known)] == known  # rows without one last
    assert header.get_attribute("aria-sort") == "descending"
    click("#rows [data-sort=conf]")
    known = [float(r["conf"]) for r in visible(browser) if r["conf"]]
    assert known == sorted(known) and header.get_attribute("aria-sort") == "ascending"
    click("#rows button[data-sort=p2]")  # P(pneumonia), highest first
    pneumonia = [float(value.split(",")[2]) for value in browser.execute_script(
        "return Array.from(document.querySelectorAll('#rows-body > .row')).map(tr => tr.dataset.p)") if value.split(",")[2]]
    assert pneumonia == sorted(pneumonia, reverse=True)
    click("#rows [data-sort=i]")
    assert [r["i"] for r in visible(browser)] == list(range(1, len(results(report)) + 1))


def test_a_screenshot_is_produced(browser, tmp_path):
    path = tmp_path / "report.png"
    assert browser.save_screenshot(str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == tuple(browser.execute_script("return [window.innerWidth, window.innerHeight]"))
