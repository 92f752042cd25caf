"""Screenshots of the MLflow UI on a store: the experiment page and a compare view of its latest train runs.

    python benchmarks/ui_screenshots.py --store sqlite:///$PWD/mlruns/mlflow.db --out docs/ --count 3

Starts the UI the way ``mnist99 ui`` does (on a free port), drives the system's headless Chromium
(Debian ``chromium`` + ``chromium-driver``) through Selenium, waits until the run names and a metric
are rendered, and writes ``experiment.png`` and ``compare_runs.png``. The browser helpers here are
shared with ``tests/test_ui_browser.py``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

# Flags for a headless browser that neither phones home nor needs a GPU or a sandbox (root in CI).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
                  "--disable-dev-shm-usage"]
PAGE_SECONDS = 60.0  # the first page load compiles MLflow's ~10 MB of JavaScript
# UI settings (MLflow's `useLocalStorage` keys are `<key>_v<version>`, JSON values): open experiments on
# their training runs, not the GenAI trace overview, and keep the AI-assistant panel from covering a third.
UI_SETTINGS = {"mlflow.workflowType_v1": "machine_learning", "mlflow.assistant.panelOpen_v1": False,
               "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True}
# The experiment table's columns for the docs picture: off with the defaults that say little here, on with scores.
DOC_COLUMNS = ["Source", "Models", "test_accuracy", "val_accuracy", "train_seconds", "seconds_to_val_99"]


def chromium_paths() -> tuple[str, str] | None:
    """The system ``chromium`` and ``chromedriver``, or None when either is missing."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@contextlib.contextmanager
def chromium(user_data_dir: Path, size: tuple[int, int] = (1600, 1000)) -> Iterator:
    """A headless Chromium WebDriver on a fresh profile; quit on exit. Never downloads a browser."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = chromium_paths()
    if paths is None:
        raise RuntimeError("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={user_data_dir}", f"--window-size={size[0]},{size[1]}"]:
        options.add_argument(flag)
    # An explicit driver path keeps Selenium Manager (which would download one) out of the way.
    driver = webdriver.Chrome(service=Service(executable_path=paths[1]), options=options)
    try:
        driver.set_page_load_timeout(PAGE_SECONDS)
        yield driver
    finally:
        driver.quit()


def use_ui_settings(driver, url: str) -> None:
    """Store :data:`UI_SETTINGS` in the browser for the server at ``url`` (before opening its pages)."""
    driver.get(f"{url}/health")  # any page of the origin gives access to its localStorage
    for key, value in UI_SETTINGS.items():
        driver.execute_script("window.localStorage.setItem(arguments[0], arguments[1])", key, json.dumps(value))


def toggle_columns(driver, names: list[str]) -> list[str]:
    """Tick or untick columns in the runs table's "Columns" menu; returns the names it could not find.

    Best effort, for pictures only: it clicks the menu the way a user does, so a UI change breaks it softly.
    """
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    missing = []
    try:
        driver.find_element(By.XPATH, "//button[normalize-space()='Columns']").click()
        time.sleep(1.0)
        for name in names:
            boxes = driver.find_elements(By.XPATH, "//div[@role='dialog']//*[contains(@class,'tree-treenode')]"
                                         f"[.//*[normalize-space()='{name}']]//*[contains(@class,'tree-checkbox')]")
            if boxes:
                boxes[0].click()
            else:
                missing.append(name)
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        time.sleep(1.0)
    except WebDriverException:
        return names
    return missing


# Bring an element whose own text is arguments[0] into view; if none is in the DOM yet, page every
# virtualised grid (MLflow renders only the visible rows of long tables, e.g. the compare page's metrics).
REVEAL_JS = """
const deepest = sel => [...document.querySelectorAll(sel)].filter(e => e.textContent.trim() === arguments[0]).pop();
const hit = deepest('.ReactVirtualized__Grid *') || deepest('body *');  // table cells before anything else
if (hit) { hit.scrollIntoView({block: arguments[1] || 'center'}); return true; }
for (const grid of document.querySelectorAll('.ReactVirtualized__Grid')) { grid.scrollTop += grid.clientHeight; }
return false;
"""


def capture(driver, url: str, expected: list[str], png: Path, timeout: float = PAGE_SECONDS) -> str:
    """Open ``url``, wait until every string in ``expected`` is in the page text, save ``png``; return the text.

    A string not visible yet is looked for in the DOM and scrolled into view (so the picture shows it).
    On a timeout the screenshot is still saved (it shows what did render) and the error names what was missing.
    """
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def page_text(d) -> str:
        return d.find_element(By.TAG_NAME, "body").text

    def all_shown(d, strings: list[str]) -> bool:
        missing = [s for s in strings if s not in page_text(d)]
        for s in missing:
            d.execute_script(REVEAL_JS, s)
        return not missing

    if url != driver.current_url:
        driver.get(url)
    png.parent.mkdir(parents=True, exist_ok=True)
    try:
        WebDriverWait(driver, timeout, poll_frequency=0.5).until(lambda d: all_shown(d, expected))
    except TimeoutException:
        driver.save_screenshot(str(png))
        text = page_text(driver)
        missing = [s for s in expected if s not in text]
        raise AssertionError(f"{url}: {missing} not rendered within {timeout:.0f} s; "
                             f"page text: {text[:800]!r}") from None
    time.sleep(1.0)  # let charts finish their entry animation before the picture
    driver.save_screenshot(str(png))
    return page_text(driver)


def api(url: str, endpoint: str, body: dict | None = None) -> dict:
    """Call the MLflow REST API (POST with a JSON body, else GET) and return the decoded answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/{endpoint}", data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def experiment_id(url: str, name: str) -> str:
    query = urllib.parse.urlencode({"experiment_name": name})
    return api(url, f"experiments/get-by-name?{query}")["experiment"]["experiment_id"]


def is_top_level(run: dict) -> bool:
    """Not nested (e.g. not an ensemble member): the runs the experiment page lists without expanding."""
    return not any(tag["key"] == "mlflow.parentRunId" for tag in run["data"].get("tags", []))


def latest_train_runs(url: str, exp_id: str, count: int) -> list[dict]:
    """The ``count`` most recent FINISHED top-level runs of the train stage (each a REST ``Run`` mapping)."""
    found = api(url, "runs/search", {
        "experiment_ids": [exp_id], "max_results": 1000, "order_by": ["attributes.start_time DESC"],
        "filter": "tags.`mnist99.stage` = 'train' and attributes.status = 'FINISHED'"})
    return [run for run in found.get("runs", []) if is_top_level(run)][:count]


def experiment_url(url: str, exp_id: str) -> str:
    """The experiment's runs table (``/runs``: MLflow 3 otherwise may open its GenAI overview)."""
    return f"{url}/#/experiments/{exp_id}/runs"


def compare_url(url: str, exp_id: str, run_ids: list[str]) -> str:
    """MLflow 3's compare route (``Routes.getCompareRunPageRoute``): JSON lists in the query string."""
    query = urllib.parse.urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps([exp_id])})
    return f"{url}/#/compare-runs?{query}"


def screenshots(url: str, out: Path, experiment: str = "mnist99", run_ids: list[str] | None = None,
                count: int = 3, metric: str = "test_accuracy") -> dict[str, Path]:
    """Both pages of the UI at ``url`` as PNGs in ``out``; returns {page: path}."""
    exp_id = experiment_id(url, experiment)
    runs = (latest_train_runs(url, exp_id, count) if not run_ids
            else [api(url, f"runs/get?run_id={r}")["run"] for r in run_ids])
    if not runs:
        raise SystemExit(f"no FINISHED train runs in experiment {experiment!r} at {url}")
    names = [r["info"]["run_name"] for r in runs]
    pngs = {"experiment": out / "experiment.png", "compare_runs": out / "compare_runs.png",
            "compare_metrics": out / "compare_metrics.png"}
    with tempfile.TemporaryDirectory() as profile, chromium(Path(profile), size=(1920, 1080)) as driver:
        use_ui_settings(driver, url)
        driver.get(experiment_url(url, exp_id))
        capture(driver, driver.current_url, names, pngs["experiment"])  # wait for the table first
        if missing := toggle_columns(driver, DOC_COLUMNS):
            print(f"columns not found in the runs table: {missing}", file=sys.stderr)
        capture(driver, driver.current_url, names + [metric], pngs["experiment"])
        capture(driver, compare_url(url, exp_id, [r["info"]["run_id"] for r in runs]), names, pngs["compare_runs"])
        driver.execute_script(REVEAL_JS, "Metrics", "start")  # the compare page's metrics section on top
        time.sleep(1.0)
        capture(driver, driver.current_url, [metric], pngs["compare_metrics"])
    return pngs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="MLflow store URI, e.g. sqlite:///abs/path/mlruns/mlflow.db")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for the PNGs (default docs/)")
    parser.add_argument("--experiment", default="mnist99")
    parser.add_argument("--count", type=int, default=3, help="compare the N latest FINISHED train runs")
    parser.add_argument("--runs", nargs="*", default=None, metavar="RUN_ID", help="compare these runs instead")
    args = parser.parse_args(argv)

    from mnist99.config import load_config
    from mnist99.tracking.server import free_port, serving

    cfg = load_config([], [f"tracking.uri={args.store}"])
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # nothing to report from a screenshot run
    with serving(cfg, port=free_port(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as server:
        pngs = screenshots(server.url, args.out, args.experiment, args.runs, args.count)
    for page, path in pngs.items():
        print(f"{page}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
