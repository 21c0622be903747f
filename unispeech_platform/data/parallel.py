"""Ordered parallel map over a process pool, for the corpus builders (synthesis, import)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

MIN_ITEMS_PER_WORKER = 16  # a spawned worker costs ~2 s to import torch: not worth it for a handful of items


def parallel_map(
    fn: Callable[[T], R], items: Sequence[T], workers: int, *, chunksize: int = 8
) -> Iterator[R]:
    """``map(fn, items)`` in input order, over up to ``workers`` processes (in-process when small).

    Results are consumed as they arrive, so the caller can stream them into a writer. Uses spawn, not fork:
    the caller may hold Ray or torch threads that a forked child would inherit half-locked.
    """
    workers = max(1, min(workers, len(items) // MIN_ITEMS_PER_WORKER))
    if workers == 1:
        yield from map(fn, items)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(fn, items, chunksize=chunksize)
