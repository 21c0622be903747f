"""save_pretrained / from_pretrained in transformers' format: config.json + model.safetensors.

Reads ``pytorch_model.bin`` too (``weights_only=True``: never unpickle arbitrary objects), renames old weight-norm
keys (``weight_g``/``weight_v``) to the parametrization names, and moves between heads the way transformers
does: the ``unispeech.`` prefix is added or stripped as needed.

Loading is strict: a missing or unused key is an error that names it (2-layer weights silently loaded into a
1-layer config scored PER 320%). Fine-tuning a pretrained encoder under a new head opts out with
``allow_new_head=True``, which tolerates head keys only: the encoder must still match exactly.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import UniSpeechConfig
from .export_dir import check_replaceable, fresh_staging_dir

log = logging.getLogger(__name__)
WEIGHTS_NAME = "model.safetensors"
PT_WEIGHTS_NAME = "pytorch_model.bin"
PREFIX = "unispeech."
TRAINING_ONLY_KEYS = frozenset({"masked_spec_embed"})
"""Encoder parameters that exist only when the config masks (mask_time_prob/mask_feature_prob > 0): used for
SpecAugment during training, never at inference, so their presence may differ between configs."""
_LEGACY_RENAMES = {".weight_g": ".parametrizations.weight.original0", ".weight_v": ".parametrizations.weight.original1"}

T = TypeVar("T", bound="PreTrainedMixin")
V = TypeVar("V")


@dataclass
class LoadingInfo:
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    reinitialised_keys: list[str] = field(default_factory=list)
    """Head keys whose saved shape differed from the model's and that start fresh (``reinit_mismatched_head``)."""


class WeightsMismatchError(ValueError):
    """The weights in a model directory do not fit the model its config.json builds (keys missing or unused, or
    shapes that differ)."""


_REFUSAL = re.compile(r"WeightsUnpickler error: ([^\n]*?)(?: was not an allowed global by default|\.\s|\n|$)")
CONVERT_HINT = "convert it to model.safetensors with a tool you trust (safetensors.torch.save_file of its tensors)"
"""What to do with a pickled model we refuse: never 'load it with weights_only=False' (torch's advice), which
runs whatever the pickle asks for."""


def unpickle_refusal(error: BaseException) -> str:
    """The one informative line of torch's weights_only refusal (e.g. 'Unsupported global: GLOBAL posix.system'),
    without the rest of torch's message, which advises ``weights_only=False``."""
    text = str(error)
    match = _REFUSAL.search(text)
    return match.group(1).strip() if match else (text.strip().splitlines() or [type(error).__name__])[0][:200]


def _listed(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


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
        except pickle.UnpicklingError as e:  # a pickle that wants more than tensors: never unpickled
            raise ValueError(f"{pt}: refused to unpickle ({unpickle_refusal(e)}): not plain tensors; "
                             f"{CONVERT_HINT}") from None
        except Exception as e:
            raise ValueError(f"{pt}: cannot load with weights_only=True ({unpickle_refusal(e)})") from None
    raise FileNotFoundError(f"no {WEIGHTS_NAME} or {PT_WEIGHTS_NAME} in {directory}")


FOREIGN_PREFIXES = {"wav2vec2.": PREFIX}
"""Base-model prefixes of other architectures whose encoder has our parameter names (transformers' Wav2Vec2)."""
FOREIGN_HEADS = {"wav2vec2.": ("project_hid.",)}
"""Head tensors of those architectures that have our names but another meaning: never loaded (wav2vec2's
project_hid maps the transformer output to the codevector space; ours maps codevectors to the hidden size)."""


def _rename_foreign(state: dict[str, V]) -> dict[str, V]:
    """A foreign base model's prefix renamed to ours, its same-named-but-different head tensors dropped."""
    for prefix, ours in FOREIGN_PREFIXES.items():
        if any(k.startswith(prefix) for k in state):
            skip = FOREIGN_HEADS.get(prefix, ())
            return {(ours + k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()
                    if not k.startswith(skip)}
    return state


def _rename_legacy(state: dict[str, V]) -> dict[str, V]:
    state = _rename_foreign(state)
    out = {}
    for k, v in state.items():
        for old, new in _LEGACY_RENAMES.items():
            if k.endswith(old):
                k = k[: -len(old)] + new
        out[k] = v
    return out


def _check_shapes(saved: dict[str, tuple[int, ...]], own: dict[str, tuple[int, ...]], source: str) -> None:
    """WeightsMismatchError naming ``source`` (the model directory), the first tensor whose saved shape differs
    from the one the config builds, and how many more do: e.g. config.json's hidden_size edited after saving."""
    wrong = [k for k, shape in saved.items() if k in own and own[k] != shape]
    if wrong:
        k = wrong[0]
        more = f" (and {len(wrong) - 1} more tensors)" if len(wrong) > 1 else ""
        raise WeightsMismatchError(
            f"{source}: checkpoint tensor {k!r} has shape {saved[k]} but the model its config.json builds "
            f"expects {own[k]}{more}: config and weights do not match"
        )


def _align_prefix(state: dict[str, V], expected: set[str]) -> dict[str, V]:
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

    def load_checkpoint_state(self, state: dict[str, torch.Tensor], *, strict_shapes: bool = True,
                              reinit_mismatched_head: bool = False, source: str = "checkpoint") -> LoadingInfo:
        """Load a state dict (prefix aligned, legacy and foreign names renamed); shapes must match, missing/unexpected
        keys are returned (``check_loading_info`` decides which are errors). ``reinit_mismatched_head``: a head
        tensor whose shape differs (a CTC head over another vocabulary) is left as initialised instead.
        ``source``: where the state came from (a model directory), named by a shape error."""
        assert isinstance(self, nn.Module)
        own = self.state_dict()
        state = _align_prefix(_rename_legacy(state), set(own))
        state, reinit = self._split_mismatched_head(state, own, reinit_mismatched_head)
        if strict_shapes:
            _check_shapes({k: tuple(v.shape) for k, v in state.items()}, {k: tuple(v.shape) for k, v in own.items()},
                          source)
        result = self.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if k not in reinit]
        return LoadingInfo(missing, list(result.unexpected_keys), reinit)

    def _split_mismatched_head(self, state: dict[str, V], own: dict[str, Any], reinit: bool
                               ) -> tuple[dict[str, V], list[str]]:
        """(state without the head keys whose shape differs from the model's, those keys) when ``reinit``."""
        if not reinit:
            return state, []

        def shape(v: Any) -> tuple[int, ...]:
            return tuple(v.shape) if hasattr(v, "shape") else tuple(v)

        mismatched = sorted(k for k, v in state.items()
                            if k in own and shape(v) != tuple(own[k].shape) and not self.is_encoder_key(k))
        return {k: v for k, v in state.items() if k not in mismatched}, mismatched

    @classmethod
    def check_pretrained(cls, directory: str | Path, *, allow_new_head: bool = False,
                         reinit_mismatched_head: bool = False, convertible: bool = False,
                         **config_overrides: Any) -> LoadingInfo:
        """Raise what ``from_pretrained`` would raise about keys and shapes, without reading any tensor: the model is
        built on the meta device and compared with the safetensors header. Cheap for any model size: a preflight
        (e.g. evaluation's, before Ray starts)."""
        directory = Path(directory)
        config = UniSpeechConfig.from_pretrained(directory, convertible=convertible, **config_overrides)
        with torch.device("meta"):
            model = cls(config)  # type: ignore[call-arg]
        own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        st = directory / WEIGHTS_NAME
        if st.is_file():
            from safetensors import safe_open

            try:
                with safe_open(str(st), "pt") as f:
                    shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            except Exception as e:  # safetensors raises its own error types
                raise ValueError(f"{st}: cannot read safetensors file ({e})") from None
        else:
            shapes = {k: tuple(v.shape) for k, v in load_state_dict(directory).items()}
        shapes = _align_prefix(_rename_legacy(shapes), set(own))
        shapes, reinit = model._split_mismatched_head(shapes, model.state_dict(), reinit_mismatched_head)
        _check_shapes(shapes, own, str(directory))
        info = LoadingInfo(sorted(set(own) - set(shapes) - set(reinit)), sorted(set(shapes) - set(own)), reinit)
        model.check_loading_info(info, directory, allow_new_head=allow_new_head)
        return info

    def is_encoder_key(self, key: str) -> bool:
        """Whether ``key`` (with or without the ``unispeech.`` prefix) names a parameter of the shared encoder
        (UniSpeechModel) rather than of a head (lm_head, classifier, quantizer, ctc_proj...)."""
        assert isinstance(self, nn.Module)
        base = getattr(self, "unispeech", self)
        tops = {k.split(".")[0] for k in base.state_dict()} | TRAINING_ONLY_KEYS
        bare = key[len(PREFIX):] if key.startswith(PREFIX) else key
        return bare.split(".")[0] in tops

    def check_loading_info(self, info: LoadingInfo, directory: str | Path, *, allow_new_head: bool) -> None:
        """Raise WeightsMismatchError naming the keys that may not differ: any key by default; with
        ``allow_new_head`` only encoder keys (head keys may be newly initialised or unused)."""

        def training_only(key: str) -> bool:
            return key.removeprefix(PREFIX) in TRAINING_ONLY_KEYS

        def fatal(keys: list[str]) -> list[str]:
            return [k for k in keys if not training_only(k) and (not allow_new_head or self.is_encoder_key(k))]

        missing, unexpected = fatal(info.missing_keys), fatal(info.unexpected_keys)
        if not missing and not unexpected:
            return
        parts = [f"missing {_listed(missing)}"] if missing else []
        parts += [f"unused {_listed(unexpected)}"] if unexpected else []
        where = "encoder weights" if allow_new_head else "weights"
        hint = "" if allow_new_head else " (a different head? only fine-tuning loads an encoder into a new head)"
        raise WeightsMismatchError(
            f"{directory}: {where} do not match {type(self).__name__} built from its config.json: "
            f"{'; '.join(parts)}{hint}"
        )

    @classmethod
    def from_pretrained(
        cls: type[T],
        directory: str | Path,
        *,
        output_loading_info: bool = False,
        allow_new_head: bool = False,
        reinit_mismatched_head: bool = False,
        convertible: bool = False,
        **config_overrides: Any,
    ) -> T | tuple[T, LoadingInfo]:
        """Build from config.json (plus overrides) and load the weights strictly: a key missing from the
        directory or unused by the model raises WeightsMismatchError naming it. ``allow_new_head``: the model's
        head may differ from the saved one (pretraining -> CTC/LID fine-tuning): head keys missing from the
        directory start fresh, head keys the model lacks are dropped; encoder keys must still match."""
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"model directory not found: {directory}")
        config = UniSpeechConfig.from_pretrained(directory, convertible=convertible, **config_overrides)
        model = cls(config)  # type: ignore[call-arg]
        info = model.load_checkpoint_state(load_state_dict(directory), reinit_mismatched_head=reinit_mismatched_head,
                                           source=str(directory))
        model.check_loading_info(info, directory, allow_new_head=allow_new_head)
        if info.missing_keys:
            log.warning("%s: newly initialised (not in %s): %s", cls.__name__, directory, info.missing_keys)
        if info.reinitialised_keys:
            log.warning("%s: newly initialised (another shape in %s): %s", cls.__name__, directory,
                        info.reinitialised_keys)
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
    check_replaceable(out)  # before any copying: the swap below would move it aside and delete it
    fresh_staging_dir(tmp)
    shutil.copytree(export_dir, tmp, dirs_exist_ok=True)
    path = tmp / WEIGHTS_NAME
    state = load_file(str(path))
    if "ctc_proj.weight" in state:
        state["lm_head.weight"] = state["ctc_proj.weight"].clone()
        state["lm_head.bias"] = state["ctc_proj.bias"].clone()
        save_file(state, str(path), metadata={"format": "pt"})
    swap_dir(tmp, out)
    return str(out)


def _fsync_tree(directory: Path) -> None:
    for root, _, names in os.walk(directory):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(root))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def swap_dir(new: str | Path, target: str | Path) -> None:
    """Replace directory ``target`` by the complete directory ``new``: ``new`` is fsynced, the old target moved
    aside to ``<target>.old``, ``new`` renamed into place (the parent fsynced) and the old copy removed. A crash
    leaves either the old or the new model at ``target``, or (between the two renames) the old one at
    ``<target>.old``, which the next swap puts back first. Only an export is ever moved aside or removed
    (export_dir.py): a ``target`` or ``<target>.old`` that is something else raises NotAnExportError first."""
    import shutil

    new, target = Path(new), Path(target)
    aside = Path(f"{target}.old")
    check_replaceable(target)
    check_replaceable(aside)
    if aside.exists() and not target.exists():  # a swap was interrupted between its renames
        aside.replace(target)
    shutil.rmtree(aside, ignore_errors=True)
    _fsync_tree(new)
    if target.exists():
        target.replace(aside)
    new.replace(target)
    _fsync_dir(target.parent)
    shutil.rmtree(aside, ignore_errors=True)
