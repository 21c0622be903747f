"""The Ray reader of a corpus: its parts cut into pieces of consecutive row groups, read in an order that every
training epoch draws anew (seeded by ``data.seed`` and the epoch; every part spread evenly over the epoch) and
evaluation keeps (part order).

Why: rows are mixed only inside a worker's pool (``data.shuffle_buffer_rows``); read part by part, a shard larger
than the pool was trained one language, or only unlabeled rows, for as long as a part lasted, which broke a
UniSpeech run (docs/data.md#batch-order-follows-the-corpus-parts-beyond-the-pool). Read in shuffled pieces of
``data.read_piece_rows`` rows, every pool holds pieces of many parts.

Written by hand because no library reads this way: ``ray.data.read_parquet``'s file shuffle
(``FileShuffleConfig``) permutes whole files, and a row-group fragment loses its row groups when Ray pickles it
into a read task (ray 2.60 ``_ParquetFragment.__reduce__``), so it would read the whole file. This is a plain
``ray.data.Datasource``; pyarrow reads the row groups (``decode.read_row_groups``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from .decode import READ_COLUMNS, read_row_groups
from .schema import READ_SCHEMA, PartFile

PIECE_SCHEMA = pa.schema([READ_SCHEMA.field(c) for c in READ_COLUMNS])
"""What every piece reads as (the ``lang`` partition column last), whatever its part's own schema."""


@dataclass(frozen=True)
class Piece:
    """Consecutive row groups of one part: the unit whose order an epoch shuffles."""

    part: PartFile
    row_groups: tuple[int, ...]
    rows: int
    bytes: int  # uncompressed, from the footer: Ray's estimate of the block size


def plan_pieces(parts: list[PartFile], max_rows: int) -> list[Piece]:
    """Each part's row groups, joined while a piece stays within ``max_rows`` rows, from the footers (no data
    read). A row group larger than ``max_rows`` is a piece of its own: a piece is never less than a row group."""
    pieces: list[Piece] = []
    for part in parts:
        meta = part.open().metadata
        groups: list[int] = []
        rows = size = 0
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            if groups and rows + group.num_rows > max_rows:
                pieces.append(Piece(part, tuple(groups), rows, size))
                groups, rows, size = [], 0, 0
            groups.append(g)
            rows += group.num_rows
            size += group.total_byte_size
        if groups:
            pieces.append(Piece(part, tuple(groups), rows, size))
    return pieces


def piece_order(groups: list[int], seed: int | None, epoch: int) -> list[int]:
    """The order pieces are read in (indices into ``groups``, which names each piece's part): as planned (part
    order) when ``seed`` is None, else drawn from (seed, epoch), so every epoch differs and a seed repeats.

    Drawn as a proportional interleave, not a plain permutation: a permutation of a few dozen pieces has long
    runs of one kind (measured: the last 10 of 36 pieces unlabeled, 80 batches without a labeled row), while
    here each part's pieces, in a shuffled order, are spread evenly over the epoch: piece i of a part with n
    lands at a random point of [i/n, (i+1)/n), so any stretch of the epoch holds every part in proportion."""
    if seed is None:
        return list(range(len(groups)))
    rng = np.random.default_rng([seed, epoch])
    keys, parts = np.empty(len(groups)), np.asarray(groups)
    for part in np.unique(parts):
        members = np.flatnonzero(parts == part)
        slots = (np.arange(len(members)) + rng.random(len(members))) / len(members)
        keys[rng.permutation(members)] = slots
    return np.argsort(keys, kind="stable").tolist()


def part_groups(pieces: list[Piece]) -> list[int]:
    """Each piece's part, as an index (the ``groups`` of ``piece_order``)."""
    index: dict[str, int] = {}
    return [index.setdefault(str(p.part.path), len(index)) for p in pieces]


def _read(pieces: list[Piece], labeled_only: bool) -> Iterator[pa.Table]:
    for piece in pieces:
        yield read_row_groups(piece.part, list(piece.row_groups), labeled_only=labeled_only)


class PieceDatasource(Datasource):
    """The pieces of a corpus split as a Ray Data source: ``ray.data.read_datasource(PieceDatasource(...))``.

    ``seed`` None reads in part order (evaluation); an int shuffles the order on every execution of the
    dataset, that is every epoch (Ray counts executions in ``DataContext._execution_idx``, the counter its own
    file shuffle reseeds from). A resumed worker group starts that count at the epoch it resumes in
    (``pipeline.ExactlyOnceDataConfig``'s ``start_epoch``), so the resumed epoch is read in its original order.
    """

    def __init__(self, pieces: list[Piece], *, labeled_only: bool, seed: int | None):
        super().__init__()
        self.pieces, self.labeled_only, self.seed = pieces, labeled_only, seed
        self.groups = part_groups(pieces)

    def estimate_inmemory_data_size(self) -> int:
        return sum(p.bytes for p in self.pieces)

    @property
    def supports_distributed_reads(self) -> bool:
        """Local files are read on the driver's node only (as Ray's Parquet reader does); object stores anywhere."""
        return not all(isinstance(p.part.fs, pafs.LocalFileSystem) for p in self.pieces)

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[ReadTask]:
        """At most ``parallelism`` tasks, each reading a consecutive run of this execution's piece order."""
        epoch = getattr(data_context, "_execution_idx", 0) if data_context is not None else 0
        ordered = [self.pieces[i] for i in piece_order(self.groups, self.seed, epoch)]
        tasks = []
        for chunk in np.array_split(np.arange(len(ordered)), max(1, min(parallelism, len(ordered)))):
            pieces = [ordered[i] for i in chunk]
            meta = BlockMetadata(
                num_rows=None if self.labeled_only else sum(p.rows for p in pieces),
                size_bytes=int(sum(p.bytes for p in pieces)),
                input_files=[str(p.part.path) for p in pieces],
                exec_stats=None,
            )
            tasks.append(ReadTask(lambda pieces=pieces, labeled=self.labeled_only: _read(pieces, labeled), meta,
                                  schema=PIECE_SCHEMA, per_task_row_limit=per_task_row_limit))
        return tasks
