"""Where an import writes: a local corpus directory directly, or object storage through a local staging
directory that is uploaded when the corpus is complete (docs/data.md#object-storage)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from unispeech_platform.config.redact import redact_uri
from unispeech_platform.runtime.errors import JobSetupError

from ..schema import SUMMARY_FILE, VOCAB_FILE
from ..storage import is_empty, is_remote, locate, publish


def check_destination(out: str, overwrite: bool) -> bool:
    """Whether ``out`` is on object storage (the corpus is then built in a local staging directory and uploaded,
    its vocab.json and summary.json last). A non-empty remote prefix is refused: stale parts would mix in, and
    the importer deletes nothing on a store it does not own."""
    if not is_remote(out):
        return False
    try:
        empty = is_empty(out)
    except (OSError, ValueError) as e:
        raise JobSetupError(f"--out {redact_uri(out)}: cannot list it ({e})") from None
    if not empty:
        hint = " (--overwrite does not delete on object storage)" if overwrite else ""
        raise JobSetupError(f"--out {redact_uri(out)} already holds files: choose an empty prefix{hint}")
    return True


@contextlib.contextmanager
def local_corpus_dir(out: str, remote: bool) -> Iterator[Path]:
    """The local directory to build the corpus in: ``out`` itself, or (``remote``) a staging directory that is
    uploaded to ``out`` when the block ends without an error, and removed either way."""
    if not remote:
        yield Path(locate(out).path)
        return
    staging = Path(tempfile.mkdtemp(prefix="unispeech-import-"))
    try:
        yield staging
        n = publish(staging, out, (VOCAB_FILE, SUMMARY_FILE))
        print(f"uploaded {n} files to {redact_uri(out)}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # our own staging directory
