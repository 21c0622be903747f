"""Worker-side batch feed that keeps all ranks in lockstep.

Length-bucketed batches give ranks different batch counts per epoch. Before every micro-batch the ranks
all-reduce "I still have one": when any rank runs dry, every rank ends the epoch together, so collectives
and `ray.train.report` calls stay matched. The epoch and the number of micro-batches consumed in it are part of
the checkpointed state; a restore re-opens that epoch and skips what was already consumed.

An epoch in which some rank has no batch at all (every row of its shard dropped or sampled away; the sharding
itself gives every rank rows, `data/pipeline.py`) is skipped by every rank with a warning; after
`MAX_STARVED_EPOCHS` such epochs in a row the feed raises, naming the epochs, instead of looping.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger("unispeech.train")
MAX_STARVED_EPOCHS = 3  # consecutive epochs with no batch on some rank before the feed gives up
COUNTERS = ("dropped", "augmented")  # the stream's per-epoch counts (BatchStream) the feed totals over epochs


class LockstepBatches:
    def __init__(
        self,
        open_epoch: Callable[[int], Iterator[dict[str, Any]]],
        *,
        epoch: int = 0,
        skip: int = 0,
        device: torch.device | None = None,
    ):
        self.open_epoch = open_epoch
        self.epoch = epoch
        self.position = 0  # micro-batches handed out in this epoch
        self.device = device or torch.device("cpu")
        self.wait_s = 0.0  # time spent waiting for data (for the data-wait fraction)
        self.last: dict[str, Any] | None = None
        """The micro-batch handed out last."""
        self.audio_s = 0.0  # seconds of audio handed out
        self._before: dict[str, Counter[str]] = {c: Counter() for c in COUNTERS}  # finished epochs (this process)
        self._open(self.epoch)
        for _ in range(skip):
            if self._next_local() is None:
                break
            self.position += 1
        # Rows counted while re-reading the skipped batches were counted before the restore (train_state.json).
        self._replayed = {c: self._stream_counts(c) if skip else Counter() for c in COUNTERS}

    def _open(self, epoch: int) -> None:
        self._stream = self.open_epoch(epoch)
        self._it = iter(self._stream)

    def _stream_counts(self, counter: str) -> Counter[str]:
        return Counter(getattr(self._stream, counter, None) or {})

    def _counts(self, counter: str) -> Counter[str]:
        return self._before[counter] + (self._stream_counts(counter) - self._replayed[counter])

    @property
    def dropped(self) -> Counter[str]:
        """Rows the data pipeline dropped on this rank since this feed started, by reason (the stream exposes
        `.dropped`); after a restore, the rows of the re-read (skipped) batches are not counted again."""
        return self._counts("dropped")

    @property
    def augmented(self) -> Counter[str]:
        """Rows the data pipeline augmented on this rank since this feed started, by effect (the stream's
        `.augmented`, docs/data.md#augmentation); counted like `dropped`."""
        return self._counts("augmented")

    def _next_local(self) -> dict[str, Any] | None:
        try:
            return next(self._it)
        except StopIteration:
            return None

    def _ranks(self, have: bool, fresh: bool) -> tuple[int, int, int]:
        """(ranks with a batch, ranks at the start of their epoch, world size), the same on every rank."""
        if not (dist.is_available() and dist.is_initialized()):
            return int(have), int(fresh), 1
        flags = torch.tensor([int(have), int(fresh)], dtype=torch.int32, device=self.device)
        dist.all_reduce(flags, op=dist.ReduceOp.SUM)
        return int(flags[0].item()), int(flags[1].item()), dist.get_world_size()

    def _all_have(self, have: bool) -> bool:
        with_batch, _, world = self._ranks(have, False)
        return with_batch == world

    def next(self) -> dict[str, Any]:
        start = time.perf_counter()
        starved: list[int] = []  # consecutive epochs in which some rank had no batch at all
        while True:
            batch = self._next_local()
            with_batch, fresh, world = self._ranks(batch is not None, self.position == 0)
            if with_batch == world:
                break
            if fresh == world:  # no rank has handed out a batch of this epoch: it is starved, not finished
                starved.append(self.epoch)
                self._warn_starved(world - with_batch, world)
                if len(starved) >= MAX_STARVED_EPOCHS:
                    raise RuntimeError(
                        f"no batch on {world - with_batch} of {world} rank(s) in epochs {starved[0]}-{starved[-1]}: "
                        f"the split has too few usable rows for {world} worker(s) (every rank needs a batch per "
                        "epoch; see bad_rows/* and data.min_duration_s/max_duration_s/lang_sampling_alpha)"
                    )
            self._before = {c: self._counts(c) for c in COUNTERS}
            self._replayed = {c: Counter() for c in COUNTERS}
            self.epoch += 1
            self.position = 0
            self._open(self.epoch)
        self.position += 1
        self.wait_s += time.perf_counter() - start
        mask = batch.get("attention_mask")
        if mask is not None:
            self.audio_s += float(mask.sum()) / 16_000
        self.last = batch  # the batch shape perf/step_efficiency's bare step is timed on (train/step_efficiency.py)
        return batch

    def _warn_starved(self, without: int, world: int) -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return  # the same decision on every rank: say it once
        if without == world:
            log.warning("epoch %d yielded no batch on any rank (every row dropped or sampled away?): "
                        "skipping to epoch %d", self.epoch, self.epoch + 1)
        else:
            log.warning("epoch %d: %d of %d rank(s) got no batch (their rows were dropped or sampled away): "
                        "every rank skips to epoch %d", self.epoch, without, world, self.epoch + 1)


def lockstep(it: Iterator[dict[str, Any]], device: torch.device | None = None) -> Iterator[dict[str, Any]]:
    """One pass over `it` that stops on every rank as soon as any rank runs dry (e.g. dev evaluation, whose
    forward passes are collective under ZeRO-3)."""
    feed = LockstepBatches(lambda _epoch: it, device=device)
    while True:
        batch = feed._next_local()
        if not feed._all_have(batch is not None):
            return
        yield batch
