"""What kind of failure an exception is: out of memory (a batch too large for the device), unreadable data (a
corrupt Parquet part or page), or something else. The train loop skips a batch on an out-of-memory forward pass;
the crash-loop stop names the likely cause in its one line (docs/training.md#fault-tolerance)."""

from __future__ import annotations

import torch

from unispeech_platform.data.row_groups import UnreadableRowGroup
from unispeech_platform.runtime.errors import first_line

OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory", "failed to allocate")
"""How allocation failures read when they surface as a plain RuntimeError (CPU allocator, NCCL, cuDNN)."""
DATA_MARKERS = ("parquet", "arrow", "thrift", "corrupt", "sndfile", "decode", "magic bytes", "data part")
"""Words of the errors that unreadable data raises (pyarrow, libsndfile, Ray Data read tasks)."""
PEER_MARKERS = ("connection reset by peer", "connection closed by peer", "broken pipe", "remote process exited",
                "nccl communicator was aborted")
"""A collective that failed because another rank went away: a consequence, not the cause."""
PEER_CAUSE = "a peer rank went away"


def _chain(error: BaseException) -> list[BaseException]:
    """The error and its causes/contexts (Ray wraps worker errors), outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def is_out_of_memory(error: BaseException) -> bool:
    """torch's OutOfMemoryError (CUDA and other devices), MemoryError, or a RuntimeError saying memory ran out."""
    for e in _chain(error):
        if isinstance(e, (MemoryError, torch.OutOfMemoryError)):  # torch.cuda.OutOfMemoryError is an alias
            return True
        if isinstance(e, RuntimeError) and any(m in str(e).lower() for m in OOM_MARKERS):
            return True
    return False


def unreadable_row_group(error: BaseException) -> str | None:
    """The one line of an UnreadableRowGroup anywhere in the chain (the file and the row group), or None. Ray
    wraps a read task's error in a RayTaskError whose text is a traceback; its ``cause`` is the original."""
    for e in _chain(error):
        original = getattr(e, "cause", e)
        if isinstance(original, UnreadableRowGroup):
            return first_line(original, limit=600, with_type=False)
    return None


def likely_cause(error: BaseException) -> str:
    """A short diagnosis for a person: what probably failed and what to change."""
    named = unreadable_row_group(error)
    if named is not None:
        return f"unreadable data: {named}"
    if is_out_of_memory(error):
        return ("out of memory on a batch (lower data.max_batch_seconds or data.max_batch_size, or give each "
                f"worker more memory): {first_line(error)}")
    words = " ".join(f"{type(e).__name__} {e}" for e in _chain(error)).lower()
    if any(m in words for m in PEER_MARKERS):
        return f"{PEER_CAUSE} (its own error or a lost node): {first_line(error)}"
    if any(m in words for m in DATA_MARKERS):
        return f"unreadable data (a corrupt Parquet part or audio row; check the corpus): {first_line(error)}"
    return f"the same error each time: {first_line(error)}"
