"""Shared entrypoint of jobs.quickstart and jobs.crosslingual: parse, validate every stage (no Ray), run, print
the table and how to open MLflow; exit 2 on config errors, 1 naming the failed step."""

from __future__ import annotations

import argparse
import datetime
import logging
import shlex
import sys

from unispeech_platform.config import ConfigError, load_config
from unispeech_platform.experiments.config import ExperimentConfig


def parse(module: str, description: str, default_config: str, argv: list[str] | None) -> tuple[ExperimentConfig, str]:
    """The validated config and the exact command line (for the results file)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", default=default_config, help=f"experiment YAML (default {default_config})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key, e.g. --set corpus.high_per_lang=100 (repeatable; value parsed as YAML)")
    ns = p.parse_args(argv)
    command = " ".join(shlex.quote(a) for a in ["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])
    try:
        cfg = load_config(ExperimentConfig, ns.config, ns.overrides)
        from unispeech_platform.experiments.runner import validate

        validate(cfg)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return cfg, command


def run(cfg: ExperimentConfig):
    """Run; a failed step exits 1 with the step named (the traceback of the cause is printed above it)."""
    from unispeech_platform.experiments.runner import ExperimentStepError, run_experiment
    from unispeech_platform.tracking import TrackingError

    try:
        return run_experiment(cfg)
    except TrackingError as e:  # before any step: the MLflow store/server is unusable
        print(f"setup error: {e}", file=sys.stderr)
        raise SystemExit(3) from None
    except ExperimentStepError as e:
        import traceback

        traceback.print_exception(e.__cause__ or e)
        print(f"\nFAILED: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def mlflow_hint(result) -> str:
    if not result.tracking_uri:
        return "MLflow tracking was off"
    ui = f".venv/bin/mlflow ui --backend-store-uri {result.tracking_uri} --port 5000"
    url = f"http://127.0.0.1:5000/#/experiments/{result.experiment_id}/runs/{result.run_id}"
    return f"MLflow: open the UI with\n    {ui}\nthen browse to {url}"


def today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
