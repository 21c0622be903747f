"""Streaming, crash-safe Parquet writers for the corpus layout.

Rows are buffered only until a row group is full (``row_group_rows`` rows or ``row_group_bytes`` of audio), so
memory stays bounded however large the corpus. Row groups are small so that training can read a corpus in
shuffled pieces of a few dozen rows (data/pieces.py; Hugging Face writes audio in groups of 100 rows). A part is written under a hidden temp name and renamed when complete: readers
(and :func:`scan_corpus`) never see a half-written file, and a crash leaves at most a hidden temp file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from unispeech_core.tokenizer import PhoneTokenizer

from .schema import SCHEMA, SUMMARY_FILE, VOCAB_FILE, partition_dir
from .summary import CorpusStats, read_summary

DEFAULT_ROW_GROUP_BYTES = 64 << 20
DEFAULT_ROW_GROUP_ROWS = 64  # = data.read_piece_rows' default: a piece is one row group
DEFAULT_PART_BYTES = 512 << 20


class PartWriter:
    """Writes one ``lang=/split=`` directory as ``part-00000.parquet``, ``part-00001.parquet``, ..."""

    def __init__(self, directory: Path, *, row_group_bytes: int, part_bytes: int,
                 row_group_rows: int = DEFAULT_ROW_GROUP_ROWS):
        self.directory = directory
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

    def _final(self) -> Path:
        return self.directory / f"part-{self._index:05d}.parquet"

    def write(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        self._buffered += len(row.get("audio") or b"")
        if self._buffered >= self.row_group_bytes or len(self._rows) >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        if self._writer is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._tmp = self.directory / f".{self._final().name}.tmp"
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
        os.replace(self._tmp, self._final())  # atomic on POSIX: the part appears complete or not at all
        self.parts.append(self._final())
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

    Use as a context manager: leaving it with an exception aborts (no temp files, no vocab.json).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
        part_bytes: int = DEFAULT_PART_BYTES,
        row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    ):
        self.root = Path(root)
        self.row_group_rows = row_group_rows
        self.root.mkdir(parents=True, exist_ok=True)
        self.row_group_bytes = row_group_bytes
        self.part_bytes = part_bytes
        self.stats = CorpusStats()
        self._writers: dict[tuple[str, str], PartWriter] = {}

    def write(self, lang: str, split: str, row: dict[str, Any]) -> None:
        """Append one row (keys = the schema's columns) to ``lang=<lang>/split=<split>``."""
        key = (lang, split)
        if key not in self._writers:
            self._writers[key] = PartWriter(
                partition_dir(self.root, lang, split),
                row_group_bytes=self.row_group_bytes,
                part_bytes=self.part_bytes,
                row_group_rows=self.row_group_rows,
            )
        self._writers[key].write(row)
        self.stats.add(lang, split, row)

    def write_many(self, lang: str, split: str, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.write(lang, split, row)

    def close(self) -> PhoneTokenizer:
        """Finish every part, then write vocab.json built from all phones seen (all splits)."""
        for w in self._writers.values():
            w.close()
        tokenizer = PhoneTokenizer.from_phones(self.stats.phone_inventory())
        write_vocab(tokenizer, self.root)
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


def write_vocab(tokenizer: PhoneTokenizer, root: Path) -> Path:
    tmp = root / f".{VOCAB_FILE}.tmp"
    tokenizer.save(tmp)
    final = root / VOCAB_FILE
    os.replace(tmp, final)
    return final


def prepare_output(out: Path, args: dict[str, Any], *, overwrite: bool) -> dict[str, Any] | None:
    """Make ``out`` ready for a corpus job with ``args``.

    Returns the existing summary when ``out`` already holds a complete corpus made with the same ``args``
    (the job is then a no-op). A complete corpus made with other arguments raises unless ``overwrite``; an
    incomplete one (no summary.json, e.g. after a crash) is cleared. Only our own entries are removed.
    """
    existing = read_summary(out) if out.exists() else None
    if existing is not None and not overwrite:
        if existing.get("args") == args:
            return existing
        raise FileExistsError(
            f"{out} holds a corpus made with other arguments {existing.get('args')}; pass --overwrite to replace it"
        )
    if out.exists():
        for path in out.iterdir():
            if path.is_dir() and path.name.startswith("lang="):
                shutil.rmtree(path)
            elif path.name in (VOCAB_FILE, SUMMARY_FILE):
                path.unlink()
    return None
