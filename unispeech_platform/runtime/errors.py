"""Errors a job reports as one line, and the exit codes they map to.

Library code raises; only the CLI (``runtime.cli``) turns an error into an exit code, so the same functions
can run inside a Tune trial or a test without killing the process.
"""

from __future__ import annotations

from collections.abc import Callable

EXIT_FAILED = 1
"""The job ran and failed (a traceback or a named failed step is printed)."""
EXIT_CONFIG = 2
"""The config does not validate (unknown key, wrong type, out of range): nothing was started."""
EXIT_SETUP = 3
"""The environment, data or model cannot be used (unreachable tracking server, missing corpus, corrupt model)."""


class JobSetupError(RuntimeError):
    """Something wrong with the environment, data or model that a job can tell before (or instead of) running:
    reported as one line, exit code ``EXIT_SETUP``. Subclassed by the tracking, data and model errors."""


class TrainingStoppedError(RuntimeError):
    """The job ran and stopped itself for a reason it can name in one line (e.g. a crash loop: the same update
    failed again after a restore): reported as one line, exit code ``EXIT_FAILED``."""


def first_line(error: BaseException, limit: int = 200, *, with_type: bool = True,
               clean: Callable[[str], str] | None = None) -> str:
    """An exception as one line for a report or a warning: ``Type: first line of the message`` (or the message
    alone, the type name when it is empty), ``clean``ed (e.g. a URI's password redacted) before it is cut to
    ``limit`` characters, so a cut never leaves half a secret behind."""
    lines = str(error).strip().splitlines()
    message = lines[0] if lines else ""
    if with_type:
        text = f"{type(error).__name__}: {message}".rstrip(": ")
    else:
        text = message or type(error).__name__
    if clean is not None:
        text = clean(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
