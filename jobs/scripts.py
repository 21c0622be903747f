"""Console scripts (``unispeech-pretrain``, ``unispeech-transcribe``, ...): the same jobs as ``python -m jobs.<name>``,
installed by ``pip install`` ([project.scripts] in pyproject.toml). The exit status is the job's own: an int it
returns or a SystemExit it raises, never a result object's repr (what a bare ``main`` as entry point would give)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

JOBS = ("pretrain", "finetune", "evaluate", "lid", "sweep", "crosslingual", "quickstart", "make_corpus",
        "import_commonvoice", "import_dataset", "validate_data", "transcribe", "export")


def script_name(job: str) -> str:
    return "unispeech-" + job.replace("_", "-")


def _entry(job: str) -> Callable[[], int]:
    def run() -> int:
        code = importlib.import_module(f"jobs.{job}").main()
        return code if isinstance(code, int) else 0

    run.__name__ = job
    run.__doc__ = f"``{script_name(job)}``: ``python -m jobs.{job}``."
    return run


pretrain, finetune, evaluate, lid, sweep, crosslingual, quickstart, make_corpus, import_commonvoice, import_dataset, \
    validate_data, transcribe, export = (_entry(job) for job in JOBS)
