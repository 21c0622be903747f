"""The data path of training and evaluation: Parquet -> Ray Data (project, filter, decode) -> worker batches.

Driver::

    ds = build_dataset(cfg.data, cfg.data.train_splits, shuffle=True)
    TorchTrainer(loop, datasets={"train": ds}, dataset_config=exactly_once_data_config(start_epoch=...), ...)

Worker (inside the train loop)::

    stream = iter_batches(ray.train.get_dataset_shard("train"), cfg.data, epoch=epoch, train=True)
    for batch in stream: ...
    stream.stats  # fixed keys on every rank: rows, batches, audio_seconds, dropped/<reason>...

Local, no Ray (evaluation, tests): ``iter_local_batches(cfg.data, "dev")``.

Each batch is a dict: ``input_values`` [B, T] float32 (per-utterance normalised, zero padded),
``attention_mask`` [B, T] long, ``labels`` [B, L] long (phone ids, -100 padded; all -100 for unlabeled rows),
``labeled`` [B] bool, ``lang`` list[str], ``id`` list[str]. Batches hold at most ``max_batch_size`` rows
and ``max_batch_seconds`` of padded audio. Bad rows are dropped and counted by reason, never raised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import ray
import ray.data
import ray.train

from unispeech_platform.config.data import DataConfig

from .batching import BatchStream
from .decode import DecodeOptions, decode_table, language_rates, read_columns, read_part_batches, vocab_from
from .schema import PartFile, scan_corpus, select_parts


def _parts_and_options(cfg: DataConfig, split: str | Sequence[str]) -> tuple[list[PartFile], DecodeOptions]:
    """Partition filter (lang=, split= directories) plus what every decode task needs; fails fast on layout."""
    splits = [split] if isinstance(split, str) else list(split)
    parts = select_parts(scan_corpus(cfg.path), cfg.langs, splits)
    rates = None
    if cfg.lang_sampling_alpha is not None:
        rates = language_rates(parts, cfg.lang_sampling_alpha, labeled_only=cfg.labeled_only)
    opts = DecodeOptions(
        vocab=vocab_from(cfg.resolved_vocab_path()),
        min_duration_s=cfg.min_duration_s,
        max_duration_s=cfg.max_duration_s,
        rates=rates,
    )
    return parts, opts


SHARDING_KEY = "unispeech.sharding"  # DataContext config key: a ShardingHint (survives pickling, unlike attributes)
BLOCKS_PER_SHARD = 4  # on small corpora: enough blocks that every shard gets several and shards differ by little


@dataclass(frozen=True)
class ShardingHint:
    """What ``ExactlyOnceDataConfig`` needs to cut a dataset into blocks that no shard starves on."""

    rows: int  # rows one epoch yields (bad rows included: they are dropped per rank, after the split)
    max_block_rows: int  # rows per decode call: blocks are never cut larger than this when split

    def block_rows(self, shards: int) -> int:
        """Rows per block so that ``shards`` consumers each get at least one block of an epoch.

        ``streaming_split`` hands whole blocks to the consumer with the fewest rows so far, so with at least
        ``shards`` non-empty blocks every consumer gets one; blocks of at most ``rows // shards`` rows
        guarantee that many. Small corpora get ~``BLOCKS_PER_SHARD`` blocks per shard (rows stay balanced);
        large ones blocks of ``max_block_rows`` (one decode call's output, no extra tasks).
        """
        return max(1, min(self.max_block_rows, self.rows // (BLOCKS_PER_SHARD * max(shards, 1))))


def labeled_rows(part: PartFile) -> int:
    """Rows with phones, from the Parquet footer's null counts (no data read); the column if stats are missing."""
    pf = part.open()
    meta = pf.metadata
    column = meta.schema.to_arrow_schema().get_field_index("phones")
    nulls = 0
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(column).statistics
        if stats is None or not stats.has_null_count:
            return len(read_columns(part, ["phones"]).column(0).drop_null())
        nulls += stats.null_count
    return meta.num_rows - nulls


def part_rows(part: PartFile) -> int:
    """All rows of a part, labeled or not: from the corpus scan, or its footer when the scan did not read it."""
    return part.num_rows if part.num_rows >= 0 else part.open().metadata.num_rows


def epoch_rows(parts: list[PartFile], *, labeled_only: bool) -> int:
    """Rows one epoch of these parts yields (after the ``labeled_only`` filter), from Parquet metadata."""
    if labeled_only:
        return sum(labeled_rows(p) for p in parts)
    return sum(part_rows(p) for p in parts)


def build_dataset(cfg: DataConfig, split: str | Sequence[str], *, shuffle: bool = False) -> ray.data.Dataset:
    """A lazy Ray Dataset of decoded rows (``decode.DECODED_SCHEMA``) for the given split name(s).

    Only the chosen partitions' files are read, only the needed columns, and ``labeled_only`` is applied as
    each piece is read. ``shuffle`` (training) reads the parts' pieces of ``read_piece_rows`` rows in an order
    drawn from ``cfg.seed`` and the epoch (data/pieces.py), so a worker's pool mixes every part; without it
    (evaluation) pieces come in part order. Decoding (soundfile), downmix and resampling (torchaudio) run in
    Ray Data tasks. The dataset carries a ``ShardingHint`` (rows per epoch) for ``ExactlyOnceDataConfig``.
    """
    from .pieces import PieceDatasource, plan_pieces

    parts, opts = _parts_and_options(cfg, split)
    pieces = plan_pieces(parts, cfg.read_piece_rows)
    source = PieceDatasource(pieces, labeled_only=cfg.labeled_only, seed=cfg.seed if shuffle else None)
    # One read task per part by default: Ray's own default splits a few parts into many small blocks (2x the
    # logical CPUs), which on small machines costs more in per-block overhead than it gains in parallelism.
    ds = ray.data.read_datasource(source, override_num_blocks=cfg.read_parallelism or len(parts))
    ds = ds.map_batches(
        decode_table,
        fn_kwargs={"opts": opts},
        batch_format="pyarrow",
        batch_size=cfg.decode_batch_rows,
        zero_copy_batch=True,
        concurrency=cfg.decode_concurrency,
    )
    ds.context.execution_options.preserve_order = cfg.preserve_order
    hint = ShardingHint(epoch_rows(parts, labeled_only=cfg.labeled_only), cfg.decode_batch_rows)
    ds.context.set_config(SHARDING_KEY, hint)
    return ds


def iter_batches(source: Any, cfg: DataConfig, *, epoch: int, train: bool) -> BatchStream:
    """One epoch of batches from a Ray Dataset or a worker's ``DataIterator`` shard (from build_dataset).

    ``train`` turns on the shuffled batch order, cropping and language sampling; evaluation gets every row
    once in length-sorted batches. The returned stream is iterable and exposes ``.stats`` / ``.dropped``.
    """
    blocks: Iterable = source.iter_batches(
        batch_size=None, batch_format="pyarrow", prefetch_batches=cfg.prefetch_batches
    )
    return BatchStream(blocks, cfg, epoch=epoch, train=train)


def iter_local_batches(
    cfg: DataConfig, split: str | Sequence[str], *, epoch: int = 0, train: bool = False
) -> BatchStream:
    """The same batches without Ray: files read and decoded in this process, in file order."""
    parts, opts = _parts_and_options(cfg, split)
    blocks = (
        decode_table(table, opts)
        for part in parts
        for table in read_part_batches(part, labeled_only=cfg.labeled_only, batch_rows=cfg.decode_batch_rows)
    )
    return BatchStream(blocks, cfg, epoch=epoch, train=train)


def cut_for_shards(ds: ray.data.Dataset, shards: int) -> ray.data.Dataset:
    """``ds`` with blocks small enough that each of ``shards`` consumers of a ``streaming_split`` gets rows.

    Why: a decode task's output is merged into blocks of up to ``target_max_block_size`` (128 MiB: thousands
    of utterances), so a corpus of few Parquet parts is a few blocks, and ``streaming_split`` hands out whole
    blocks: with fewer blocks than workers some worker's shard is empty every epoch. A streaming repartition
    to ``ShardingHint.block_rows`` rows per block fixes that; Ray fuses it into the decode task (no extra
    task, no barrier), so block order and ``preserve_order`` are unchanged. Datasets without a hint (not from
    ``build_dataset``) are returned as they are.
    """
    hint = ds.context.get_config(SHARDING_KEY)
    if not isinstance(hint, ShardingHint) or shards <= 1:
        return ds
    return ds.repartition(target_num_rows_per_block=hint.block_rows(shards))


class ExactlyOnceDataConfig(ray.train.DataConfig):
    """Ray Train's dataset sharding, but every row reaches exactly one worker and every worker gets rows.

    The stock ``ray.train.DataConfig`` (ray 2.60) splits with ``streaming_split(equal=True)``, which may drop
    rows so that ranks get equal row counts; we split with ``equal=False``: Ray hands each block to the rank
    with the fewest rows so far, so ranks differ by a block at most (the trainer already handles unequal
    batch counts). Blocks are first cut to ``ShardingHint.block_rows`` rows (``cut_for_shards``) so that a
    corpus with at least as many rows as workers gives every worker rows in every epoch. It also keeps the
    dataset's ``preserve_order``, which Ray Train would otherwise reset to the driver's default.
    """

    def __init__(self, *, start_epoch: Callable[[], int] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self._start_epoch = start_epoch

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        output: list[dict[str, Any]] = [{} for _ in range(world_size)]
        # Ray counts a dataset's executions (one per epoch) and a shuffled read draws its piece order from that
        # count (data/pieces.py): a worker group that resumes at epoch e starts counting at e, so the restored
        # epoch is read in its original order and the skipped micro-batches are the ones already trained.
        first_epoch = self._start_epoch() if self._start_epoch else 0
        to_split = set(datasets) if self._datasets_to_split == "all" else set(self._datasets_to_split)
        hints = worker_node_ids if self._enable_shard_locality else None
        for name, ds in datasets.items():
            if ds.name is None:
                ds.set_name(name)
            ds = ds.copy(ds)
            preserve = ds.context.execution_options.preserve_order
            ds.context.execution_options = self._resolve_execution_options(name)
            ds.context.execution_options.preserve_order |= preserve
            if name in to_split:
                ds = cut_for_shards(ds, world_size)
                ds.context._execution_idx = first_epoch
                for i, shard in enumerate(ds.streaming_split(world_size, equal=False, locality_hints=hints)):
                    output[i][name] = shard
            else:
                for i in range(world_size):
                    output[i][name] = ds.iterator()
        return output


def exactly_once_data_config(*, start_epoch: Callable[[], int] | None = None, **kwargs: Any) -> ExactlyOnceDataConfig:
    """``TorchTrainer(dataset_config=...)`` for our datasets; kwargs as ``ray.train.DataConfig``. ``start_epoch``
    (asked each time a worker group starts) is the epoch training resumes in: the training job's
    ``resumed_epoch`` of its latest checkpoint."""
    return ExactlyOnceDataConfig(start_epoch=start_epoch, **kwargs)
