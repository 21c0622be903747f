"""UniSpeech multitask pretraining: α·CTC + (1−α)·(contrastive + w·diversity) over labeled + unlabeled rows.

Besides the loss terms every micro-batch reports the objective's health statistics (unispeech_core/telemetry.py)
and, every ``train.grad_share_every`` updates, how much gradient each term sends into the transformer's input
(``grad_share/ctc`` vs ``grad_share/contrastive``): what the failure-state detectors read (train/health.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from unispeech_core import PhoneTokenizer, UniSpeechConfig, UniSpeechForPreTraining
from unispeech_core.quantizer import gumbel_temperature
from unispeech_platform.config.model import ModelSection
from unispeech_platform.config.sections import FinetuneSection, TrainSection
from unispeech_platform.train.checkpoint import init_model_dir
from unispeech_platform.train.tasks.base import (
    EvalResult,
    blank_frames,
    ctc_blank_share,
    model_inputs,
    sync_layerdrop,
)


class PretrainTask:
    score_key = "dev_loss"
    score_mode = "min"
    keeps_best = False  # the last pretraining model is the one fine-tuned

    def __init__(self, model: ModelSection, train: TrainSection, finetune: FinetuneSection | None = None,
                 tokenizer: PhoneTokenizer | None = None, init_from: str | None = None):
        """``finetune`` is not read; ``tokenizer``: the corpus vocabulary; ``init_from``: the model directory a
        continued pretraining starts from (resolved and checked on the driver: train/init_from.py)."""
        self.model = model
        self.init_from = init_from
        self.vocab = tokenizer.vocab if tokenizer is not None else None
        self.train = train
        self.config: UniSpeechConfig | None = None
        self.probe_gradients = False
        """Set by before_update on the updates that measure the gradient shares (first micro-batch only)."""

    def build_model(self) -> nn.Module:
        if self.init_from:  # heads the checkpoint lacks, or of another shape, start fresh (named on the driver)
            with init_model_dir(self.init_from, "pretrain.init_from") as model_dir:  # a checkpoint: consolidated
                model = UniSpeechForPreTraining.from_pretrained(model_dir, allow_new_head=True,
                                                                reinit_mismatched_head=True, convertible=True,
                                                                **self.model.settings(self.vocab))
        else:
            model = UniSpeechForPreTraining(self.model.unispeech_config(self.vocab))
        self.config = model.config
        return model

    def before_update(self, model: nn.Module, step: int) -> dict[str, float]:
        c = self.config
        tau = gumbel_temperature(step, c.max_gumbel_temperature, c.min_gumbel_temperature, c.gumbel_temperature_decay)
        model.set_gumbel_temperature(tau)
        sync_layerdrop(model, self.train.seed, step)
        every = self.train.grad_share_every
        # ZeRO-3 gathers parameters in hooks that assume one full backward per forward: no extra partial ones.
        self.probe_gradients = bool(every) and step % every == 0 and self.train.zero_stage < 3
        return {"temperature": tau}

    def forward(self, engine, batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inputs, labels, labeled = model_inputs(batch, device), batch["labels"].to(device), batch["labeled"].to(device)
        out = engine(**inputs, labels=labels, labeled=labeled)
        stats = {k: getattr(out, k) for k in ("ctc_loss", "contrastive_loss", "diversity_loss")}
        stats.update(out.telemetry or {})  # prob_perplexity is the soft perplexity the diversity term uses
        if self.config.ctc_weight > 0:  # the rows the CTC term reads: flagged labeled and holding labels
            transcribed = labeled.to(torch.bool) & (labels >= 0).any(-1)
            stats.update(ctc_blank_share(engine, out.ctc_logits, inputs, transcribed, self.config.pad_token_id))
        if self.probe_gradients and out.loss is not None:
            self.probe_gradients = False
            stats.update(gradient_shares(out, self.config.ctc_weight))
        return out.loss, {k: v.detach().float() for k, v in stats.items() if v is not None}

    @torch.no_grad()
    def evaluate(self, engine, batches, device: torch.device) -> EvalResult:
        """Dev objective (dropout off) with time masks drawn from a fixed-seed generator: the same frames are
        masked at every evaluation, so dev losses are comparable over time."""
        base = engine.module.unispeech
        gen = torch.Generator(device=device).manual_seed(self.train.seed)
        sums = {"dev_loss": 0.0, "dev_ctc_loss": 0.0, "dev_contrastive_loss": 0.0, "dev_batches": 0.0,
                "dev_blank_frames": 0.0, "dev_labeled_frames": 0.0}
        for batch in batches:
            inputs = model_inputs(batch, device)
            frames = base._get_feat_extract_output_lengths(inputs["attention_mask"].sum(-1))
            masks = base.sample_mask_time_indices(frames, generator=gen)
            out = engine(
                **inputs,
                labels=batch["labels"].to(device),
                labeled=batch["labeled"].to(device),
                mask_time_indices=masks,
            )
            if out.loss is None or not torch.isfinite(out.loss):
                continue
            sums["dev_loss"] += float(out.loss)
            sums["dev_ctc_loss"] += float(out.ctc_loss if out.ctc_loss is not None else 0.0)
            sums["dev_contrastive_loss"] += float(out.contrastive_loss if out.contrastive_loss is not None else 0.0)
            for key, value in (out.telemetry or {}).items():
                sums[f"dev_{key}"] = sums.get(f"dev_{key}", 0.0) + float(value)
            counts = blank_frames(out.ctc_logits, frames, batch["labeled"].to(device), self.config.pad_token_id)
            if counts is not None:
                sums["dev_blank_frames"] += float(counts[0])
                sums["dev_labeled_frames"] += float(counts[1])
            sums["dev_batches"] += 1
        return EvalResult(sums)

    def summarize(self, sums: dict[str, float], items: list[Any]) -> dict[str, float]:
        """Means per batch; ``dev_blank_share``: blank frames of the CTC head's greedy output over the labeled
        rows' frames (pooled, not a mean of per-batch shares)."""
        n = max(sums.get("dev_batches", 0.0), 1.0)
        out = {k: v / n for k, v in sums.items() if k not in ("dev_batches", "dev_blank_frames", "dev_labeled_frames")}
        if sums.get("dev_labeled_frames"):
            out["dev_blank_share"] = sums["dev_blank_frames"] / sums["dev_labeled_frames"]
        return out


def gradient_shares(out, ctc_weight: float) -> dict[str, torch.Tensor]:
    """Norm of the gradient that α·CTC and (1−α)·contrastive each send into the transformer's input, as shares of
    their sum (``grad_share/ctc`` + ``grad_share/contrastive`` = 1). Two partial backward passes through the
    transformer on this micro-batch (only down to its input: no parameter gradient is touched), so it runs
    every ``train.grad_share_every`` updates, not every one."""
    terms = {"ctc": (ctc_weight * out.ctc_loss) if out.ctc_loss is not None else None,
             "contrastive": (1.0 - ctc_weight) * out.contrastive_loss if out.contrastive_loss is not None else None}
    norms = {}
    for name, term in terms.items():
        grad = None
        if term is not None and term.requires_grad and out.encoder_input is not None:
            (grad,) = torch.autograd.grad(term, out.encoder_input, retain_graph=True, allow_unused=True)
        norms[name] = grad.float().norm() if grad is not None else torch.zeros((), device=out.loss.device)
    total = norms["ctc"] + norms["contrastive"]
    if float(total) <= 0:
        return {}
    return {f"grad_share/{name}": norm / total for name, norm in norms.items()}
