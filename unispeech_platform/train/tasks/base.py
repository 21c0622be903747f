"""The Task protocol: what the task-agnostic train loop asks of a training task, and the pieces tasks share.

A task builds its model from the typed ``model:`` section and the corpus vocabulary, applies per-update
schedules, computes a micro-batch's loss, and evaluates the dev split. Evaluation returns an ``EvalResult``: sums
that the loop all-reduces over ranks, and items it gathers from every rank (e.g. transcripts, since PER is not a
sum); ``summarize`` turns the combined result into metrics. The loop keeps the best export by ``score_key`` in ``score_mode`` direction when
``keeps_best``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import nn

from unispeech_core import UniSpeechConfig

ScoreMode = Literal["min", "max"]


@dataclass
class EvalResult:
    """One rank's dev evaluation."""

    sums: dict[str, float]
    """Summed over ranks by the loop (losses, counts)."""
    items: list[Any] = field(default_factory=list)
    """Gathered from every rank by the loop, in rank order (e.g. (reference, hypothesis) pairs)."""


class Task(Protocol):
    config: UniSpeechConfig | None
    """The built model's config (saved with every checkpoint); None before build_model."""
    score_key: str
    """Dev metric that ranks models (e.g. dev_per)."""
    score_mode: ScoreMode
    """Whether a lower or a higher score_key is better."""
    keeps_best: bool
    """Whether the loop exports the model with the best score so far (fine-tuning) besides the last one."""

    def build_model(self) -> nn.Module: ...

    def before_update(self, model: nn.Module, step: int) -> dict[str, float]:
        """Per-update schedules (temperature, freezing, LayerDrop); returns values worth logging."""
        ...

    def forward(self, engine: Any, batch: dict[str, Any], device: torch.device
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss, detached stats) of one micro-batch (the loop wraps it in the precision's autocast)."""
        ...

    def evaluate(self, engine: Any, batches: Any, device: torch.device) -> EvalResult: ...

    def summarize(self, sums: dict[str, float], items: list[Any]) -> dict[str, float]:
        """Metrics from all ranks' summed ``sums`` and gathered ``items``."""
        ...


def improves(mode: ScoreMode, score: float | None, best: float | None) -> bool:
    """Whether ``score`` beats ``best`` (None: nothing yet) in the task's direction."""
    if score is None:
        return False
    return best is None or (score < best if mode == "min" else score > best)


def model_inputs(batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: batch[k].to(device) for k in ("input_values", "attention_mask") if batch.get(k) is not None}


def blank_frames(ctc_logits: torch.Tensor | None, frames: torch.Tensor, labeled: torch.Tensor,
                 blank: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(frames whose greedy CTC output is the blank, valid frames) over the labeled rows of a batch, as tensors;
    None without logits or labeled rows."""
    if ctc_logits is None or not bool(labeled.any()):
        return None
    valid = torch.arange(ctc_logits.shape[1], device=frames.device)[None, :] < frames[:, None]
    valid &= labeled.to(torch.bool)[:, None]
    blank_here = ctc_logits.argmax(dim=-1) == blank
    return (blank_here & valid).sum(), valid.sum()


def ctc_blank_share(engine, ctc_logits: torch.Tensor | None, inputs: dict[str, torch.Tensor],
                    labeled: torch.Tensor, blank: int) -> dict[str, torch.Tensor]:
    """``{"ctc_blank_share": ...}``: the share of the labeled rows' frames whose greedy CTC output in this
    training micro-batch is the blank ({} without labeled rows). The live sign of the CTC blank plateau
    (train/health.py) where the dev split is scored rarely or only at the end, as in the presets' pretraining.
    In pretraining the CTC head reads the frames after replace_prob's swap to quantized features."""
    module = getattr(engine, "module", engine)
    mask = inputs.get("attention_mask")
    if ctc_logits is None:
        return {}
    frames = (module.unispeech._get_feat_extract_output_lengths(mask.sum(-1)) if mask is not None
              else torch.full((ctc_logits.shape[0],), ctc_logits.shape[1], device=ctc_logits.device))
    counts = blank_frames(ctc_logits.detach(), frames, labeled, blank)
    if counts is None or not int(counts[1]):
        return {}
    return {"ctc_blank_share": counts[0].float() / counts[1].float()}


def sync_layerdrop(model: nn.Module, seed: int, step: int) -> None:
    """Every rank drops the same layers at a step (mismatched collectives otherwise hang/abort)."""
    if hasattr(model, "set_layerdrop_generator"):
        model.set_layerdrop_generator(torch.Generator().manual_seed(seed * 1_000_003 + step))
