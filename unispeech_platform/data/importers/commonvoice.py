"""Common Voice releases: ``<cv_dir>/<lang>/clips/*.mp3`` and ``train.tsv``, ``dev.tsv``, ``test.tsv`` (columns
client_id, path, sentence, ...), phones from espeak-ng G2P of each sentence (``jobs.import_commonvoice``).

Common Voice's own splits are speaker-disjoint, so we keep them; ``validated.tsv`` can add its rows that are in
no split, minus dev/test speakers, to train. The report keeps the layout Common Voice users know (lang, split,
clip, reason, detail) and the reasons ``missing_clip`` and ``empty_sentence``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from unispeech_platform.runtime.failures import Failure

from .common import ImportInputError, Options, Record
from .g2p import voice_for
from .run import run_import
from .text_files import check_text_file, csv_rows

SPLIT_FILES = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
REQUIRED_COLUMNS = ("client_id", "path", "sentence")
REPORT_COLUMNS = {"lang": "lang", "split": "split", "path": "where", "reason": "reason", "detail": "detail"}

MISSING_CLIP = "missing_clip"
EMPTY_SENTENCE = "empty_sentence"


def read_tsv(path: Path) -> list[dict[str, str]]:
    """Rows of a Common Voice TSV (no quoting: sentences contain quotes); errors name the file and column."""
    check_text_file(path)
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = csv_rows(path, reader)
        first = next(rows, None)  # reads the header (and a first row) inside csv_rows' error handling
        for col in REQUIRED_COLUMNS:
            if col not in (reader.fieldnames or []):
                raise ImportInputError(f"{path}: missing column {col!r} (has {reader.fieldnames})")
        return ([] if first is None else [first]) + list(rows)


def split_rows(root: Path, *, validated_extra: bool) -> dict[str, list[dict[str, str]]]:
    """The TSV rows of one language per split, as its TSV files list them."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such Common Voice language directory")
    rows: dict[str, list[dict[str, str]]] = {}
    for split, name in SPLIT_FILES.items():
        path = root / name
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: missing (a Common Voice language needs {', '.join(SPLIT_FILES.values())})"
            )
        rows[split] = read_tsv(path)
    if validated_extra and (root / "validated.tsv").exists():
        used = {r["path"] for rs in rows.values() for r in rs}
        held_out = {r["client_id"] for s in ("dev", "test") for r in rows[s]}
        extra = [r for r in read_tsv(root / "validated.tsv") if r["path"] not in used and r["client_id"] not in held_out]
        rows["train"] = rows["train"] + extra
    return rows


def clip_record(lang: str, split: str, clips: Path, row: dict[str, str]) -> Record:
    """One TSV row as a record; an empty sentence or a missing clip is known here and named with Common Voice's
    reasons (the sentence is checked first)."""
    name = row["path"]
    clip = clips / name
    problem = None
    if not " ".join((row["sentence"] or "").split()):
        problem = (EMPTY_SENTENCE, "the sentence is empty")
    else:
        try:
            os.stat(clip)
        except OSError as e:
            problem = (MISSING_CLIP, f"{clip}: {e.strerror}")
    return Record(id=f"cv-{lang}-{Path(name).stem}", split=split, lang=lang, where=Path(name).name, path=str(clip),
                  speaker=row["client_id"], text=row["sentence"] or "", problem=problem)


def read_records(cv_dir: str | Path, langs: Sequence[str], *, validated_extra: bool = False) -> Iterator[Record]:
    """The clips of ``langs`` in language and split order. Every TSV is read (and its columns checked) before the
    first record, so a broken release stops the import before any row is converted."""
    planned = [(lang, split_rows(Path(cv_dir) / lang, validated_extra=validated_extra)) for lang in langs]
    for lang, rows in planned:
        clips = Path(cv_dir) / lang / "clips"
        for split, split_tsv in rows.items():
            for row in split_tsv:
                yield clip_record(lang, split, clips, row)


def import_commonvoice(
    cv_dir: str | Path,
    langs: Sequence[str],
    out: str | Path,
    *,
    voices: dict[str, str] | None = None,
    validated_extra: bool = False,
    keep_original: bool = False,
    executor: str = "auto",
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[dict[str, Any], list[Failure]]:
    """Convert ``langs`` of a Common Voice release under ``cv_dir`` into a corpus at ``out`` (transcoded to
    16 kHz mono FLAC, or the MP3 kept); returns the summary and the clips that failed, each with its reason
    (also in ``<out>/import_report.tsv``). Re-running into a complete import is a no-op."""
    cv_dir = Path(cv_dir)
    resolved = {lang: voice_for(lang, voices) for lang in langs}
    args = {"source": str(cv_dir.resolve()), "langs": list(langs), "voices": resolved,
            "validated_extra": validated_extra, "keep_original": keep_original}
    return run_import("Common Voice", read_records(cv_dir, langs, validated_extra=validated_extra), str(out),
                      args=args, opts=Options("phones", resolved, keep_original), langs_for_voices=langs,
                      workers=workers, executor=executor, overwrite=overwrite, progress=progress,
                      report_columns=REPORT_COLUMNS)
