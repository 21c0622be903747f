"""A DeepSpeed checkpoint of any ZeRO stage (0-3) consolidated into full fp32 weights, and written as a
transformers-format model directory (config.json, model.safetensors, vocab.json), without unpickling anything
outside the allow-list.

DeepSpeed's own tool (``zero_to_fp32.py``) calls ``torch.load(..., weights_only=False)``: whoever can write a
checkpoint could run code on the machine that converts it. Here every file goes through ``safe_load`` (torch's
weights_only unpickler plus DeepSpeed's four state classes, the same allow-list that restores trust); nothing is
added to it. What the files hold besides tensors and those classes is plain data the weights_only unpickler
allows by default: dicts (``OrderedDict`` too), lists, strings, numbers, ``torch.Size`` (the parameter shapes).

Layout (DeepSpeed 0.19, tag directory ``<checkpoint>/ds``):

- ZeRO 0-2: ``mp_rank_00_model_states.pt`` holds the full module state dict under ``module`` (bf16 weights in a
  bf16 run: written as fp32, as the job's own export does).
- ZeRO-3: ``zero_pp_rank_<r>_mp_rank_00_model_states.pt`` (one per rank) holds the buffers under ``module`` (the
  parameters there are empty placeholders), ``param_shapes`` (one ordered name -> shape dict per parameter group,
  the order of the flat partitions), ``shared_params`` and, for parameters no optimizer owns, their shapes and each
  rank's fragment. ``zero_pp_rank_<r>_mp_rank_00_optim_states.pt`` (``bf16_``-prefixed in a bf16 run) holds rank
  r's fp32 master partitions (``optimizer_state_dict.fp32_flat_groups``, one flat tensor per group). Each
  parameter of n elements takes ceil(n / world) elements of every rank's flat vector (the last rank's piece is
  zero-padded), in param_shapes order: the full tensor is the concatenation of its piece on every rank, cut to n.
  Sizes are checked, so a truncated or mismatched shard is an error naming the file, never silently wrong
  weights.
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from unispeech_core.checkpoint import WEIGHTS_NAME
from unispeech_core.config import CONFIG_NAME
from unispeech_core.tokenizer import VOCAB_NAME
from unispeech_platform.runtime.errors import first_line
from unispeech_platform.train.safe_load import UnsafeCheckpointError, safe_torch_load

FULL_MODEL_STATES = "mp_rank_00_model_states.pt"
"""ZeRO 0-2: the full module."""
_RANK_FILE = re.compile(r"^(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_(\d+)_(model|optim)_states\.pt$")


class ConsolidationError(ValueError):
    """The checkpoint cannot be turned into full weights; one line naming the file and why (a refused pickle
    too: the message says what the file wanted to build)."""


def _load(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    try:
        data = safe_torch_load(path, "cpu", mmap=mmap)
    except UnsafeCheckpointError as e:
        raise ConsolidationError(str(e)) from None
    except Exception as e:  # a truncated zip, a bad storage: torch's reason in one line
        raise ConsolidationError(f"{path}: unreadable ({first_line(e)})") from None
    if not isinstance(data, dict):
        raise ConsolidationError(f"{path}: not a DeepSpeed checkpoint file (a {type(data).__name__})")
    return data


def _rank_files(ds_dir: Path, kind: str) -> list[Path]:
    """zero_pp_rank_<r>_mp_rank_00_<kind>_states.pt for r = 0..world-1 (a gap or model parallelism: an error)."""
    found: dict[int, Path] = {}
    for p in ds_dir.iterdir():
        m = _RANK_FILE.match(p.name)
        if m and m.group(3) == kind:
            if m.group(2) != "00":
                raise ConsolidationError(f"{p}: model-parallel checkpoints are not supported")
            found[int(m.group(1))] = p
    if sorted(found) != list(range(len(found))) or not found:
        raise ConsolidationError(f"{ds_dir}: {kind} states of ranks {sorted(found)}: expected ranks 0..N-1 "
                                 "(an incomplete checkpoint)")
    return [found[r] for r in range(len(found))]


def _module_fp32(module: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    if not all(isinstance(v, torch.Tensor) for v in module.values()):
        raise ConsolidationError(f"{path}: 'module' holds something other than tensors")
    return {k: v.float() if v.is_floating_point() else v for k, v in module.items()}


def consolidated_state_dict(ds_dir: str | Path) -> dict[str, torch.Tensor]:
    """Full fp32 weights (the module's state dict: parameters and persistent buffers) of the DeepSpeed
    checkpoint in ``ds_dir`` (its tag directory), of any ZeRO stage. ConsolidationError names what is wrong."""
    ds_dir = Path(ds_dir)
    if not ds_dir.is_dir():
        raise ConsolidationError(f"{ds_dir}: no DeepSpeed checkpoint directory")
    full = ds_dir / FULL_MODEL_STATES
    if full.is_file():  # ZeRO 0-2: every weight is in the module state
        state = _load(full)
        module = state.get("module")
        if not isinstance(module, dict) or any(isinstance(v, torch.Tensor) and v.numel() == 0
                                               for v in module.values()):
            raise ConsolidationError(f"{full}: no full 'module' weights")
        return _module_fp32(module, full)
    return _zero3_state_dict(ds_dir)


def _zero3_state_dict(ds_dir: Path) -> dict[str, torch.Tensor]:
    model_files = _rank_files(ds_dir, "model")
    models = [_load(p) for p in model_files]
    first, world = models[0], len(models)
    shapes = first.get("param_shapes")
    if not isinstance(first.get("module"), dict) or not isinstance(shapes, list):
        raise ConsolidationError(f"{model_files[0]}: not a ZeRO-3 model state (no module or param_shapes)")
    buffers = set(first.get("buffer_names") or [])
    state = {k: v for k, v in _module_fp32(first["module"], model_files[0]).items() if k in buffers}
    state.update(_frozen_params(models, model_files))
    flat = _flat_partitions(_rank_files(ds_dir, "optim"), world)
    offset = 0
    for name, shape in ((n, s) for group in shapes for n, s in group.items()):
        numel = math.prod(shape)
        piece = math.ceil(numel / world)
        if offset + piece > flat[0].numel():
            raise ConsolidationError(f"{ds_dir}: the fp32 partitions end before parameter {name} (shards of "
                                     "another model or a truncated file)")
        state[name] = torch.cat([v[offset:offset + piece] for v in flat])[:numel].reshape(tuple(shape)).clone()
        offset += piece
    if offset != flat[0].numel():
        raise ConsolidationError(f"{ds_dir}: {flat[0].numel() - offset} fp32 partition elements left over after "
                                 "every parameter (shards of another model)")
    for alias, source in (first.get("shared_params") or {}).items():
        if source in state:
            state[alias] = state[source]
    missing = sorted(k for k in first["module"] if k not in state)
    if missing:
        raise ConsolidationError(f"{model_files[0]}: no saved data for {', '.join(missing[:5])}")
    return {k: state[k] for k in first["module"]}  # the module's own key order


def _frozen_params(models: list[dict[str, Any]], files: list[Path]) -> dict[str, torch.Tensor]:
    """Parameters no optimizer owns (frozen): each rank's model state holds its fragment of them."""
    shapes = models[0].get("frozen_param_shapes") or {}
    out = {}
    for name, shape in shapes.items():
        numel = math.prod(shape)
        try:
            pieces = [m["frozen_param_fragments"][name].reshape(-1) for m in models]
        except (KeyError, TypeError, AttributeError):
            raise ConsolidationError(f"{files[0]}: frozen parameter {name} lacks a rank's fragment") from None
        whole = torch.cat(pieces)
        if whole.numel() < numel:
            raise ConsolidationError(f"{files[0]}: frozen parameter {name} has {whole.numel()} of {numel} elements")
        out[name] = whole[:numel].reshape(tuple(shape)).float().clone()
    return out


def _flat_partitions(optim_files: list[Path], world: int) -> list[torch.Tensor]:
    """Each rank's fp32 master partitions, its groups concatenated (one flat vector per rank)."""
    if len(optim_files) != world:
        raise ConsolidationError(f"{optim_files[0].parent}: {len(optim_files)} optimizer shards for {world} ranks")
    flat = []
    for path in optim_files:
        zero = _load(path, mmap=True).get("optimizer_state_dict")
        groups = zero.get("fp32_flat_groups") if isinstance(zero, dict) else None
        if int(zero.get("zero_stage", 0) if isinstance(zero, dict) else 0) != 3 or not isinstance(groups, list):
            raise ConsolidationError(f"{path}: not a ZeRO-3 optimizer shard (no fp32_flat_groups)")
        flat.append(torch.cat([g.reshape(-1).float() for g in groups]))
    if len({v.numel() for v in flat}) != 1:
        raise ConsolidationError(f"{optim_files[0].parent}: the ranks' fp32 partitions differ in size "
                                 f"({', '.join(str(v.numel()) for v in flat)})")
    return flat


def write_model_dir(state: dict[str, torch.Tensor], config: Path, vocab: Path | None, *, weights_path: Path,
                    config_path: Path, vocab_path: Path | None) -> None:
    """model.safetensors of ``state`` and copies of config.json and vocab.json (when there is one) at the given
    paths (a caller that claims each output file passes them)."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(weights_path), metadata={"format": "pt"})
    shutil.copy(config, config_path)
    if vocab is not None and vocab.is_file() and vocab_path is not None:
        shutil.copy(vocab, vocab_path)


@contextlib.contextmanager
def temporary_model_dir(checkpoint: str | Path, ds_tag: str, vocab: Path | None = None) -> Iterator[str]:
    """The training checkpoint (``<checkpoint>/<ds_tag>`` + its config.json) as a model directory in a temporary
    directory, removed on exit: for a consumer that reads the weights once (a from_pretrained)."""
    checkpoint = Path(checkpoint)
    state = consolidated_state_dict(checkpoint / ds_tag)
    if not (checkpoint / CONFIG_NAME).is_file():
        raise ConsolidationError(f"{checkpoint}: a training checkpoint without {CONFIG_NAME}")
    with tempfile.TemporaryDirectory(prefix="unispeech-consolidated-") as d:
        write_model_dir(state, checkpoint / CONFIG_NAME, vocab, weights_path=Path(d, WEIGHTS_NAME),
                        config_path=Path(d, CONFIG_NAME), vocab_path=Path(d, VOCAB_NAME))
        yield d
