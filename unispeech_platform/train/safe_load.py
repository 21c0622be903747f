"""Load DeepSpeed's checkpoint files without unpickling arbitrary objects.

DeepSpeed's TorchCheckpointEngine calls ``torch.load(..., weights_only=False)``: a ``__reduce__`` payload in a
checkpoint would run on every rank that restores (anyone who can write to ``storage_path`` could run code on every
node). We load with torch's ``weights_only=True`` unpickler instead, allowing only the few DeepSpeed classes its
own checkpoints contain (found by listing the pickled globals of ZeRO 0-3 checkpoints in fp32 and bf16; the test
suite loads each of them through this path, see tests/test_checkpoint_trust.py; fp16's DynamicLossScaler needs a
GPU and is allowed from DeepSpeed's source). Anything else is refused with one line naming the file and the object
it wanted to build.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from unispeech_core.checkpoint import unpickle_refusal


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint file asked the unpickler for something that is not a tensor or DeepSpeed state."""


def deepspeed_safe_globals() -> list[Any]:
    """The classes DeepSpeed pickles besides tensors, dicts, lists and builtins: the loss scaler (fp32/bf16:
    static, fp16: dynamic), ZeRO's stage enum and the fragment addresses of its parameter slice mappings."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def safe_torch_load(path: str | Path, map_location: Any = None, *, mmap: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True`` and DeepSpeed's safe globals; refusals raise
    UnsafeCheckpointError naming the file. ``mmap``: leave tensor data on disk (a cheap check of the pickle)."""
    mmap = mmap and zipfile.is_zipfile(path)  # only torch's zip format can be memory-mapped
    try:
        with torch.serialization.safe_globals(deepspeed_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{path}: refused to unpickle ({unpickle_refusal(e)}): not tensors or DeepSpeed state, "
            f"the file may have been tampered with") from None


class WeightsOnlyLoads:
    """Wraps the engine's checkpoint engine (whatever kind the config chose): saves are DeepSpeed's, every load
    goes through safe_torch_load."""

    def __init__(self, inner: Any):
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def load(self, path: str, map_location: Any = None) -> Any:
        return safe_torch_load(path, map_location)


def install_weights_only_loads(engine: Any) -> None:
    """Make ``engine.load_checkpoint`` unpickle with weights_only=True (idempotent)."""
    current = getattr(engine, "checkpoint_engine", None)
    if current is not None and not isinstance(current, WeightsOnlyLoads):
        engine.checkpoint_engine = WeightsOnlyLoads(current)
