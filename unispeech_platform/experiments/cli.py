"""Shared entrypoint of jobs.quickstart and jobs.crosslingual: parse, validate every stage and the storage (no
Ray), run, print the table and how to open MLflow; exit 2 on config errors, 3 when a previous run of the
experiment is in the way (without --overwrite), 1 naming the failed step."""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from collections.abc import Sequence
from typing import NamedTuple

from unispeech_platform.config.redact import redact_uri
from unispeech_platform.experiments.config import ExperimentConfig
from unispeech_platform.runtime.cli import exit_with, job_parser, load_job_config, run_or_exit
from unispeech_platform.runtime.errors import EXIT_CONFIG, EXIT_FAILED


class Invocation(NamedTuple):
    cfg: ExperimentConfig
    """Validated: every stage of every arm built."""
    command: str
    """The exact command line (for the results file)."""
    overwrite: bool
    """--overwrite: replace a previous run of the experiment."""
    resume: bool = False
    """--resume: continue a stopped run of the experiment (jobs that offer it)."""


def experiment_parser(doc: str, default_config: str, examples: Sequence[str], *,
                      resumable: bool = False) -> argparse.ArgumentParser:
    """The parser of an experiment job: a config job with --overwrite, and --resume where the job can continue a
    stopped run."""
    return job_parser(doc, ExperimentConfig, default_config=default_config, resume=resumable, overwrite=True,
                      examples=examples,
                      resume_help="continue a stopped run of experiment.name: arms and seeds that finished are "
                      "kept, the first unfinished one starts again from pretraining (same config required)")


def parse(module: str, doc: str, default_config: str, argv: list[str] | None, *, examples: Sequence[str] = (),
          resumable: bool = False) -> Invocation:
    """The validated config (exit 2 on an error) whose storage is free or may be replaced, or (``resumable``
    jobs, --resume) holds a run started with the same config (exit 3 otherwise), with the command line and
    the flags."""
    parser = experiment_parser(doc, default_config, examples, resumable=resumable)
    cfg, ns = load_job_config(parser, ExperimentConfig, argv)
    command = " ".join(shlex.quote(a) for a in ["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])
    from unispeech_platform.experiments.runner import validate
    from unispeech_platform.experiments.storage import check_resumable, check_storage

    resume = bool(getattr(ns, "resume", False))
    if resume and ns.overwrite:
        exit_with("--resume and --overwrite exclude each other: continue the run, or replace it", EXIT_CONFIG)
    run_or_exit(validate, cfg)
    if resume:
        run_or_exit(check_resumable, cfg)
    else:
        run_or_exit(check_storage, cfg, overwrite=ns.overwrite)
    return Invocation(cfg, command, ns.overwrite, resume)


def run(cfg: ExperimentConfig, *, overwrite: bool = False, resume: bool = False):
    """Run; setup errors before any step exit 3; a failed step exits 1 with the step named (the traceback of
    the cause is printed above it)."""
    from unispeech_platform.experiments.runner import ExperimentStepError, run_experiment

    try:
        return run_or_exit(run_experiment, cfg, overwrite=overwrite, resume=resume)
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
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
