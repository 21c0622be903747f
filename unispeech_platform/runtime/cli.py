"""Command-line plumbing shared by every job: ``--config FILE``, repeatable ``--set dotted.key=value``,
``--resume``, and the mapping of errors to exit codes (2 config, 3 environment/data/model).

Config errors exit before Ray is imported or started. Entry points stay ``parse -> run -> print``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from unispeech_platform.config import ConfigError, load_config
from unispeech_platform.runtime.errors import EXIT_CONFIG, EXIT_SETUP, JobSetupError

T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")


def job_parser(doc: str, *, default_config: str | None = None, resume: bool = True) -> argparse.ArgumentParser:
    """The parser of a config-driven job; ``doc`` (the entry point's module docstring) is shown whole."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config", required=default_config is None, default=default_config,
        help="YAML job config (see configs/ and docs/training.md)"
        + (f"; default {default_config}" if default_config else ""),
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one key, e.g. --set train.max_steps=20 (repeatable; value parsed as YAML)",
    )
    if resume:
        parser.add_argument("--resume", action="store_true", help="continue the run named checkpoint.name")
    return parser


def exit_with(message: str, code: int) -> None:
    """One clear line on stderr, then the exit code."""
    print(message, file=sys.stderr)
    raise SystemExit(code)


def load_job_config(parser: argparse.ArgumentParser, config_cls: type[T], argv: list[str] | None = None
                    ) -> tuple[T, argparse.Namespace]:
    """Parse the command line and validate the config (exit 2 naming the key on error); set up logging."""
    ns = parser.parse_args(argv)
    try:
        cfg = load_config(config_cls, ns.config, ns.overrides)
    except ConfigError as e:
        exit_with(f"config error: {e}", EXIT_CONFIG)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return cfg, ns


def parse_job_args(doc: str, config_cls: type[T], argv: list[str] | None = None) -> tuple[T, argparse.Namespace]:
    """``job_parser`` + ``load_job_config`` for the plain jobs (pretrain, finetune, evaluate, lid, sweep)."""
    return load_job_config(job_parser(doc), config_cls, argv)


def run_or_exit(fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """Run a job step; config errors exit 2, setup errors (tracking, data, model, run-directory conflicts) exit 3,
    each with one line. Anything else is a real failure and keeps its traceback."""
    try:
        return fn(*args, **kwargs)
    except ConfigError as e:
        exit_with(f"config error: {e}", EXIT_CONFIG)
    except (JobSetupError, FileNotFoundError) as e:
        exit_with(f"setup error: {e}", EXIT_SETUP)
    raise AssertionError("unreachable")
