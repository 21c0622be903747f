"""The source layouts ``jobs.import_dataset --format`` reads, and one import of such a source: its reader's
records, the arguments a complete corpus is reused for, and what the summary records about the source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unispeech_platform.data.audio_file import AudioLimits
from unispeech_platform.runtime.failures import Failure

from . import fairseq, hf, kaldi, manifest
from .common import Options
from .run import run_import

READERS = {"hf": hf.read_records, "manifest": manifest.read_records, "fairseq": fairseq.read_records,
           "kaldi": kaldi.read_records}
COLUMNS = ("audio", "text", "speaker", "id", "lang", "phones")
"""The columns a user may name (``--<col>-column``) where a reader's guess is wrong."""


def import_source(
    fmt: str,
    input_path: str | Path,
    out: str,
    *,
    lang: str | None,
    split: str | None,
    columns: dict[str, str | None],
    targets: str | None,
    voices: dict[str, str],
    keep_original: bool = False,
    executor: str = "auto",
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    limits: AudioLimits = AudioLimits(),
) -> tuple[dict[str, Any], list[Failure]]:
    """Import the ``fmt`` source at ``input_path`` into a corpus at ``out`` (see ``run.run_import``); ``limits``:
    the cap and deadline of each audio file a row names by path."""
    source = Path(input_path)
    if not source.exists():
        raise FileNotFoundError(f"--input {source}: no such file or directory")
    overrides = {col: columns.get(col) for col in COLUMNS}
    if lang is not None:
        overrides["lang"] = None
    args = {"format": fmt, "input": str(source.resolve()), "lang": lang, "split": split, "targets": targets,
            "voices": voices, "columns": overrides, "keep_original": keep_original}
    info = hf.describe(source) if fmt == "hf" else None
    records = READERS[fmt](source, lang=lang, split=split, overrides=overrides)
    return run_import(fmt, records, out, args=args, opts=Options(targets, voices, keep_original, limits),
                      langs_for_voices=[lang] if lang else [], workers=workers, executor=executor,
                      overwrite=overwrite, progress=progress, source_info=info)
