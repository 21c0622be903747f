"""UniSpeech multitask pretraining: α·CTC + (1−α)·(contrastive + w·diversity) over labeled + unlabeled rows."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from unispeech_core import UniSpeechConfig, UniSpeechForPreTraining
from unispeech_core.quantizer import gumbel_temperature
from unispeech_platform.config.sections import TrainSection
from unispeech_platform.train.tasks.base import EvalResult, model_inputs, sync_layerdrop


class PretrainTask:
    score_key = "dev_loss"
    score_mode = "min"
    keeps_best = False  # the last pretraining model is the one fine-tuned

    def __init__(self, model_overrides: dict[str, Any], train: TrainSection):
        self.model_overrides = model_overrides
        self.train = train
        self.config: UniSpeechConfig | None = None

    def build_model(self) -> nn.Module:
        model = UniSpeechForPreTraining(UniSpeechConfig(**self.model_overrides))
        self.config = model.config
        return model

    def before_update(self, model: nn.Module, step: int) -> dict[str, float]:
        c = self.config
        tau = gumbel_temperature(step, c.max_gumbel_temperature, c.min_gumbel_temperature, c.gumbel_temperature_decay)
        model.set_gumbel_temperature(tau)
        sync_layerdrop(model, self.train.seed, step)
        return {"temperature": tau}

    def forward(self, engine, batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = engine(
            **model_inputs(batch, device),
            labels=batch["labels"].to(device),
            labeled=batch["labeled"].to(device),
        )
        stats = {k: getattr(out, k) for k in ("ctc_loss", "contrastive_loss", "diversity_loss")}
        stats["perplexity"] = out.codevector_perplexity
        return out.loss, {k: v.detach().float() for k, v in stats.items() if v is not None}

    @torch.no_grad()
    def evaluate(self, engine, batches, device: torch.device) -> EvalResult:
        """Dev objective (dropout off) with time masks drawn from a fixed-seed generator: the same frames are
        masked at every evaluation, so dev losses are comparable over time."""
        base = engine.module.unispeech
        gen = torch.Generator(device=device).manual_seed(self.train.seed)
        sums = {"dev_loss": 0.0, "dev_ctc_loss": 0.0, "dev_contrastive_loss": 0.0, "dev_batches": 0.0}
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
            sums["dev_batches"] += 1
        return EvalResult(sums)

    def summarize(self, sums: dict[str, float], items: list[Any]) -> dict[str, float]:
        n = max(sums.get("dev_batches", 0.0), 1.0)
        return {k: v / n for k, v in sums.items() if k != "dev_batches"}
