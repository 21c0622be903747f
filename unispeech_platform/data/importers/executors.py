"""Where an import converts its rows: a local process pool or Ray tasks over a cluster, both returning the
``convert`` results in input order with a bounded window of chunks in flight (memory stays bounded however
large the source).

Ray core tasks, not a Ray Data pipeline: the sources are Python generators over files of five layouts (no Ray
Data datasource reads them), the one writer is on the driver and needs the rows in input order, and a window of
``2 x CPUs`` chunks in flight bounds memory the same way on one machine and on a hundred. For Ray, audio files
named by path are read on the driver and shipped with their chunk, so workers on other nodes need no shared
filesystem (a recording cut into many segments travels once per chunk: pickle stores one bytes object once
however many records point to it).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor

from unispeech_platform.config.sections import RaySection
from unispeech_platform.data.audio_file import AudioFileError, AudioLimits, read_audio_file
from unispeech_platform.runtime.ray_session import connect_ray

from .common import Converted, Options, Record, chunks, convert_chunk

EXECUTORS = ("auto", "processes", "ray")
CHUNK_ROWS = 16


def resolve_executor(requested: str) -> str:
    """``auto``: the Ray cluster when one is named (RAY_ADDRESS), else a local process pool (no Ray start for
    a laptop import)."""
    if requested not in EXECUTORS:
        raise ValueError(f"executor {requested!r}: expected one of {', '.join(EXECUTORS)}")
    if requested != "auto":
        return requested
    return "ray" if os.environ.get("RAY_ADDRESS") else "processes"


def prepare_executor(executor: str) -> None:
    """Connect to (or start) Ray before the first row when the rows are converted there."""
    if executor == "ray":
        connect_ray(RaySection())


def convert_with(executor: str, records: Iterable[Record], opts: Options, workers: int | None) -> Iterator[Converted]:
    """``convert`` over ``records`` in input order on ``executor`` ("processes" or "ray", as resolved)."""
    if executor == "ray":
        return convert_on_ray(records, opts)
    return convert_stream(records, opts, workers or os.cpu_count() or 1)


def convert_stream(
    records: Iterable[Record], opts: Options, workers: int, *, chunk_rows: int = CHUNK_ROWS
) -> Iterator[Converted]:
    """``convert`` over ``records`` in input order, at most ``2 x workers`` chunks in flight (bounded memory).

    Spawned processes, not forked: the caller may hold torch threads a forked child would inherit half-locked.
    """
    if workers <= 1:
        for chunk in chunks(records, chunk_rows):
            yield from convert_chunk(chunk, opts)
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        window: deque[Future] = deque()
        for chunk in chunks(records, chunk_rows):
            window.append(pool.submit(convert_chunk, chunk, opts))
            if len(window) >= 2 * workers:
                yield from window.popleft().result()
        while window:
            yield from window.popleft().result()


def with_audio_bytes(chunk: list[Record], limits: AudioLimits = AudioLimits()) -> list[Record]:
    """``chunk`` with every ``path`` replaced by the file's bytes (read once per chunk), or a missing-file
    problem the worker reports."""
    read: dict[str, bytes | AudioFileError] = {}
    out = []
    for rec in chunk:
        if rec.audio is not None or rec.path is None or rec.problem:
            out.append(rec)
            continue
        if rec.path not in read:
            try:
                read[rec.path] = read_audio_file(rec.path, limits.max_bytes, limits.timeout_s)  # data/audio_file.py
            except AudioFileError as e:
                read[rec.path] = e
        got = read[rec.path]
        if isinstance(got, AudioFileError):
            out.append(dataclasses.replace(rec, problem=(got.reason, got.detail)))
        else:
            out.append(dataclasses.replace(rec, audio=got))
    return out


def convert_on_ray(
    records: Iterable[Record], opts: Options, *, chunk_rows: int = CHUNK_ROWS
) -> Iterator[Converted]:
    """``convert`` over ``records`` in input order on the connected Ray cluster, at most ``2 x CPUs`` chunks in
    flight."""
    import ray  # only an import that runs on Ray pays for loading it

    remote = ray.remote(num_cpus=1)(convert_chunk)
    window_size = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    window: deque = deque()
    for chunk in chunks(records, chunk_rows):
        window.append(remote.remote(with_audio_bytes(chunk, opts.limits), opts))
        if len(window) >= window_size:
            yield from ray.get(window.popleft())
    while window:
        yield from ray.get(window.popleft())
