"""Screenshot a run's metric charts in the MLflow UI, filtered by a prefix (docs/images/, e.g. the step-time
breakdown of docs/performance.md#where-a-step-goes):

    .venv/bin/python tools/screenshot_charts.py --uri sqlite:////tmp/bench-train-x/mlflow.db --run RUN_ID \\
        --prefix time_share --out docs/images/mlflow_time_share.png

A real `mlflow server` on the store and headless Chromium (`make browser`), as tests/test_mlflow_ui.py opens them
(its server and browser helpers are reused, not copied).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def screenshot_charts(url: str, experiment_id: str, run_id: str, prefix: str, out: Path) -> None:
    """Open the run's model-metrics tab, type ``prefix`` into the chart search, wait for a chart titled with it."""
    from playwright.sync_api import sync_playwright
    from test_mlflow_ui import CHROMIUM, CHROMIUM_ARGS

    from unispeech_platform.tracking import ui_path

    path, query = ui_path(experiment_id, run_id).split("?")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1100})
            page.goto(f"{url}{path}/model-metrics?{query}")
            search = page.get_by_placeholder("Search metric charts")
            search.first.wait_for(timeout=90_000)
            search.first.fill(prefix)
            page.get_by_text(f"{prefix}/").first.wait_for(timeout=90_000)
            page.wait_for_timeout(3_000)  # the charts draw after their titles
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uri", required=True, help="the MLflow store (sqlite:///...)")
    ap.add_argument("--run", required=True, help="run id")
    ap.add_argument("--prefix", default="time_share")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    from mlflow.tracking import MlflowClient
    from mlflow_helpers import kill_mlflow, serve_mlflow

    experiment_id = MlflowClient(args.uri).get_run(args.run).info.experiment_id
    proc, url = serve_mlflow(args.uri, Path(tempfile.mkdtemp(prefix="mlflow-shot-")) / "server.log")
    try:
        screenshot_charts(url, experiment_id, args.run, args.prefix, args.out)
    finally:
        kill_mlflow(proc)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
