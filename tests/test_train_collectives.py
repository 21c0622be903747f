"""The train loop's collective helpers on a real two-rank gloo group, without Ray or DeepSpeed.

`LockstepBatches`/`lockstep` (batches.py) and `all_finite`/`all_reduce_sums`/`Window` (metrics.py) keep the ranks'
collectives matched: if one rank takes a different branch (one more micro-batch, skipping a non-finite step alone,
a metric key the others lack) the job hangs or reports wrong numbers. The end-to-end tests only see that as a hang
or a slow drift, so these tests pin the exact per-rank results on two local processes in a few seconds.

Each test runs a module-level worker function on ranks 0 and 1 (`_run_two_ranks`): the processes start from a
forkserver, join a gloo group over TCP on 127.0.0.1, and hand back the worker's return value as a pickle file.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from train_helpers import free_port

from unispeech_platform.train.batches import LockstepBatches, lockstep
from unispeech_platform.train.checkpoint import TrainState
from unispeech_platform.train.metrics import Window, all_finite, all_gather_items, all_reduce_sums
from unispeech_platform.train.step import accumulate_update

WORLD = 2
# Ranks fork from a clean forkserver, never from pytest itself: by the time this module runs, earlier modules have left
# threads in the pytest process (Ray, gRPC, MLflow, OpenMP), and a fork taken while one of them holds a malloc lock
# can crash the child ("double free or corruption", SIGABRT; CI of 2026-12-02). The server imports the heavy packages
# once (spawn would re-import Ray and DeepSpeed in every rank, ~5 s each); each rank then forks from it.
FORKSERVER_PRELOAD = ["torch.distributed", "unispeech_platform.train"]
mp.get_context("forkserver").set_forkserver_preload(FORKSERVER_PRELOAD)
JOIN_TIMEOUT_S = 60.0  # generous for a loaded 2-core machine; a healthy run takes well under a few seconds
CPU = torch.device("cpu")


# --------------------------------------------------------------------------------------------------- harness



def _rank_entry(rank: int, fn: Callable[..., Any], port: int, out_dir: str, args: tuple[Any, ...]) -> None:
    torch.set_num_threads(1)  # the tensors here are tiny: a second OpenMP thread only adds waits
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=30)
    )
    try:
        result = fn(rank, *args)
        dist.barrier()  # neither rank leaves while the other may still be in a collective
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(result, f)


def _run_two_ranks(fn: Callable[..., Any], tmp_path: Path, *args: Any) -> list[Any]:
    """Run `fn(rank, *args)` on a two-process gloo group; return each rank's return value, by rank."""
    out_dir = tmp_path / f"ranks-{fn.__name__}"
    out_dir.mkdir()
    ctx = mp.start_processes(
        _rank_entry, args=(fn, free_port(), str(out_dir), args), nprocs=WORLD, join=False, start_method="forkserver"
    )
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while not ctx.join(timeout=1.0):  # raises ProcessRaisedException (with the traceback) if a rank failed
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            pytest.fail(f"{fn.__name__}: ranks did not finish within {JOIN_TIMEOUT_S:.0f}s (collectives mismatched?)")
    results = []
    for rank in range(WORLD):
        with open(out_dir / f"rank{rank}.pkl", "rb") as f:
            results.append(pickle.load(f))
    return results


# --------------------------------------------------------------------------------------------------- feeds


class _Stream:
    """One epoch of one rank's shard: batches tagged (rank, epoch, index), plus the `.dropped` counter that the
    data pipeline exposes."""

    def __init__(self, rank: int, epoch: int, n: int, samples: int = 0, dropped: dict[str, int] | None = None):
        self.rank, self.epoch, self.n, self.samples = rank, epoch, n, samples
        self.dropped = Counter(dropped or {})

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(self.n):
            batch: dict[str, Any] = {"id": (self.rank, self.epoch, i)}
            if self.samples:
                mask = torch.zeros(2, self.samples + 8, dtype=torch.long)
                mask[0, : self.samples] = 1  # row 0: `samples` real samples
                mask[1, : self.samples // 2] = 1  # row 1: half as many; the padding must not count
                batch["attention_mask"] = mask
            yield batch


def _ids(batch: dict[str, Any]) -> tuple[int, int, int]:
    return batch["id"]


def _worker_uneven_epochs(rank: int) -> dict[str, Any]:
    n = 3 if rank == 0 else 5  # rank 0 runs dry first in every epoch
    feed = LockstepBatches(lambda e: _Stream(rank, e, n, dropped={"too_long": e + 1}))
    seen = []
    for _ in range(7):
        batch = feed.next()
        seen.append((_ids(batch), feed.epoch, feed.position))
    return {"seen": seen, "dropped": dict(feed.dropped)}


def _worker_skip(rank: int) -> list[tuple[tuple[int, int, int], int, int]]:
    n = 4 if rank == 0 else 6
    feed = LockstepBatches(lambda e: _Stream(rank, e, n), epoch=1, skip=2)
    out = [(_ids(feed.next()), feed.epoch, feed.position)]
    out.append((_ids(feed.next()), feed.epoch, feed.position))  # the last of rank 0's epoch 1
    out.append((_ids(feed.next()), feed.epoch, feed.position))  # epoch 2 starts from the top, no skip
    return out


def _worker_audio(rank: int) -> list[float]:
    samples = 16_000 if rank == 0 else 32_000
    feed = LockstepBatches(lambda e: _Stream(rank, e, 2, samples=samples))
    audio = [feed.audio_s]
    for _ in range(2):
        feed.next()
        audio.append(feed.audio_s)
    return audio


def _worker_empty_next_epoch(rank: int) -> dict[str, Any]:
    # rank 0: 2 batches in epoch 0, nothing from epoch 1 on; rank 1: 3 in every epoch
    feed = LockstepBatches(lambda e: _Stream(rank, e, (2 if e == 0 else 0) if rank == 0 else 3))
    got = [_ids(feed.next()) for _ in range(2)]
    try:
        feed.next()
    except RuntimeError as err:
        return {"got": got, "error": str(err), "epoch": feed.epoch}
    return {"got": got, "error": None, "epoch": feed.epoch}


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _worker_starved_epochs(rank: int, sizes: dict[int, list[int]]) -> dict[str, Any]:
    """`sizes[rank][epoch]`: batches of that rank's shard in that epoch."""
    warnings = _Warnings()
    logging.getLogger("unispeech.train").addHandler(warnings)
    feed = LockstepBatches(lambda e: _Stream(rank, e, sizes[rank][e]))
    seen = [(_ids(feed.next()), feed.epoch, feed.position) for _ in range(3)]
    return {"seen": seen, "warnings": warnings.lines}


def _worker_lockstep(rank: int) -> list[tuple[int, int, int]]:
    return [_ids(b) for b in lockstep(iter(_Stream(rank, 0, 2 if rank == 0 else 4)), CPU)]


# --------------------------------------------------------------------------------------------------- metrics


def _worker_sums(rank: int) -> list[dict[str, float]]:
    mine = {"a": 1, "b": 2} if rank == 0 else {"a": 10, "c": 5}
    return [all_reduce_sums(mine, CPU), all_reduce_sums({}, CPU)]


def _worker_finite(rank: int) -> list[bool]:
    results = [all_finite(torch.tensor(float("nan") if rank == 0 else 1.5), CPU)]
    results.append(all_finite(torch.tensor(2.0 + rank), CPU))
    results.append(all_finite(None if rank == 1 else torch.tensor(0.5), CPU))
    results.append(all_finite(torch.tensor([1.0, float("inf")]) if rank == 1 else torch.tensor([1.0, 2.0]), CPU))
    return results


def _worker_window(rank: int) -> list[dict[str, float]]:
    w = Window(CPU)
    if rank == 0:  # two micro-batches, no "ctc" stat
        w.add_micro(torch.tensor(1.0), {"acc": torch.tensor(0.5)})
        w.add_micro(torch.tensor(3.0), {"acc": torch.tensor(0.25)})
        w.add_update(lr=1e-3, grad_norm=2.0, seconds=2.0, wait_s=0.5, audio_s=10.0, scale=4.0)
        w.add_update(lr=3e-3, grad_norm=4.0, seconds=2.0, wait_s=0.5, audio_s=20.0, scale=8.0)
    else:  # one micro-batch that also reports "ctc"
        w.add_micro(torch.tensor(5.0), {"acc": torch.tensor(0.75), "ctc": torch.tensor(6.0)})
        w.add_update(lr=1e-3, grad_norm=2.0, seconds=3.0, wait_s=1.0, audio_s=15.0, scale=4.0)
        w.add_update(lr=3e-3, grad_norm=4.0, seconds=1.0, wait_s=0.0, audio_s=15.0, scale=8.0)
    first = w.reduce(world=WORLD)
    second = w.reduce(world=WORLD)  # nothing added since: the first reduce reset the window
    return [first, second]


# --------------------------------------------------------------------------------------------------- tests


def test_lockstep_batches_end_each_epoch_together(tmp_path: Path) -> None:
    r0, r1 = _run_two_ranks(_worker_uneven_epochs, tmp_path)
    # (batch id, epoch after next(), position after next()); rank 1's 4th and 5th batches of each epoch are dropped
    assert r0["seen"] == [
        ((0, 0, 0), 0, 1), ((0, 0, 1), 0, 2), ((0, 0, 2), 0, 3),
        ((0, 1, 0), 1, 1), ((0, 1, 1), 1, 2), ((0, 1, 2), 1, 3),
        ((0, 2, 0), 2, 1),
    ]  # fmt: skip
    assert r1["seen"] == [
        ((1, 0, 0), 0, 1), ((1, 0, 1), 0, 2), ((1, 0, 2), 0, 3),
        ((1, 1, 0), 1, 1), ((1, 1, 1), 1, 2), ((1, 1, 2), 1, 3),
        ((1, 2, 0), 2, 1),
    ]  # fmt: skip
    # `.dropped` adds up the finished epochs (1 + 2) and the open one (3), per rank
    assert r0["dropped"] == r1["dropped"] == {"too_long": 6}


def test_lockstep_batches_skip_resumes_mid_epoch(tmp_path: Path) -> None:
    r0, r1 = _run_two_ranks(_worker_skip, tmp_path)
    assert r0 == [((0, 1, 2), 1, 3), ((0, 1, 3), 1, 4), ((0, 2, 0), 2, 1)]
    assert r1 == [((1, 1, 2), 1, 3), ((1, 1, 3), 1, 4), ((1, 2, 0), 2, 1)]


def test_lockstep_batches_count_unpadded_audio_seconds(tmp_path: Path) -> None:
    r0, r1 = _run_two_ranks(_worker_audio, tmp_path)
    assert r0 == [0.0, 1.5, 3.0]  # (16000 + 8000) / 16000 per batch
    assert r1 == [0.0, 3.0, 6.0]  # (32000 + 16000) / 16000 per batch


def test_lockstep_batches_empty_shard_in_new_epochs_raises_on_every_rank(tmp_path: Path) -> None:
    r0, r1 = _run_two_ranks(_worker_empty_next_epoch, tmp_path)
    error = ("no batch on 1 of 2 rank(s) in epochs 1-3: the split has too few usable rows for 2 worker(s) (every "
             "rank needs a batch per epoch; see bad_rows/* and data.min_duration_s/max_duration_s/lang_sampling_alpha)")
    assert r0 == {"got": [(0, 0, 0), (0, 0, 1)], "error": error, "epoch": 3}
    assert r1 == {"got": [(1, 0, 0), (1, 0, 1)], "error": error, "epoch": 3}


def test_an_epoch_starved_on_one_rank_is_skipped_by_every_rank_with_a_warning(tmp_path: Path) -> None:
    # the first epoch a feed opens is empty on rank 0 (it used to be skipped silently); then 2 vs 3 batches
    r0, r1 = _run_two_ranks(_worker_starved_epochs, tmp_path, {0: [0, 2, 2], 1: [3, 3, 3]})
    assert r0["seen"] == [((0, 1, 0), 1, 1), ((0, 1, 1), 1, 2), ((0, 2, 0), 2, 1)]
    assert r1["seen"] == [((1, 1, 0), 1, 1), ((1, 1, 1), 1, 2), ((1, 2, 0), 2, 1)]
    assert r0["warnings"] == ["epoch 0: 1 of 2 rank(s) got no batch (their rows were dropped or sampled away): "
                              "every rank skips to epoch 1"]
    assert r1["warnings"] == []  # said once, by rank 0


def test_an_epoch_empty_on_every_rank_is_skipped_with_a_warning(tmp_path: Path) -> None:
    r0, r1 = _run_two_ranks(_worker_starved_epochs, tmp_path, {0: [0, 0, 3], 1: [0, 0, 3]})
    assert [epoch for _, epoch, _ in r0["seen"]] == [epoch for _, epoch, _ in r1["seen"]] == [2, 2, 2]
    assert r0["warnings"] == [
        f"epoch {e} yielded no batch on any rank (every row dropped or sampled away?): skipping to epoch {e + 1}"
        for e in (0, 1)
    ]


def test_lockstep_stops_every_rank_at_the_shortest_iterator(tmp_path: Path) -> None:
    r0, r1 = _run_two_ranks(_worker_lockstep, tmp_path)
    assert r0 == [(0, 0, 0), (0, 0, 1)]
    assert r1 == [(1, 0, 0), (1, 0, 1)]


def test_all_reduce_sums_unions_keys_across_ranks(tmp_path: Path) -> None:
    r0, r1 = _run_two_ranks(_worker_sums, tmp_path)
    assert r0 == r1 == [{"a": 11.0, "b": 2.0, "c": 5.0}, {}]


def test_all_reduce_sums_without_a_group_returns_a_copy() -> None:
    assert not dist.is_initialized()
    values = {"a": 1, "b": 2.5}
    out = all_reduce_sums(values, CPU)
    assert out == {"a": 1, "b": 2.5} and out is not values
    out["a"] = 99
    assert values == {"a": 1, "b": 2.5}


def test_all_finite_is_false_everywhere_if_any_rank_is_not(tmp_path: Path) -> None:
    r0, r1 = _run_two_ranks(_worker_finite, tmp_path)
    # [NaN on rank 0, both finite, None on rank 1, inf in one element on rank 1]
    assert r0 == r1 == [False, True, False, False]


def test_window_reduce_means_over_all_ranks_and_resets(tmp_path: Path) -> None:
    r0, r1 = _run_two_ranks(_worker_window, tmp_path)
    first0, second0 = r0
    first1, second1 = r1
    expected = {
        "loss": (1.0 + 3.0 + 5.0) / 3,  # micro means: over the 3 micro-batches of both ranks
        "acc": (0.5 + 0.25 + 0.75) / 3,
        "ctc": 6.0 / 1,  # reported by one micro-batch only: the mean over those that measured it (grad_share/*)
        "lr": 2e-3,  # update means: this rank's 2 updates (identical on all ranks)
        "grad_norm": 3.0,
        "scale": 6.0,  # extra add_update keywords are averaged the same way
        "audio_seconds_per_s": 60.0 / 4.0,  # total audio (30 + 30) / mean wall per rank ((4 + 4) / 2)
        "data_wait_fraction": 2.0 / 8.0,  # total wait / total wall, over ranks
        "seconds_per_update": 4.0 / 2,  # mean wall per rank / updates
    }
    expected["perf/audio_seconds_per_s_per_worker"] = expected["audio_seconds_per_s"] / WORLD

    def untimed(metrics: dict[str, float]) -> dict[str, float]:  # the phase shares are real clock readings
        return {k: v for k, v in metrics.items() if not k.startswith("time_share/")}

    assert untimed(first0).keys() == untimed(first1).keys() == expected.keys()
    for key, value in expected.items():
        assert first0[key] == pytest.approx(value, rel=1e-12, abs=0.0), key
        assert first1[key] == pytest.approx(value, rel=1e-12, abs=0.0), key
    assert not any(math.isnan(v) for v in first0.values())
    # after the reset: no micro or update keys, throughput zeros (no division by zero)
    empty = {"audio_seconds_per_s": 0.0, "data_wait_fraction": 0.0, "seconds_per_update": 0.0,
             "perf/audio_seconds_per_s_per_worker": 0.0}
    assert untimed(second0) == untimed(second1) == empty


def _worker_gather(rank: int) -> list[Any]:
    return all_gather_items([("a", 0)] if rank == 0 else [("b", 1), ("c", 1)])


def test_all_gather_items_concatenates_in_rank_order(tmp_path: Path) -> None:
    r0, r1 = _run_two_ranks(_worker_gather, tmp_path)
    assert r0 == r1 == [("a", 0), ("b", 1), ("c", 1)]
    assert all_gather_items(["solo"]) == ["solo"]  # no group: the items themselves


# ------------------------------------------------------------------------------------ the non-finite skip

LR = 0.1
POISONED = (1, 2)  # (rank, micro-batch position): rank 1's loss of the 2nd micro-batch is NaN


class _ScalarTask:
    """loss = (w·x − y)² of the batch's (x, y); NaN on one rank's one micro-batch."""

    def __init__(self, rank: int):
        self.rank = rank

    def forward(self, engine: _SGDEngine, batch: dict[str, Any], device: torch.device):
        x, y = batch["xy"]
        loss = (engine.module.w * x - y) ** 2
        if (self.rank, batch["id"][2] + 1) == POISONED:
            loss = loss * float("nan")
        return loss, {}


class _SGDEngine:
    """The two calls the loop makes of DeepSpeed: backward and step (plain SGD here)."""

    def __init__(self) -> None:
        self.module = torch.nn.Module()
        self.module.w = torch.nn.Parameter(torch.tensor(1.0))
        self.steps = 0

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> None:
        with torch.no_grad():
            self.module.w -= LR * self.module.w.grad
        self.module.w.grad = None
        self.steps += 1


def _xy(rank: int, i: int) -> tuple[float, float]:
    return (1.0 + i + rank, 2.0 * (i + 1))


class _XYStream(_Stream):
    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in super().__iter__():
            yield {**batch, "xy": _xy(self.rank, batch["id"][2])}


def _worker_nonfinite(rank: int) -> dict[str, Any]:
    engine, state = _SGDEngine(), TrainState()
    feed = LockstepBatches(lambda epoch: _XYStream(rank, epoch, 10), device=CPU)
    window = Window(CPU)
    accumulate_update(_ScalarTask(rank), engine, feed, state, window, 2, CPU)
    return {"w": float(engine.module.w), "steps": engine.steps, "skipped": state.nonfinite_skipped,
            "position": feed.position, "micro": window.micro_n}


def _sgd_reference(rank: int, positions: list[int]) -> float:
    w = 1.0
    for i in positions:
        x, y = _xy(rank, i)
        w -= LR * 2 * (w * x - y) * x
    return w


def test_a_nonfinite_loss_on_one_rank_is_skipped_by_every_rank(tmp_path: Path) -> None:
    r0, r1 = _run_two_ranks(_worker_nonfinite, tmp_path)
    for rank, r in enumerate((r0, r1)):
        # 3 micro-batches read, the poisoned 2nd skipped on both ranks: 2 backward/steps, counter 1
        assert (r["position"], r["steps"], r["skipped"], r["micro"]) == (3, 2, 1, 2), rank
        # the weights moved on micro-batches 1 and 3 only: the skipped one left no trace, not even on rank 0
        assert r["w"] == pytest.approx(_sgd_reference(rank, [0, 2]), rel=1e-6), rank
        assert r["w"] != pytest.approx(_sgd_reference(rank, [0, 1]), rel=1e-6), rank


DATA_SLEEP_S, FORWARD_SLEEP_S = 0.03, 0.01


class _SlowXYStream(_XYStream):
    """Every batch takes DATA_SLEEP_S to arrive: a slow decoder or store."""

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in super().__iter__():
            time.sleep(DATA_SLEEP_S)
            yield batch


class _SlowOnRank1Task(_ScalarTask):
    """Rank 1's forward pass takes FORWARD_SLEEP_S longer: the straggler the others wait for."""

    def forward(self, engine: _SGDEngine, batch: dict[str, Any], device: torch.device):
        if self.rank == 1:
            time.sleep(FORWARD_SLEEP_S)
        return super().forward(engine, batch, device)


def _worker_phases(rank: int) -> dict[str, float]:
    engine, state, window = _SGDEngine(), TrainState(), Window(CPU, rank)
    feed = LockstepBatches(lambda epoch: _SlowXYStream(rank, epoch, 100), device=CPU)
    task = _SlowOnRank1Task(rank=-1 if rank == 0 else 1)  # rank -1: never the poisoned micro-batch
    for _ in range(8):
        accumulate_update(task, engine, feed, state, window, 2, CPU)
    return window.reduce(world=WORLD)


def test_the_step_time_breakdown_sums_to_one_shows_a_slow_data_path_and_names_the_straggler(tmp_path: Path) -> None:
    """(Issue 31) two real ranks, 16 micro-batches each: every phase that ran has a share, the shares and `other`
    sum to 1, the sleep in the data path is the data-wait share, and the rank with the slow forward is named."""
    r0, r1 = _run_two_ranks(_worker_phases, tmp_path)
    assert r0 == r1  # the same reduced numbers on every rank
    shares = {k.removeprefix("time_share/"): v for k, v in r0.items() if k.startswith("time_share/")}
    slowest = shares.pop("slowest_rank")
    assert sum(shares.values()) == pytest.approx(1.0, abs=0.02), shares
    assert all(shares[p] > 0 for p in ("data_wait", "forward", "backward", "optimizer")), shares
    assert shares["evaluation"] == shares["checkpoint"] == shares["logging"] == 0.0  # not run here
    # per micro-batch: 30 ms of data on both ranks vs ~10 ms of (rank 1's) forward: data wait dominates
    assert shares["data_wait"] > 0.5 and shares["data_wait"] > 2 * shares["forward"], shares
    assert slowest == 1.0


class _DroppingStream:
    """One epoch in which the pipeline drops one bad row per batch it yields (counted as it reads)."""

    def __init__(self, n: int):
        self.n, self.dropped = n, Counter()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(self.n):
            self.dropped["decode_error"] += 1
            yield {"id": (0, 0, i)}


def test_rows_of_skipped_batches_are_not_counted_again_after_a_restore() -> None:
    # restored mid-epoch: 2 batches (and their 2 bad rows, already in the checkpoint's counters) are re-read
    feed = LockstepBatches(lambda epoch: _DroppingStream(4), skip=2)
    assert feed.dropped == Counter()
    feed.next()
    assert feed.dropped == Counter({"decode_error": 1})
    feed.next()
    feed.next()  # epoch 0 is exhausted: epoch 1 opens and yields its first batch
    assert (feed.epoch, feed.position) == (1, 1)
    assert feed.dropped == Counter({"decode_error": 3})  # 2 new rows of epoch 0 + 1 of epoch 1
