"""Shared entrypoint of jobs.quickstart and jobs.crosslingual: parse, validate every stage and the storage (no
Ray), run, print the table and how to open MLflow; exit 2 on config errors, 3 when a previous run of the
experiment is in the way (without --overwrite), 1 naming the failed step."""

from __future__ import annotations

import datetime
import shlex
import sys
from typing import NamedTuple

from unispeech_platform.config.redact import redact_uri
from unispeech_platform.experiments.config import ExperimentConfig
from unispeech_platform.runtime.cli import exit_with, job_parser, load_job_config, run_or_exit
from unispeech_platform.runtime.errors import EXIT_FAILED


class Invocation(NamedTuple):
    cfg: ExperimentConfig
    """Validated: every stage of every arm built."""
    command: str
    """The exact command line (for the results file)."""
    overwrite: bool
    """--overwrite: replace a previous run of the experiment."""


def parse(module: str, doc: str, default_config: str, argv: list[str] | None) -> Invocation:
    """The validated config (exit 2 on an error) whose storage is free or may be replaced (exit 3 otherwise),
    with the command line and --overwrite."""
    parser = job_parser(doc, ExperimentConfig, default_config=default_config, resume=False, overwrite=True)
    cfg, ns = load_job_config(parser, ExperimentConfig, argv)
    command = " ".join(shlex.quote(a) for a in ["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])
    from unispeech_platform.experiments.runner import check_storage, validate

    run_or_exit(validate, cfg)
    run_or_exit(check_storage, cfg, overwrite=ns.overwrite)
    return Invocation(cfg, command, ns.overwrite)


def run(cfg: ExperimentConfig, *, overwrite: bool = False):
    """Run; setup errors before any step exit 3; a failed step exits 1 with the step named (the traceback of
    the cause is printed above it)."""
    from unispeech_platform.experiments.runner import ExperimentStepError, run_experiment

    try:
        return run_or_exit(run_experiment, cfg, overwrite=overwrite)
    except ExperimentStepError as e:
        import traceback

        traceback.print_exception(e.__cause__ or e)
        exit_with(f"\nFAILED: {e}", EXIT_FAILED)


def mlflow_hint(result) -> str:
    if not result.tracking_uri:
        return "MLflow tracking was off"
    ui = f".venv/bin/mlflow ui --backend-store-uri {redact_uri(result.tracking_uri)} --port 5000"
    from unispeech_platform.tracking import ui_path

    url = "http://127.0.0.1:5000" + ui_path(result.experiment_id, result.run_id)
    return f"MLflow: open the UI with\n    {ui}\nthen browse to {url}"


def today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
