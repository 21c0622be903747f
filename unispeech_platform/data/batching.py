"""Worker-side batching: drop-and-count bad rows, augment, crop, language sampling, length buckets, collation.

Rows are pooled (``shuffle_buffer_rows``), sorted by (jittered) length and cut greedily into batches whose
padded audio (rows x longest row) stays within ``max_batch_seconds``; the batch order is then shuffled.
Every random choice comes from (seed, epoch, row id) or (seed, epoch, pool index), never from the worker,
so a row's crop and repeat count do not depend on which rank received it.

Ranks get different numbers of batches (bucketing equalises seconds, not rows; docs/architecture.md#ray-train-ray-data-and-ray-tune): the trainer
must fix its steps per epoch or all-reduce a "done" flag. :attr:`BatchStream.stats` makes counts observable.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from unispeech_core.features import pad_batch, pad_labels
from unispeech_platform.config.data import DataConfig

from .augment import EFFECTS, augment
from .decode import DROP_REASONS, LONGER_THAN_MAX, SHORTER_THAN_MIN, row_rng
from .schema import MIN_SAMPLES, TARGET_SAMPLE_RATE

STAT_KEYS = (
    ("rows_read", "rows", "batches", "audio_seconds", "padded_seconds")
    + tuple(f"dropped/{r}" for r in DROP_REASONS)
    + tuple(f"augmented/{e}" for e in EFFECTS)
)


@dataclass
class Utterance:
    id: str
    lang: str
    wave: np.ndarray  # float32, 16 kHz mono
    labels: list[int] | None  # None = unlabeled


def make_buckets(
    lengths: Sequence[int], max_samples: int, max_size: int, keys: Sequence[float] | None = None
):
    """Greedy length buckets: indices grouped so len(group) * max(length) <= max_samples.

    ``keys`` (default: the lengths) set the order; a jittered key varies batch composition per epoch while
    the budget is always checked on the true lengths.
    """
    order = sorted(range(len(lengths)), key=lambda i: (keys[i] if keys is not None else lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for i in order:
        new_max = max(cur_max, lengths[i])
        if cur and (len(cur) + 1 > max_size or new_max * (len(cur) + 1) > max_samples):
            batches.append(cur)
            cur, new_max = [], lengths[i]
        cur.append(i)
        cur_max = new_max
    if cur:
        batches.append(cur)
    return batches


def _binary_views(column: pa.ChunkedArray) -> list[np.ndarray]:
    """Zero-copy uint8 views of each value of a binary column (the decoded waves stay in Arrow memory)."""
    arr = column.combine_chunks()
    width = np.int64 if pa.types.is_large_binary(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], dtype=width)[arr.offset : arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    values = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    return [values[offsets[i] : offsets[i + 1]] for i in range(len(arr))]


@contextlib.contextmanager
def _one_torch_thread():
    """Collate with one intra-op thread. Per-utterance normalisation works on ~50k-sample tensors, right at
    torch's parallel grain size: on a busy 2-core machine OpenMP's barrier made it ~75x slower (22 ms vs
    0.3 ms per utterance). The caller's setting is restored, so the model keeps its threads."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def collate(items: Sequence[Utterance]) -> dict[str, Any]:
    """The batch dict the trainer consumes (see ``pipeline`` module docstring for the keys)."""
    with _one_torch_thread():
        return _collate(items)


def _collate(items: Sequence[Utterance]) -> dict[str, Any]:
    # copy: the waves are read-only views into Arrow buffers; per-utterance normalisation, zero padding, mask
    batch = pad_batch([torch.from_numpy(u.wave.copy()) for u in items])
    batch["labels"] = pad_labels([u.labels or [] for u in items])  # unlabeled rows: all -100
    batch["labeled"] = torch.tensor([u.labels is not None for u in items], dtype=torch.bool)
    batch["lang"] = [u.lang for u in items]
    batch["id"] = [u.id for u in items]
    return batch


class BatchStream:
    """One epoch of collated batches from a stream of decoded blocks (``decode.DECODED_SCHEMA`` tables)."""

    def __init__(self, blocks: Iterable[pa.Table], cfg: DataConfig, *, epoch: int, train: bool):
        self.blocks = blocks
        self.cfg = cfg
        self.epoch = epoch
        self.train = train
        self.stats: dict[str, float] = dict.fromkeys(STAT_KEYS, 0)
        """Fixed keys in a fixed order on every rank: ``torch.tensor(list(stats.values()))`` all-reduces."""
        self.recent: dict[bool, list[Utterance]] = {True: [], False: []}
        """The last pool's labeled (True) and unlabeled rows: what a pool without one kind borrows to hold
        ``data.labeled_share``."""

    @property
    def dropped(self) -> dict[str, int]:
        """Rows dropped by reason (every reason present, zeros included)."""
        return {r: int(self.stats[f"dropped/{r}"]) for r in DROP_REASONS}

    @property
    def augmented(self) -> dict[str, int]:
        """Delivered utterances each augmentation effect changed (every effect present, zeros included)."""
        return {e: int(self.stats[f"augmented/{e}"]) for e in EFFECTS}

    def _copies(self, row_id: str, rate: float) -> int:
        """How often a row is used this epoch: rate 1 -> once; 2.4 -> 2 or 3 times; 0.3 -> 0 or 1 time."""
        if not self.train or self.cfg.lang_sampling_alpha is None or rate == 1.0:
            return 1
        whole = int(rate)
        return whole + int(row_rng("sample", self.cfg.seed, self.epoch, row_id).random() < rate - whole)

    def _augment(self, u: Utterance, copy: int) -> tuple[Utterance, tuple[str, ...]]:
        """Training only, when ``data.augment.enabled``: the row's effects, drawn per (seed, epoch, id, copy)."""
        cfg = self.cfg
        if not self.train or not cfg.augment.enabled:
            return u, ()
        with _one_torch_thread():
            out = augment(u.wave, cfg.augment, seed=cfg.seed, epoch=self.epoch, row_id=u.id, copy=copy)
        return Utterance(u.id, u.lang, out.wave, u.labels), out.applied

    def _fits_limits(self, u: Utterance) -> bool:
        """The decode stage's length rules on an augmented (speed-changed, then cropped) length; a row outside
        them is dropped and counted by the same reasons, never cut against its labels."""
        seconds = len(u.wave) / TARGET_SAMPLE_RATE
        if seconds > self.cfg.max_duration_s:
            reason = LONGER_THAN_MAX
        elif seconds < self.cfg.min_duration_s or len(u.wave) < MIN_SAMPLES:
            reason = SHORTER_THAN_MIN
        else:
            return True
        self.stats[f"dropped/{reason}"] += 1
        return False

    def _crop(self, u: Utterance, copy: int) -> Utterance:
        cfg = self.cfg
        if not self.train or cfg.crop_seconds is None:
            return u
        size = int(cfg.crop_seconds * TARGET_SAMPLE_RATE)
        if len(u.wave) <= size or (u.labels is not None and not cfg.crop_labeled):
            return u
        start = int(row_rng("crop", cfg.seed, self.epoch, u.id, copy).integers(0, len(u.wave) - size + 1))
        return Utterance(u.id, u.lang, u.wave[start : start + size], None)  # a crop no longer matches labels

    def _utterances(self) -> Iterator[Utterance]:
        for block in self.blocks:
            cols = block.drop_columns(["wave"]).to_pydict()
            waves = _binary_views(block.column("wave"))
            for i, row_id in enumerate(cols["id"]):
                self.stats["rows_read"] += 1
                error = cols["error"][i]
                if error is not None:
                    self.stats[f"dropped/{error}"] += 1
                    continue
                wave = waves[i].view("<f4")
                base = Utterance(row_id, cols["lang"][i], wave, cols["labels"][i])
                for copy in range(self._copies(row_id, cols["rate"][i])):
                    augmented, applied = self._augment(base, copy)
                    u = self._crop(augmented, copy)
                    if "speed" in applied and not self._fits_limits(u):
                        continue
                    for effect in applied:
                        self.stats[f"augmented/{effect}"] += 1
                    yield u

    def _batches_of(self, pool: list[Utterance], pool_index: int) -> Iterator[dict[str, Any]]:
        cfg = self.cfg
        rng = row_rng("pool", cfg.seed, self.epoch, pool_index)
        keys = None
        if self.train:  # ~±10 % jitter: batches still tight, but not the same neighbours every epoch
            keys = [
                len(u.wave) * float(np.exp(j)) for u, j in zip(pool, rng.uniform(-0.1, 0.1, len(pool)), strict=True)
            ]
            if cfg.labeled_share is not None:
                pool = self._hold_labeled_share(pool, keys, cfg.labeled_share)
                keys = [float(i) for i in range(len(pool))]  # that order is the bucketing order
        lengths = [len(u.wave) for u in pool]
        buckets = make_buckets(
            lengths, int(cfg.max_batch_seconds * TARGET_SAMPLE_RATE), cfg.max_batch_size, keys
        )
        if self.train:
            buckets = [buckets[i] for i in rng.permutation(len(buckets))]
        for bucket in buckets:
            items = [pool[i] for i in bucket]
            batch = collate(items)
            self.stats["rows"] += len(items)
            self.stats["batches"] += 1
            self.stats["audio_seconds"] += sum(len(u.wave) for u in items) / TARGET_SAMPLE_RATE
            self.stats["padded_seconds"] += batch["input_values"].numel() / TARGET_SAMPLE_RATE
            yield batch

    def _hold_labeled_share(self, pool: list[Utterance], keys: list[float], share: float) -> list[Utterance]:
        """The pool's rows reordered so that every run of consecutive rows holds ``share`` labeled rows within
        one row (labeled row k of a prefix of n rows is placed where round(share·n) reaches k): the plentiful
        kind is used once, the scarce kind cycled in length order (rows reused within the pool), and a pool with
        none of one kind borrows the previous pool's. Each kind stays sorted by its jittered length, so length
        buckets cut from this order stay tight when both kinds have similar lengths."""
        kinds = {flag: sorted((i for i, u in enumerate(pool) if (u.labels is not None) == flag), key=lambda i: keys[i])
                 for flag in (True, False)}
        rows = {flag: [pool[i] for i in idx] for flag, idx in kinds.items()}
        for flag in (True, False):
            rows[flag] = rows[flag] or list(self.recent[flag])
            if pool and any((u.labels is not None) == flag for u in pool):
                self.recent[flag] = [pool[i] for i in kinds[flag]]
        labeled, unlabeled = rows[True], rows[False]
        if not labeled or not unlabeled:
            return [pool[i] for i in sorted(range(len(pool)), key=lambda i: keys[i])]
        total = max(math.ceil(len(labeled) / share), math.ceil(len(unlabeled) / (1 - share)))
        out: list[Utterance] = []
        taken = 0  # labeled rows placed so far
        for n in range(1, total + 1):
            want = math.floor(share * n + 0.5)  # labeled rows in the first n
            if taken < want:
                out.append(labeled[taken % len(labeled)])
                taken += 1
            else:
                out.append(unlabeled[(n - 1 - taken) % len(unlabeled)])
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        pool: list[Utterance] = []
        pool_index = 0
        for u in self._utterances():
            pool.append(u)
            if len(pool) >= self.cfg.shuffle_buffer_rows:
                yield from self._batches_of(pool, pool_index)
                pool, pool_index = [], pool_index + 1
        if pool:
            yield from self._batches_of(pool, pool_index)
