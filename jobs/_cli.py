"""Shared entrypoint plumbing: `--config FILE`, repeatable `--set dotted.key=value`, `--resume`, exit codes.

Config errors exit with status 2 before Ray is imported or started.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TypeVar

from pydantic import BaseModel

from unispeech_platform.config import ConfigError, load_config

T = TypeVar("T", bound=BaseModel)
EXIT_CONFIG = 2
EXIT_SETUP = 3


def parse_job_args(description: str, config_cls: type[T], argv: list[str] | None = None) -> tuple[T, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="YAML job config (see configs/ and docs/training.md)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one key, e.g. --set train.max_steps=20 (repeatable; value parsed as YAML)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run named checkpoint.name")
    ns = parser.parse_args(argv)
    try:
        cfg = load_config(config_cls, ns.config, ns.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return cfg, ns


def run_or_exit(fn, *args, **kwargs):
    """Run the job; setup errors (unreachable tracking server, run dir conflicts) exit non-zero with a message."""
    from unispeech_platform.tracking import TrackingError
    from unispeech_platform.train import JobSetupError

    try:
        return fn(*args, **kwargs)
    except (TrackingError, JobSetupError, FileNotFoundError) as e:
        print(f"setup error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_SETUP) from None
