"""Data path throughput: audio-seconds/s and rows/s over the same Parquet shards, side by side.

    .venv/bin/python bench/data_pipeline.py [--corpus data/bench] [--per-lang 500] [--epochs 2]

Rows measured:
  bare decode      one process, pyarrow reads the audio column, soundfile decodes each row (no batching)
  local pipeline   our non-Ray path in one process: decode + checks + buckets + collated tensors
  ray pipeline     build_dataset + iter_batches: Ray Data decode tasks, batches collated on the consumer
  torch DataLoader IterableDataset over the parts (split across workers), soundfile decode, pad_batch collate
"audio-s per CPU-s" counts the CPU time of this process and all its descendants (Ray's raylet, object store
and workers; DataLoader workers), so it is the per-core efficiency even on a machine shared with other jobs,
where wall-clock rates of the parallel paths depend on how much of the other cores they get.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import os
import resource
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import soundfile as sf
import torch
from rich.console import Console
from rich.table import Table

from unispeech_core.features import pad_batch
from unispeech_platform.config.data import DataConfig
from unispeech_platform.data.pipeline import build_dataset, iter_batches, iter_local_batches
from unispeech_platform.data.schema import scan_corpus
from unispeech_platform.data.synthetic import make_corpus

SR = 16_000


def bare_decode(paths: list[Path]) -> tuple[int, float]:
    rows, samples = 0, 0
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(columns=["audio"], batch_size=64):
            for audio in batch.column(0).to_pylist():
                wave, _ = sf.read(io.BytesIO(audio), dtype="float32")
                rows += 1
                samples += len(wave)
    return rows, samples / SR


def _count(batches: Iterator[dict]) -> tuple[int, float]:
    rows, samples = 0, 0
    for b in batches:
        rows += len(b["input_values"])
        samples += int(b["attention_mask"].sum())
    return rows, samples / SR


class ParquetAudio(torch.utils.data.IterableDataset):
    """The plain-PyTorch baseline: each DataLoader worker decodes its share of the parts."""

    def __init__(self, paths: list[Path]):
        self.paths = paths

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        mine = self.paths if info is None else self.paths[info.id :: info.num_workers]
        for path in mine:
            for batch in pq.ParquetFile(path).iter_batches(columns=["audio"], batch_size=64):
                for audio in batch.column(0).to_pylist():
                    yield sf.read(io.BytesIO(audio), dtype="float32")[0]


def dataloader(paths: list[Path], workers: int, batch_size: int) -> Iterator[dict]:
    loader = torch.utils.data.DataLoader(
        ParquetAudio(paths), batch_size=batch_size, num_workers=workers, collate_fn=pad_batch
    )
    return iter(loader)


def cpu_seconds() -> float:
    """CPU time of this process, its reaped children and its live descendants (Ray processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            t = child.cpu_times()
            total += t.user + t.system
    return total


def measure(fn: Callable[[], tuple[int, float]]) -> tuple[int, float, float, float]:
    cpu, start = cpu_seconds(), time.perf_counter()
    rows, seconds = fn()
    return rows, seconds, time.perf_counter() - start, cpu_seconds() - cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default="data/bench")
    p.add_argument("--langs", default="en-us,es")
    p.add_argument("--per-lang", type=int, default=500)
    p.add_argument(
        "--repeats", type=int, default=3, help="runs per path (Ray: warm epochs); the fastest is shown"
    )
    p.add_argument("--num-cpus", type=int, default=8, help="logical CPUs for the local Ray")
    a = p.parse_args()

    make_corpus(a.corpus, a.langs.split(","), a.per_lang, speakers=6, seed=0, progress=False)
    paths = [part.path for part in scan_corpus(a.corpus)]
    splits = ["train", "dev", "test"]
    cores = os.cpu_count() or 1
    cfg = DataConfig(path=a.corpus, train_splits=splits, max_batch_seconds=80.0, max_batch_size=32)

    def best(fn: Callable[[], tuple[int, float]]) -> tuple[int, float, float, float]:
        return min((measure(fn) for _ in range(a.repeats)), key=lambda r: r[2])

    results: list[tuple[str, tuple[int, float, float, float]]] = [
        ("bare soundfile decode", best(lambda: bare_decode(paths))),
        ("local pipeline (no Ray)", best(lambda: _count(iter_local_batches(cfg, splits)))),
    ]
    import ray

    ray.init(address="local", num_cpus=a.num_cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = build_dataset(cfg, splits)
    results.append(
        (
            "ray pipeline, first epoch (cold)",
            measure(lambda: _count(iter_batches(ds, cfg, epoch=0, train=True))),
        )
    )
    warm = itertools.count(1)  # each warm run is a new epoch (new shuffle, like training)
    results.append(
        (
            "ray pipeline, warm epoch",
            best(lambda: _count(iter_batches(ds, cfg, epoch=next(warm), train=True))),
        )
    )
    ray.shutdown()
    results.append(
        (f"torch DataLoader ({cores} workers)", best(lambda: _count(dataloader(paths, cores, 16))))
    )

    bare_eff = results[0][1][1] / results[0][1][3]
    table = Table(
        title=f"data path throughput ({a.corpus}, {cores} cores, load avg {os.getloadavg()[0]:.1f})"
    )
    for col in (
        "path",
        "rows",
        "audio h",
        "wall s",
        "rows/s",
        "audio-s/s",
        "CPU s",
        "audio-s/CPU-s",
        "vs bare",
    ):
        table.add_column(col, justify="left" if col == "path" else "right")
    for name, (rows, secs, wall, cpu) in results:
        table.add_row(
            name,
            str(rows),
            f"{secs / 3600:.2f}",
            f"{wall:.2f}",
            f"{rows / wall:,.0f}",
            f"{secs / wall:,.0f}",
            f"{cpu:.2f}",
            f"{secs / cpu:,.0f}",
            f"{secs / cpu / bare_eff:.0%}",
        )
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
