"""The import's conversion on a Ray cluster: what ``convert_stream`` does on a local process pool, as Ray tasks
spread over every node (``--executor ray``, the default under ``ray job submit``).

Ray core tasks with a bounded window, not a Ray Data pipeline: the sources are Python generators over files of
four layouts (no Ray Data datasource reads them), the one writer is on the driver and needs the rows in input
order, and a window of ``2 x cluster CPUs`` chunks in flight bounds memory the same way on one machine and on
a hundred. Audio files named by path are read on the driver and shipped with their chunk, so workers on other
nodes need no shared filesystem (a recording cut into many segments travels once per chunk: pickle stores one
bytes object once however many records point to it).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable, Iterator

from .common import MISSING_AUDIO_FILE, Converted, Options, Record, chunks, convert_chunk


def with_audio_bytes(chunk: list[Record]) -> list[Record]:
    """``chunk`` with every ``path`` replaced by the file's bytes (read once per chunk), or a missing-file
    problem the worker reports."""
    read: dict[str, bytes | OSError] = {}
    out = []
    for rec in chunk:
        if rec.audio is not None or rec.path is None or rec.problem:
            out.append(rec)
            continue
        if rec.path not in read:
            try:
                with open(rec.path, "rb") as f:
                    read[rec.path] = f.read()
            except OSError as e:
                read[rec.path] = e
        got = read[rec.path]
        if isinstance(got, OSError):
            out.append(dataclasses.replace(rec, problem=(MISSING_AUDIO_FILE, f"{rec.path}: {got.strerror}")))
        else:
            out.append(dataclasses.replace(rec, audio=got))
    return out


def convert_on_ray(records: Iterable[Record], opts: Options, *, chunk_rows: int = 16) -> Iterator[Converted]:
    """``convert`` over ``records`` in input order on the connected Ray cluster, at most ``2 x CPUs`` chunks in
    flight."""
    import ray

    remote = ray.remote(num_cpus=1)(convert_chunk)
    window_size = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    window: deque = deque()
    for chunk in chunks(records, chunk_rows):
        window.append(remote.remote(with_audio_bytes(chunk), opts))
        if len(window) >= window_size:
            yield from ray.get(window.popleft())
    while window:
        yield from ray.get(window.popleft())
