"""A Parquet file read one row group at a time, so that a corrupt page (a page header that does not parse, a
compressed block that does not inflate, values that do not decode) costs the rows of its row group, never the
file's other rows or the job (issue 30).

Why row groups: a Parquet footer lists every row group with its row count and byte ranges, so pyarrow reads one
group without touching the others (``ParquetFile.read_row_group``, a dataset fragment's ``subset``); a page's
damage cannot spread past its group, and its rows are known by number from the footer even when none of its pages
can be read. A group is read whole or not at all (no rows of a half-read group are kept): simple to reason about,
and the same unit for the validator, the importer and training.

What each reader does with an unreadable group: the validator and the importer fail its rows with the file and the
group and go on (their report names it); training and evaluation stop with one line naming them
(:class:`UnreadableRowGroup`), since a model trained or scored on part of the corpus it was given is not the
experiment that was asked for (docs/data.md#unreadable-row-groups).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from .schema import CorpusError

UNREADABLE_ROW_GROUP = "unreadable_row_group"
"""The reason code of the rows of an unreadable row group (validation and import reports)."""
CAUSE_CHARS = 300


@dataclass(frozen=True)
class BadGroup:
    """A row group that could not be read: where it is, which rows it held (from the footer) and pyarrow's reason."""

    file: str
    group: int
    groups: int
    first_row: int
    rows: int
    cause: str

    def label(self) -> str:
        """What stands for the group's rows where a row id is expected (their ids may be what cannot be read)."""
        return f"<row group {self.group}: {self.rows} rows>"

    def describe(self) -> str:
        """One line naming the file, the group and its rows."""
        last = self.first_row + self.rows - 1
        return (f"{self.file}: row group {self.group} of {self.groups} (rows {self.first_row}-{last}, {self.rows} "
                f"rows) cannot be read ({self.cause})")


class UnreadableRowGroup(CorpusError):
    """Training or evaluation met a row group it cannot read: one line naming the file and the group (exit 3 when
    it reaches a job's CLI; the crash-loop line when it stops training)."""


def one_line(error: BaseException) -> str:
    """pyarrow's message as one line of at most CAUSE_CHARS characters, with its type (a message may quote the
    corrupt bytes: control characters become ``?``)."""
    text = f"{type(error).__name__}: {' '.join(str(error).split())}"
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= CAUSE_CHARS else text[: CAUSE_CHARS - 3] + "..."


def first_rows(meta: pq.FileMetaData) -> list[int]:
    """The index of each row group's first row in the file."""
    starts, total = [], 0
    for g in range(meta.num_row_groups):
        starts.append(total)
        total += meta.row_group(g).num_rows
    return starts


def read_groups(
    meta: pq.FileMetaData, file: str, read: Callable[[int], pa.Table], groups: Iterable[int] | None = None
) -> Iterator[tuple[int, pa.Table | BadGroup]]:
    """``(group, table)`` for each row group ``read`` can read, ``(group, BadGroup)`` for each it cannot, in order.
    ``read(g)`` reads group ``g`` whole (``ParquetFile.read_row_group`` or a fragment subset, with the caller's
    columns and casts); ``meta`` is the file's footer; ``file`` names it in the BadGroup."""
    starts = first_rows(meta)
    for g in range(meta.num_row_groups) if groups is None else groups:
        try:
            yield g, read(g)
        except MemoryError:  # not damage: a group larger than this machine's memory
            raise
        except Exception as e:  # pyarrow: OSError, ArrowInvalid, ArrowException... for corrupt pages
            yield g, BadGroup(file, g, meta.num_row_groups, starts[g], meta.row_group(g).num_rows, one_line(e))


def read_or_raise(meta: pq.FileMetaData, file: str, read: Callable[[int], pa.Table],
                  groups: Iterable[int] | None = None) -> Iterator[pa.Table]:
    """The row groups as ``read_groups`` reads them; the first unreadable one raises UnreadableRowGroup (training
    and evaluation: see the module docstring), pointing at the validator that lists them all."""
    for _, got in read_groups(meta, file, read, groups):
        if isinstance(got, BadGroup):
            raise UnreadableRowGroup(f"{got.describe()}; jobs.validate_data lists every unreadable row group")
        yield got
