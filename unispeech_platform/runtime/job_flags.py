"""The flags every one of the twelve jobs takes, whichever parser it has (issue 32: one CLI convention):
``--verbose``, ``--no-progress``, ``--print-config``, an ``examples:`` section in ``--help``, and the usage line
naming how the job was started. The config jobs build on it in runtime/cli.py (``job_parser``); the plain-flag jobs
(make_corpus, import_commonvoice, import_dataset, validate_data, transcribe) through ``flags_parser`` and
``start_flags_job``. One module, so the jobs cannot drift apart.

What ``--print-config`` prints for a plain-flag job: the argument set itself, one YAML key per flag (its long name
without ``--``; a positional by its name) with the value the job would run with, defaults included, secrets
redacted; the job then exits 0 without touching anything.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from unispeech_platform.config.redact import redact_config
from unispeech_platform.runtime.console import NO_PROGRESS_ENV, set_verbose

OWN_LOGGERS = ("unispeech", "unispeech_platform", "unispeech_core", "jobs")
"""Our loggers: DEBUG under --verbose (libraries stay at INFO: their DEBUG logs may quote request headers)."""
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
EXAMPLES_HEADING = "examples:"


def prog_name() -> str:
    """How the user started the job, for the usage line: ``python -m jobs.pretrain`` (argparse would say
    ``pretrain.py``) or the console script's name (``unispeech-pretrain``)."""
    argv0 = Path(sys.argv[0])
    if argv0.suffix == ".py" and argv0.parent.name == "jobs":
        return f"python -m jobs.{argv0.stem}"
    return argv0.name


def examples_text(examples: Sequence[str]) -> str:
    """The ``examples:`` section of ``--help``: one command line each, started as the user started the job
    (tests/test_cli.py parses and validates every one)."""
    return "\n".join([EXAMPLES_HEADING, *(f"  {prog_name()} {line}".rstrip() for line in examples)])


def add_common_flags(parser: argparse.ArgumentParser, *, print_config_help: str) -> None:
    """--verbose, --no-progress and --print-config, with the same meaning in every job."""
    parser.add_argument("--verbose", action="store_true",
                        help="DEBUG logs of the job, INFO logs of the libraries, Ray's worker output and Ray Data "
                             "progress bars")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (tqdm, Ray Data), e.g. for log files; the job's own lines stay")
    parser.add_argument("--print-config", action="store_true", help=print_config_help)


TYPE_LABELS = {
    "positive_int": ("int", ">= 1"), "non_negative_int": ("int", ">= 0"), "finite_float": ("float", "finite"),
    "positive_float": ("float", "> 0"), "non_negative_float": ("float", ">= 0"), "comma_list": ("a,b,...", ""), "voice_pairs": ("lang=voice,...", ""),
    "int": ("int", ""), "float": ("float", ""), "str": ("text", ""),
}
"""The argparse types of runtime/cli.py (by name: that module builds on this one) as (type, range)."""


def flag_facts(action: argparse.Action) -> str:
    """``int; default 6; >= 1``: a value flag's type, default and range, as --help of the config jobs lists their
    keys; a default the help text already explains is not repeated."""
    name = getattr(action.type, "__name__", "str")
    kind, bounds = TYPE_LABELS.get(name, (name, ""))
    parts = [] if action.choices else [kind]
    if action.default is not argparse.SUPPRESS and "default" not in (action.help or ""):
        shown = ",".join(action.default) if isinstance(action.default, list) else action.default
        parts.append("required" if action.required else f"default {shown if shown not in (None, {}) else 'none'}")
    return "; ".join([*parts, *([bounds] if bounds else [])])


class FlagsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written, and every value flag's help ending in its type, default and range."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if not action.option_strings or action.nargs == 0 or text == argparse.SUPPRESS:
            return action.help  # positionals, switches and hidden aliases as written
        facts = flag_facts(action).replace("%", "%%")
        return f"{text} ({facts})".strip() if facts else text


def flags_parser(doc: str, examples: Sequence[str]) -> argparse.ArgumentParser:
    """The parser of a plain-flag job: ``doc`` shown whole, the common flags, the examples after the flags."""
    parser = argparse.ArgumentParser(prog=prog_name(), description=doc, epilog=examples_text(examples),
                                     formatter_class=FlagsHelpFormatter)
    add_common_flags(parser, print_config_help="print the resolved arguments (every flag with the value the job "
                     "would use, defaults included, secrets redacted) as YAML and exit without running")
    return parser


def add_corpus_overwrite_flag(parser: argparse.ArgumentParser) -> None:
    """``--overwrite`` of the corpus-making jobs (make_corpus and both importers): one rule, one help text."""
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a corpus made with other arguments, or write into a non-empty directory this "
                             "job did not make (only what the job made is ever removed: "
                             "docs/data.md#where-a-job-writes)")


def alias(old: str) -> str:
    """The help note of an old spelling still accepted (so nobody's scripts break)."""
    return f" ({old}: the old spelling, still accepted)"


def apply_common_flags(ns: argparse.Namespace) -> None:
    """--verbose: our loggers at DEBUG, the libraries' INFO logs and Ray's output on (console.set_verbose);
    --no-progress: NO_PROGRESS_ENV for every process of the job. Without either nothing changes, so a quiet job
    stays as quiet (and imports nothing more) than before."""
    if ns.verbose:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
        for name in OWN_LOGGERS:
            logging.getLogger(name).setLevel(logging.DEBUG)
        set_verbose(True)
    if ns.no_progress:
        os.environ[NO_PROGRESS_ENV] = "1"


def _plain(value: Any) -> Any:
    """A YAML-safe value: tuples as lists, paths and other objects as text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def resolved_arguments(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> dict[str, Any]:
    """Every flag the job reads, keyed by its long name (or a positional's name), with its value in ``ns``;
    old spellings and hidden aliases (same destination) appear once, under the current name."""
    out: dict[str, Any] = {}
    seen = {"help", "print_config"}
    for action in parser._actions:
        if action.dest in seen or action.help == argparse.SUPPRESS:
            continue
        seen.add(action.dest)
        long = [s for s in action.option_strings if s.startswith("--")]
        out[long[0][2:] if long else action.dest] = _plain(getattr(ns, action.dest))
    return out


def arguments_yaml(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> str:
    """``resolved_arguments`` as YAML, secrets redacted (config/redact.py, as the config jobs' --print-config)."""
    return yaml.safe_dump(redact_config(resolved_arguments(parser, ns)), sort_keys=False, allow_unicode=True)


def start_flags_job(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> argparse.Namespace:
    """After the flags are parsed and checked: --print-config prints them and exits 0 (nothing run, nothing
    written); otherwise the common flags take effect and the job runs."""
    if ns.print_config:
        print(arguments_yaml(parser, ns), end="")
        raise SystemExit(0)
    apply_common_flags(ns)
    return ns
