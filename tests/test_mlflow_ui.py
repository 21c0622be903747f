"""The MLflow UI shows what the platform logged: a real `mlflow server` on the sqlite store of a tiny real run
(the quickstart entrypoint on its tiny preset), opened in headless Chromium; the run and its per/ metrics must
appear. Skipped only when Chromium is not installed (`make setup` installs it: apt-get install chromium)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from experiment_helpers import tiny_quickstart
from mlflow_helpers import kill_mlflow, serve_mlflow

from unispeech_platform.tracking import ui_path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")


def screenshot_run(url: str, experiment_id: str, run_id: str, expect: list[str], path: Path) -> None:
    """Open the run page, wait until every text in ``expect`` is visible, save a screenshot."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(url + ui_path(experiment_id, run_id))
            for text in expect:
                page.get_by_text(text).first.wait_for(timeout=90_000)
            page.screenshot(path=str(path), full_page=True)
        finally:
            browser.close()


def landing_page_text(url: str, experiment_id: str, run_name: str, path: Path) -> str:
    """Open the experiment the way a user does (its page, no run chosen), wait for the run to be listed, save a
    screenshot; returns the page's text."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url + ui_path(experiment_id))
            page.get_by_text(run_name, exact=True).first.wait_for(timeout=90_000)  # a row, not the breadcrumb
            page.screenshot(path=str(path))
            return page.inner_text("body")
        finally:
            browser.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_mlflow_ui_shows_run_and_per_metrics(tmp_path_factory, tmp_path):
    from mlflow.tracking import MlflowClient

    result, _, base = tiny_quickstart(tmp_path_factory)
    uri = f"sqlite:///{base / 'mlflow.db'}"
    # MLflow 3 opens an experiment on its GenAI traces overview ("No data available"): ours are tagged as model
    # development, and the links we print (ui_path) ask for the model-training pages, which 3.17 decides by.
    tags = MlflowClient(uri).get_experiment(result.experiment_id).tags
    assert tags.get("mlflow.experimentKind") == "custom_model_development"
    proc, url = serve_mlflow(uri, tmp_path / "server.log")
    try:
        landing = landing_page_text(url, result.experiment_id, "quickstart-tiny", tmp_path / "landing.png")
        assert "No data available" not in landing and "Run Name" in landing, landing[:3000]
        shutil.copy(tmp_path / "landing.png", tmp_path_factory.getbasetemp() / "landing.png")
        shot = tmp_path / "run.png"
        screenshot_run(url, result.experiment_id, result.run_id, ["quickstart-tiny", "per/pt"], shot)
        assert shot.stat().st_size > 10_000
    finally:
        kill_mlflow(proc)  # the server and its uvicorn child
