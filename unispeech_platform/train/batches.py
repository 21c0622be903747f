"""Worker-side batch feed that keeps all ranks in lockstep.

Length-bucketed batches give ranks different batch counts per epoch. Before every micro-batch the ranks
all-reduce "I still have one" (MIN): when any rank runs dry, every rank ends the epoch together, so collectives
and `ray.train.report` calls stay matched. The epoch and the number of micro-batches consumed in it are part of
the checkpointed state; a restore re-opens that epoch and skips what was already consumed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist


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
        self.audio_s = 0.0  # seconds of audio handed out
        self._dropped_before: Counter[str] = Counter()  # bad rows of finished epochs (this process)
        self._open(self.epoch)
        for _ in range(skip):
            if self._next_local() is None:
                break
            self.position += 1
        # Rows dropped while re-reading the skipped batches were counted before the restore (train_state.json).
        self._replayed: Counter[str] = self._stream_dropped() if skip else Counter()

    def _open(self, epoch: int) -> None:
        self._stream = self.open_epoch(epoch)
        self._it = iter(self._stream)

    def _stream_dropped(self) -> Counter[str]:
        return Counter(getattr(self._stream, "dropped", None) or {})

    @property
    def dropped(self) -> Counter[str]:
        """Rows the data pipeline dropped on this rank since this feed started, by reason (the stream exposes
        `.dropped`); after a restore, the rows of the re-read (skipped) batches are not counted again."""
        return self._dropped_before + (self._stream_dropped() - self._replayed)

    def _next_local(self) -> dict[str, Any] | None:
        try:
            return next(self._it)
        except StopIteration:
            return None

    def _all_have(self, have: bool) -> bool:
        if not (dist.is_available() and dist.is_initialized()):
            return have
        flag = torch.tensor([1 if have else 0], dtype=torch.int32, device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def next(self) -> dict[str, Any]:
        start = time.perf_counter()
        for attempt in range(2):
            batch = self._next_local()
            if self._all_have(batch is not None):
                break
            if attempt == 1:
                raise RuntimeError(f"a rank's data shard is empty at the start of epoch {self.epoch}")
            self._dropped_before = self.dropped
            self._replayed = Counter()
            self.epoch += 1
            self.position = 0
            self._open(self.epoch)
        self.position += 1
        self.wait_s += time.perf_counter() - start
        mask = batch.get("attention_mask")
        if mask is not None:
            self.audio_s += float(mask.sum()) / 16_000
        return batch



def lockstep(it: Iterator[dict[str, Any]], device: torch.device | None = None) -> Iterator[dict[str, Any]]:
    """One pass over `it` that stops on every rank as soon as any rank runs dry (e.g. dev evaluation, whose
    forward passes are collective under ZeRO-3)."""
    feed = LockstepBatches(lambda _epoch: it, device=device)
    while True:
        batch = feed._next_local()
        if not feed._all_have(batch is not None):
            return
        yield batch
