"""Streaming, crash-safe Parquet writers for the corpus layout.

Rows are buffered only until a row group is full (``row_group_rows`` rows or ``row_group_bytes`` of audio), so
memory stays bounded however large the corpus. Row groups are small so that training can read a corpus in
shuffled pieces of a few dozen rows (data/pieces.py; Hugging Face writes audio in groups of 100 rows). A part is written under a hidden temp name and renamed when complete: readers
(and :func:`scan_corpus`) never see a half-written file, and a crash leaves at most a hidden temp file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from unispeech_core.tokenizer import PhoneTokenizer
from unispeech_platform.runtime.output_paths import (
    OutputDir,
    OutputPathError,
    component_problem,
    open_output_dir,
    write_error,
)

from .schema import REPORT_FILE, SCHEMA, SUMMARY_FILE, VOCAB_FILE
from .summary import CorpusStats, read_summary

CORPUS_JOB = "corpus"
"""The marker's job name for every corpus job (make_corpus, import_dataset, import_commonvoice): they share this
writer and its layout, and summary.json's ``args`` tells which one made a corpus."""
ROOT_FILES = (VOCAB_FILE, SUMMARY_FILE, REPORT_FILE)
"""The files a corpus job writes at the corpus root (each through a hidden ``.<name>.tmp``)."""

DEFAULT_ROW_GROUP_BYTES = 64 << 20
DEFAULT_ROW_GROUP_ROWS = 64  # = data.read_piece_rows' default: a piece is one row group
DEFAULT_PART_BYTES = 512 << 20


class PartWriter:
    """Writes one ``lang=/split=`` directory as ``part-00000.parquet``, ``part-00001.parquet``, ...; ``claim``
    turns a file name in that directory into its path, checked and recorded as made (OutputDir.claim)."""

    def __init__(self, claim: Callable[[str], Path], *, row_group_bytes: int, part_bytes: int,
                 row_group_rows: int = DEFAULT_ROW_GROUP_ROWS):
        self.claim = claim
        self.row_group_bytes = row_group_bytes
        self.row_group_rows = row_group_rows
        self.part_bytes = part_bytes
        self._rows: list[dict[str, Any]] = []
        self._buffered = 0
        self._index = 0
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._part_written = 0
        self.parts: list[Path] = []

    def _name(self) -> str:
        return f"part-{self._index:05d}.parquet"

    def write(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        self._buffered += len(row.get("audio") or b"")
        if self._buffered >= self.row_group_bytes or len(self._rows) >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        if self._writer is None:
            self._tmp = self.claim(f".{self._name()}.tmp")
            self._writer = pq.ParquetWriter(self._tmp, SCHEMA, compression="zstd")
        table = pa.Table.from_pylist(self._rows, schema=SCHEMA)
        self._writer.write_table(table, row_group_size=len(self._rows))
        self._part_written += self._buffered
        self._rows, self._buffered = [], 0
        if self._part_written >= self.part_bytes:
            self._finish_part()

    def _finish_part(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        final = self.claim(self._name())
        os.replace(self._tmp, final)  # atomic on POSIX: the part appears complete or not at all
        self.parts.append(final)
        self._writer, self._tmp, self._part_written = None, None, 0
        self._index += 1

    def close(self) -> None:
        self._flush()
        self._finish_part()

    def abort(self) -> None:
        """Drop buffered rows and the unfinished temp part (finished parts stay)."""
        self._rows, self._buffered = [], 0
        if self._writer is not None:
            self._writer.close()
            self._tmp.unlink(missing_ok=True)
            self._writer, self._tmp = None, None


class CorpusWriter:
    """Routes rows to per-partition writers, tracks statistics, and writes vocab.json at the end.

    Every file goes through the output's marker (runtime/output_paths.py): a language or split that is not one
    safe path component raises OutputPathError before it names anything, and no entry the job did not make is
    replaced. A write that fails (disk full) is one OutputPathError naming the corpus. Use as a context manager:
    leaving it with an exception aborts (no temp files, no vocab.json).
    """

    def __init__(
        self,
        root: str | Path | OutputDir,
        *,
        row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
        part_bytes: int = DEFAULT_PART_BYTES,
        row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    ):
        self.output = root if isinstance(root, OutputDir) else open_output_dir(root, CORPUS_JOB, overwrite=False)[0]
        self.root = self.output.root
        self.row_group_rows = row_group_rows
        self.row_group_bytes = row_group_bytes
        self.part_bytes = part_bytes
        self.stats = CorpusStats()
        self._writers: dict[tuple[str, str], PartWriter] = {}

    def write(self, lang: str, split: str, row: dict[str, Any]) -> None:
        """Append one row (keys = the schema's columns) to ``lang=<lang>/split=<split>``."""
        key = (lang, split)
        if key not in self._writers:
            for what, value in (("language", lang), ("split", split)):
                problem = component_problem(value)
                if problem:
                    raise OutputPathError(f"{self.root}: {what} {problem}")
            parts = (f"lang={lang}", f"split={split}")
            self._writers[key] = PartWriter(
                lambda name, parts=parts: self.output.claim(*parts, name),
                row_group_bytes=self.row_group_bytes,
                part_bytes=self.part_bytes,
                row_group_rows=self.row_group_rows,
            )
        try:
            self._writers[key].write(row)
        except OSError as e:
            raise self._write_error(e) from None
        self.stats.add(lang, split, row)

    def _write_error(self, e: OSError) -> OutputPathError:
        return write_error(self.root, "corpus", e, after="the corpus is incomplete (no summary.json); "
                           "free space and run the job again to rebuild it")

    def write_many(self, lang: str, split: str, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.write(lang, split, row)

    def close(self) -> PhoneTokenizer:
        """Finish every part, then write vocab.json built from all phones seen (all splits)."""
        try:
            for w in self._writers.values():
                w.close()
            tokenizer = PhoneTokenizer.from_phones(self.stats.phone_inventory())
            write_vocab(tokenizer, self.output)
        except OSError as e:
            raise self._write_error(e) from None
        return tokenizer

    def abort(self) -> None:
        for w in self._writers.values():
            w.abort()

    def __enter__(self) -> CorpusWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def claim_root_file(output: OutputDir, name: str) -> Path:
    """The path of a corpus-root file written atomically (``.<name>.tmp`` renamed), both names claimed."""
    output.claim(f".{name}.tmp")
    return output.claim(name)


def write_vocab(tokenizer: PhoneTokenizer, output: OutputDir) -> Path:
    final = claim_root_file(output, VOCAB_FILE)
    tmp = final.with_name(f".{VOCAB_FILE}.tmp")
    tokenizer.save(tmp)
    os.replace(tmp, final)
    return final


def corpus_made(root: Path) -> set[str] | None:
    """What a corpus job of an earlier version (no marker) made in ``root``, recognised by its summary.json
    (``args`` and ``languages``): the root files and the part files of the partitions the summary lists. None
    when ``root`` holds no such summary."""
    try:
        summary = json.loads((root / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(summary, dict) or "args" not in summary or not isinstance(summary.get("languages"), dict):
        return None
    made = {*ROOT_FILES, *(f".{name}.tmp" for name in ROOT_FILES)}
    for lang, splits in summary["languages"].items():
        for split in splits if isinstance(splits, dict) else ():
            if component_problem(lang) or component_problem(split):
                continue
            d = f"lang={lang}/split={split}"
            parts = (root / d).glob("*part-*.parquet*") if (root / d).is_dir() else ()
            made |= {f"lang={lang}", d, *(f"{d}/{p.name}" for p in parts)}
    return made


class CorpusExistsError(OutputPathError, FileExistsError):
    """``out`` holds a complete corpus made with other arguments (a FileExistsError, as it always was)."""


def _complete_summary(root: Path) -> dict[str, Any] | None:
    """summary.json (written last: the corpus is complete), or None when it is missing or unreadable."""
    try:
        return read_summary(root)
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def prepare_output(out: str | Path, args: dict[str, Any], *, overwrite: bool,
                   inputs: Iterable[str | Path] = ()) -> tuple[OutputDir, dict[str, Any] | None]:
    """Make ``out`` ready for a corpus job with ``args`` (docs/data.md#where-a-job-writes): the output and the
    existing summary when ``out`` already holds a complete corpus made with the same ``args`` (the job is then a
    no-op). A complete corpus with other arguments is refused unless ``overwrite``; one left incomplete by a crash
    is cleared. Only what the marker lists as made by a corpus job is removed; a directory the job did not make is
    refused unless ``overwrite``, and a root file it needs (vocab.json, ...) that is someone else's is refused."""
    output, ours = open_output_dir(out, CORPUS_JOB, overwrite=overwrite, legacy=corpus_made, inputs=inputs)
    existing = _complete_summary(output.root) if ours else None
    if existing is not None and not overwrite:
        if existing.get("args") == args:
            return output, existing
        raise CorpusExistsError(
            f"{out} holds a corpus made with other arguments {existing.get('args')}; pass --overwrite to replace it"
        )
    output.check_free(*ROOT_FILES, *(f".{name}.tmp" for name in ROOT_FILES))
    output.remove_made()
    for name in ROOT_FILES:  # a name taken by someone else's file stops the job before any row is converted
        claim_root_file(output, name)
    return output, None
