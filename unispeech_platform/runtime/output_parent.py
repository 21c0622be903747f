"""Where a job will write (``--report``, ``--out``, ``evaluate.output_dir``) is checked before any work starts.

Why: these outputs are written at the end. ``validate_data --report missing/r.json`` decoded the whole corpus
and then died in a traceback, the result lost. Checking that the directory the output goes into exists (or, for
outputs whose directories the job creates, that the nearest existing one does), is a directory and is writable
costs a few ``stat`` calls and turns that into one line, exit 3, before Ray or a decoder starts.

Only the place is checked here; what may be replaced there (markers, ``--overwrite``, devices, inputs) is the
rule of the job's output itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from unispeech_platform.runtime.errors import JobSetupError
from unispeech_platform.runtime.layout import is_uri


def check_output_parent(path: str | os.PathLike, flag: str, *, makes_parents: bool = False,
                        is_file: bool = True) -> None:
    """JobSetupError naming ``flag`` and the directory unless the job can create ``path``: its directory exists
    (``makes_parents``: the nearest existing ancestor, the job creates the rest), is a directory and is
    writable. ``is_file``: ``path`` is a file, so an existing directory there is refused; otherwise ``path`` is a
    directory the job writes into, and an existing one must be writable itself. URIs pass: object storage is
    checked by the job that uploads."""
    text = os.fspath(path)
    if is_uri(text):
        return
    target = Path(os.path.abspath(text))
    if is_file and target.is_dir():
        raise JobSetupError(f"{flag} {text}: is a directory; give a file path")
    parent = target if not is_file and target.is_dir() else target.parent
    if makes_parents:
        while not os.path.lexists(parent) and parent != parent.parent:
            parent = parent.parent
    elif not os.path.lexists(parent):
        raise JobSetupError(f"{flag} {text}: the directory {parent} does not exist")
    if not parent.is_dir():
        raise JobSetupError(f"{flag} {text}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise JobSetupError(f"{flag} {text}: cannot write in {parent} (permission denied or read-only)")
