"""save_pretrained / from_pretrained in transformers' format: config.json + model.safetensors.

Reads ``pytorch_model.bin`` too (``weights_only=True``: never unpickle arbitrary objects), renames old weight-norm
keys (``weight_g``/``weight_v``) to the parametrization names, and moves between heads the way transformers
does: the ``unispeech.`` prefix is added or stripped as needed, and missing/unexpected keys are reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import UniSpeechConfig

log = logging.getLogger(__name__)
WEIGHTS_NAME = "model.safetensors"
PT_WEIGHTS_NAME = "pytorch_model.bin"
PREFIX = "unispeech."
_LEGACY_RENAMES = {".weight_g": ".parametrizations.weight.original0", ".weight_v": ".parametrizations.weight.original1"}

T = TypeVar("T", bound="PreTrainedMixin")


@dataclass
class LoadingInfo:
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)


def load_state_dict(directory: str | Path) -> dict[str, torch.Tensor]:
    directory = Path(directory)
    st, pt = directory / WEIGHTS_NAME, directory / PT_WEIGHTS_NAME
    if st.is_file():
        try:
            return load_file(str(st))
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"{st}: cannot read safetensors file ({e})") from None
    if pt.is_file():
        try:
            return torch.load(pt, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{pt}: cannot load with weights_only=True ({e})") from None
    raise FileNotFoundError(f"no {WEIGHTS_NAME} or {PT_WEIGHTS_NAME} in {directory}")


def _rename_legacy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        for old, new in _LEGACY_RENAMES.items():
            if k.endswith(old):
                k = k[: -len(old)] + new
        out[k] = v
    return out


def _align_prefix(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Add or strip ``unispeech.`` so a head checkpoint loads into the base model and vice versa."""
    has_prefix = any(k.startswith(PREFIX) for k in state)
    wants_prefix = any(k.startswith(PREFIX) for k in expected)
    if wants_prefix and not has_prefix:
        return {(PREFIX + k if PREFIX + k in expected else k): v for k, v in state.items()}
    if has_prefix and not wants_prefix:
        return {k[len(PREFIX):] if k.startswith(PREFIX) else k: v for k, v in state.items()}
    return state


class PreTrainedMixin:
    """Mixed into every model class; requires ``self.config`` and ``_init_weights``."""

    config: UniSpeechConfig

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write config.json + model.safetensors atomically (temp files renamed into place)."""
        assert isinstance(self, nn.Module)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.extra["architectures"] = [type(self).__name__]
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        tmp = directory / (WEIGHTS_NAME + ".tmp")
        save_file(state, str(tmp), metadata={"format": "pt"})
        tmp.replace(directory / WEIGHTS_NAME)
        self.config.save_pretrained(directory)
        return directory

    def load_checkpoint_state(self, state: dict[str, torch.Tensor], *, strict_shapes: bool = True) -> LoadingInfo:
        """Load a state dict with transformers' leniency on heads, and errors on shapes."""
        assert isinstance(self, nn.Module)
        own = self.state_dict()
        state = _align_prefix(_rename_legacy(state), set(own))
        for k, v in state.items():
            if k in own and own[k].shape != v.shape and strict_shapes:
                raise ValueError(
                    f"checkpoint tensor {k!r} has shape {tuple(v.shape)} but the model (from its config) "
                    f"expects {tuple(own[k].shape)}: config and weights do not match"
                )
        result = self.load_state_dict(state, strict=False)
        return LoadingInfo(list(result.missing_keys), list(result.unexpected_keys))

    @classmethod
    def from_pretrained(
        cls: type[T],
        directory: str | Path,
        *,
        output_loading_info: bool = False,
        **config_overrides: Any,
    ) -> T | tuple[T, LoadingInfo]:
        """Build from config.json (plus overrides), load weights, report keys the way transformers does."""
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"model directory not found: {directory}")
        config = UniSpeechConfig.from_pretrained(directory, **config_overrides)
        model = cls(config)  # type: ignore[call-arg]
        info = model.load_checkpoint_state(load_state_dict(directory))
        if info.missing_keys:
            log.warning("%s: newly initialised (not in %s): %s", cls.__name__, directory, info.missing_keys)
        if info.unexpected_keys:
            log.info("%s: unused weights in %s: %s", cls.__name__, directory, info.unexpected_keys)
        model.eval()  # type: ignore[attr-defined]
        return (model, info) if output_loading_info else model


def copy_ctc_head(export_dir: str | Path, out_dir: str | Path) -> str:
    """A copy of a pretraining export whose ``lm_head`` (the fine-tuning head) starts as its ``ctc_proj``: both map
    the hidden state to the same phone vocabulary, so fine-tuning skips the blank-only plateau of a random head.
    Written beside ``out_dir`` and renamed into place, so a crash never leaves a half-copied model."""
    import shutil

    out, tmp = Path(out_dir), Path(f"{out_dir}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(export_dir, tmp)
    path = tmp / WEIGHTS_NAME
    state = load_file(str(path))
    if "ctc_proj.weight" in state:
        state["lm_head.weight"] = state["ctc_proj.weight"].clone()
        state["lm_head.bias"] = state["ctc_proj.bias"].clone()
        save_file(state, str(path), metadata={"format": "pt"})
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return str(out)
