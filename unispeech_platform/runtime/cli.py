"""Command-line plumbing shared by every job: the config jobs' ``--config FILE``, repeatable
``--set dotted.key=value``, ``--resume`` / ``--overwrite``, the argparse types of counts, numbers and lists, and the
mapping of errors to exit codes (2 config, 3 environment/data/model). The flags all twelve jobs share are in
runtime/job_flags.py.

Config errors exit before Ray is imported or started. Entry points stay ``parse -> run -> print``.
"""

from __future__ import annotations

import argparse
import errno
import logging
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

from unispeech_platform.config import ConfigError, load_config, to_yaml
from unispeech_platform.config.describe import describe_keys, example_override
from unispeech_platform.config.redact import redact_uri
from unispeech_platform.runtime.console import set_verbose, verbose
from unispeech_platform.runtime.errors import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_SETUP,
    JobSetupError,
    TrainingStoppedError,
)
from unispeech_platform.runtime.job_flags import (
    LOG_FORMAT,
    add_common_flags,
    apply_common_flags,
    examples_text,
    prog_name,
)

T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")


def config_keys(config_cls: type[BaseModel]) -> str:
    """Every key a job config takes, with type, default and range (for --help): what --set and the YAML accept."""
    lines = ["config keys (YAML sections, or --set section.key=value):", *describe_keys(config_cls)]
    return "\n".join(lines) + "\nEach key is described in full in docs/ and in the field docstrings of its section."


def job_parser(doc: str, config_cls: type[BaseModel] | None = None, *, default_config: str | None = None,
               resume: bool = True, overwrite: bool = False, examples: Sequence[str] = (),
               resume_help: str = "continue the run named checkpoint.name") -> argparse.ArgumentParser:
    """The parser of a config-driven job; ``doc`` (the entry point's module docstring) is shown whole, followed
    by the job's examples (its command line after the job's name) and the config keys the job takes. ``overwrite``:
    the job replaces a previous run of the same name only when asked (``--overwrite``); without it the job
    refuses and keeps what is there. --verbose, --no-progress and --print-config are every job's
    (runtime/job_flags.py)."""
    epilog = [examples_text(examples)] if examples else []
    epilog += [config_keys(config_cls)] if config_cls else []
    parser = argparse.ArgumentParser(prog=prog_name(), description=doc, epilog="\n\n".join(epilog) or None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config", required=default_config is None, default=default_config,
        help="YAML job config (see configs/ and docs/training.md)"
        + (f"; default {default_config}" if default_config else ""),
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help=f"override one key, e.g. --set {example_override(config_cls) if config_cls else 'train.max_steps=20'} "
             "(repeatable; value parsed as YAML)",
    )
    if resume:
        parser.add_argument("--resume", action="store_true", help=resume_help)
    if overwrite:
        parser.add_argument("--overwrite", action="store_true",
                            help="delete and replace the previous run of the same name (without it the job "
                                 "refuses to start and keeps that run's checkpoints)")
    add_common_flags(parser, print_config_help="print the resolved config (every key, defaults included, secrets "
                     "redacted) as YAML and exit without running; the output is a valid --config")
    return parser


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}" if minimum else
                                         f"must not be negative, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type of a count (workers, batch size, actors): a bad value is a flag error (exit 2) naming the
    flag, not a ValueError from ``range`` or Ray later."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type of a count that may be 0 (held-out speakers) or of a seed."""
    return _whole_number(text, 0)


def finite_float(text: str) -> float:
    """argparse type of a weight: a number, not nan or inf (argparse's float accepts both)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type of a duration (seconds): finite and > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type of a duration that may be 0 (an overlap): finite and >= 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
    return value


def comma_list(text: str) -> list[str]:
    """argparse type of a list flag (``--langs a,b,c``, the same in every job; blanks dropped)."""
    return [x.strip() for x in text.split(",") if x.strip()]


def voice_pairs(text: str) -> dict[str, str]:
    """argparse type of ``--voices``: ``lang=voice[,lang=voice...]`` (an espeak-ng voice per language)."""
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(p) != 2 for p in pairs):
        raise argparse.ArgumentTypeError(f"expected lang=voice[,lang=voice...], got {text!r}")
    return {k.strip(): v.strip() for k, v in pairs}


def exit_with(message: str, code: int) -> None:
    """One clear line on stderr (redacted: a library's message may quote a URI with credentials), then the exit
    code."""
    print(redact_uri(message), file=sys.stderr)
    raise SystemExit(code)


def load_job_config(parser: argparse.ArgumentParser, config_cls: type[T], argv: list[str] | None = None
                    ) -> tuple[T, argparse.Namespace]:
    """Parse the command line and validate the config (exit 2 naming the key on error); set up logging."""
    ns = parser.parse_args(argv)
    try:
        cfg = load_config(config_cls, ns.config, ns.overrides)
    except ConfigError as e:
        exit_with(f"config error: {e}", EXIT_CONFIG)
    if getattr(ns, "print_config", False):
        print(to_yaml(cfg), end="")
        raise SystemExit(0)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    set_verbose(ns.verbose or verbose())
    apply_common_flags(ns)
    return cfg, ns


def parse_job_args(doc: str, config_cls: type[T], argv: list[str] | None = None, *, resume: bool = True,
                   examples: Sequence[str] = (), **parser_options: str) -> tuple[T, argparse.Namespace]:
    """``job_parser`` + ``load_job_config`` for the single-run config jobs (pretrain, finetune, evaluate, lid,
    sweep); ``parser_options`` go to job_parser (e.g. the sweep's own ``resume_help``)."""
    parser = job_parser(doc, config_cls, resume=resume, examples=examples, **parser_options)
    return load_job_config(parser, config_cls, argv)


FULL_DISK = frozenset({errno.ENOSPC, errno.EDQUOT})


def environment_error_line(error: OSError) -> str | None:
    """One line for an OSError that the environment caused rather than our code: one naming a file (permission
    denied, read-only file system, a directory where a file was expected, ...) or a full disk, whose writes name
    none. None for the rest (a refused connection, a bug's bad file descriptor): those keep their traceback."""
    if error.filename is not None:
        names = f"{error.filename}" + (f" -> {error.filename2}" if error.filename2 is not None else "")
        return f"{names}: {error.strerror or error}"
    if error.errno in FULL_DISK:
        return f"{error.strerror or error} (while writing the job's output)"
    return None


def run_or_exit(fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """Run a job step; config errors exit 2, setup errors (tracking, data, model, run-directory conflicts, a
    file the environment will not let us read or write, a full disk) exit 3, each with one line. Anything else
    is a real failure and keeps its traceback."""
    try:
        return fn(*args, **kwargs)
    except ConfigError as e:
        exit_with(f"config error: {e}", EXIT_CONFIG)
    except (JobSetupError, FileNotFoundError, FileExistsError) as e:
        exit_with(f"setup error: {e}", EXIT_SETUP)
    except TrainingStoppedError as e:
        exit_with(f"training stopped: {e}", EXIT_FAILED)
    except OSError as e:
        line = environment_error_line(e)
        if line is None:
            raise
        exit_with(f"setup error: {line}", EXIT_SETUP)
    raise AssertionError("unreachable")
