"""What is trained: a Task builds the model from its UniSpeechConfig, computes the loss of a batch, applies
per-update schedules (Gumbel temperature, freezing, LayerDrop sync) and scores the dev split.

The train loop is task-agnostic; adding a task (e.g. language ID with UniSpeechForSequenceClassification) means
adding a class here and a name in `make_task`, nothing else.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from unispeech_platform.config.sections import FinetuneSection, TrainSection
from unispeech_platform.train.deepspeed_setup import autocast

log = logging.getLogger(__name__)
SAMPLE_RATE = 16_000


def model_inputs(batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: batch[k].to(device) for k in ("input_values", "attention_mask") if batch.get(k) is not None}


def _sync_layerdrop(model: nn.Module, seed: int, step: int) -> None:
    """Every rank drops the same layers at a step (mismatched collectives otherwise hang/abort)."""
    if hasattr(model, "set_layerdrop_generator"):
        model.set_layerdrop_generator(torch.Generator().manual_seed(seed * 1_000_003 + step))


class PretrainTask:
    """UniSpeech multitask pretraining: α·CTC + (1−α)·(contrastive + w·diversity), labeled + unlabeled rows."""

    metric_keys = ("loss", "ctc_loss", "contrastive_loss", "diversity_loss", "perplexity")
    score_key = "dev_loss"

    def __init__(self, model_overrides: dict[str, Any], train: TrainSection):
        self.model_overrides = model_overrides
        self.train = train
        self.config = None

    def build_model(self) -> nn.Module:
        from unispeech_core import UniSpeechConfig, UniSpeechForPreTraining

        model = UniSpeechForPreTraining(UniSpeechConfig(**self.model_overrides))
        self.config = model.config
        return model

    def before_update(self, model: nn.Module, step: int) -> dict[str, float]:
        from unispeech_core.quantizer import gumbel_temperature

        c = self.config
        tau = gumbel_temperature(step, c.max_gumbel_temperature, c.min_gumbel_temperature, c.gumbel_temperature_decay)
        model.set_gumbel_temperature(tau)
        _sync_layerdrop(model, self.train.seed, step)
        return {"temperature": tau}

    def forward(self, engine, batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with autocast(self.train):
            out = engine(
                **model_inputs(batch, device),
                labels=batch["labels"].to(device),
                labeled=batch["labeled"].to(device),
            )
        stats = {k: getattr(out, k) for k in ("ctc_loss", "contrastive_loss", "diversity_loss")}
        stats["perplexity"] = out.codevector_perplexity
        return out.loss, {k: v.detach().float() for k, v in stats.items() if v is not None}

    @torch.no_grad()
    def evaluate(self, engine, batches, device: torch.device) -> dict[str, float]:
        """Dev objective (dropout off) with time masks drawn from a fixed-seed generator, summed for an
        all-reduce: the same frames are masked at every evaluation, so dev losses are comparable over time."""
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
            loss = out.loss
            stats = {"ctc_loss": out.ctc_loss, "contrastive_loss": out.contrastive_loss}
            stats = {k: v for k, v in stats.items() if v is not None}
            if loss is None or not torch.isfinite(loss):
                continue
            sums["dev_loss"] += float(loss)
            sums["dev_ctc_loss"] += float(stats.get("ctc_loss", torch.zeros(())))
            sums["dev_contrastive_loss"] += float(stats.get("contrastive_loss", torch.zeros(())))
            sums["dev_batches"] += 1
        return sums

    @staticmethod
    def summarize(sums: dict[str, float], gathered: list[Any] | None = None) -> dict[str, float]:
        n = max(sums.pop("dev_batches"), 1.0)
        return {k: v / n for k, v in sums.items()}


class CTCTask:
    """Phone CTC fine-tuning: feature encoder frozen, transformer frozen for the first K updates."""

    metric_keys = ("loss",)
    score_key = "dev_per"

    def __init__(self, model_overrides: dict[str, Any], train: TrainSection, finetune: FinetuneSection, tokenizer):
        self.model_overrides = model_overrides
        self.config = None
        self.train = train
        self.finetune = finetune
        self.tokenizer = tokenizer
        self._base_frozen = False
        self._hooks: list[Any] = []

    def model_class(self) -> type[nn.Module]:
        """The head fine-tuned on top of the (pretrained) encoder; subclasses swap it."""
        from unispeech_core import UniSpeechForCTC

        return UniSpeechForCTC

    def build_model(self) -> nn.Module:
        cls = self.model_class()
        src = self.finetune.init_from
        if src:  # a pretrained or fine-tuned model: the encoder is reused, a missing head starts fresh
            model = cls.from_pretrained(load_dir(src), **self.model_overrides)
        else:
            from unispeech_core import UniSpeechConfig

            model = cls(UniSpeechConfig(**self.model_overrides))
        if self.finetune.freeze_feature_encoder:
            model.freeze_feature_encoder()
        self.config = model.config
        return model

    def before_update(self, model: nn.Module, step: int) -> dict[str, float]:
        _sync_layerdrop(model, self.train.seed, step)
        frozen = step < self.finetune.freeze_transformer_steps
        if frozen != self._base_frozen:
            self._set_base_frozen(model, frozen)
        return {"transformer_frozen": float(frozen)}

    def _set_base_frozen(self, model: nn.Module, frozen: bool) -> None:
        """Run the base model without autograd while frozen: parameters stay registered with the (ZeRO)
        optimizer — toggling requires_grad after deepspeed.initialize is not safe — but receive no gradient."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        if frozen:
            base = model.unispeech
            self._hooks = [
                base.register_forward_pre_hook(_grad_off),
                base.register_forward_hook(_grad_back_on),
            ]
        self._base_frozen = frozen

    def forward(self, engine, batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with autocast(self.train):
            out = engine(**model_inputs(batch, device), labels=batch["labels"].to(device))
        return out.loss, {}

    @torch.no_grad()
    def evaluate(self, engine, batches, device: torch.device) -> dict[str, Any]:
        """Greedy-decoded dev transcripts; PER is computed after gathering all ranks' pairs."""
        from unispeech_core.decoding import ctc_greedy_decode

        module = engine.module
        pairs: list[tuple[str, str]] = []
        loss_sum, n = 0.0, 0
        for batch in batches:
            inputs = model_inputs(batch, device)
            out = engine(**inputs, labels=batch["labels"].to(device))
            if torch.isfinite(out.loss):
                loss_sum, n = loss_sum + float(out.loss), n + 1
            lengths = module.unispeech._get_feat_extract_output_lengths(inputs["attention_mask"].sum(-1))
            hyps = ctc_greedy_decode(out.logits.float(), lengths, self.tokenizer)
            for labels, hyp in zip(batch["labels"], hyps):
                pairs.append((self.tokenizer.decode([int(i) for i in labels if i >= 0]), hyp))
        return {"dev_loss": loss_sum, "dev_batches": float(n), "pairs": pairs}

    @staticmethod
    def summarize(sums: dict[str, Any], gathered: list[Any] | None = None) -> dict[str, float]:
        from unispeech_core.metrics import error_rates

        pairs = [p for rank_pairs in (gathered or [sums["pairs"]]) for p in rank_pairs]
        out = {"dev_loss": sums["dev_loss"] / max(sums["dev_batches"], 1.0)}
        pairs = [(r, h) for r, h in pairs if r.strip()]  # unlabeled dev rows cannot be scored
        if pairs:
            out["dev_per"] = float(error_rates([r for r, _ in pairs], [h for _, h in pairs])["error_rate"])
        return out


def _grad_off(module: nn.Module, args: Any) -> None:
    torch.set_grad_enabled(False)


def _grad_back_on(module: nn.Module, args: Any, output: Any) -> None:
    torch.set_grad_enabled(module.training)  # eval runs under no_grad anyway


def load_dir(src: str) -> str:
    """A transformers-format directory to load weights from: the path itself, or the `model/` export inside one
    of our job directories."""
    import os

    for candidate in (src, os.path.join(src, "model")):
        if os.path.isfile(os.path.join(candidate, "config.json")):
            return candidate
    raise FileNotFoundError(f"finetune.init_from={src!r}: no config.json there or in {src}/model")


def make_task(kind: str, model_overrides: dict[str, Any], train: TrainSection, finetune: FinetuneSection | None = None, tokenizer=None):
    if kind == "pretrain":
        return PretrainTask(model_overrides, train)
    if kind == "ctc":
        return CTCTask(model_overrides, train, finetune, tokenizer)
    if kind == "lid":
        from unispeech_platform.evaluate.lid import LIDTask

        return LIDTask(model_overrides, train, finetune, tokenizer)
    raise ValueError(f"unknown task {kind!r} (known: pretrain, ctc, lid)")
