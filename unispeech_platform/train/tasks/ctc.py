"""Phone CTC fine-tuning: feature encoder frozen, transformer frozen for the first K updates, the model with
the lowest dev PER kept."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from unispeech_core import PhoneTokenizer, UniSpeechConfig, UniSpeechForCTC
from unispeech_core.decoding import ctc_greedy_decode
from unispeech_core.metrics import error_rates
from unispeech_platform.config.model import ModelSection
from unispeech_platform.config.sections import FinetuneSection, TrainSection
from unispeech_platform.train.checkpoint import init_model_dir
from unispeech_platform.train.tasks.base import EvalResult, ctc_blank_share, model_inputs, sync_layerdrop


class CTCTask:
    score_key = "dev_per"
    score_mode = "min"
    keeps_best = True

    def __init__(self, model: ModelSection, train: TrainSection, finetune: FinetuneSection,
                 tokenizer: PhoneTokenizer | None):
        self.model = model
        self.config: UniSpeechConfig | None = None
        self.train = train
        self.finetune = finetune
        self.tokenizer = tokenizer
        self._base_frozen = False
        self._trainable_base: list[nn.Parameter] = []

    def model_class(self) -> type[nn.Module]:
        """The head fine-tuned on top of the (pretrained) encoder; subclasses swap it."""
        return UniSpeechForCTC

    def build_model(self) -> nn.Module:
        cls = self.model_class()
        src = self.finetune.init_from
        vocab = self.tokenizer.vocab if self.tokenizer is not None else None
        if src:  # a pretrained or fine-tuned model: the encoder must match exactly, a missing head starts fresh
            with init_model_dir(src) as model_dir:  # a training checkpoint: consolidated while loading
                model = cls.from_pretrained(model_dir, allow_new_head=True, **self.model.settings(vocab))
        else:
            model = cls(self.model.unispeech_config(vocab))
        if self.finetune.freeze_feature_encoder:
            model.freeze_feature_encoder()
        # What freeze_transformer_steps toggles: the base model's parameters that are not frozen for good.
        self._trainable_base = [p for p in model.unispeech.parameters() if p.requires_grad]
        self.config = model.config
        return model

    def before_update(self, model: nn.Module, step: int) -> dict[str, float]:
        sync_layerdrop(model, self.train.seed, step)
        frozen = step < self.finetune.freeze_transformer_steps
        if frozen != self._base_frozen:
            self._set_base_frozen(frozen)
        return {"transformer_frozen": float(frozen)}

    def _set_base_frozen(self, frozen: bool) -> None:
        """Frozen parameters get requires_grad=False: autograd computes no gradient for them. They stay
        registered with the (ZeRO) optimizer, which was built while they were trainable (the engine is built
        before the first update), and receive no update from a gradient while frozen."""
        for p in self._trainable_base:
            p.requires_grad_(not frozen)
        self._base_frozen = frozen

    def forward(self, engine, batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inputs, labels = model_inputs(batch, device), batch["labels"].to(device)
        out = engine(**inputs, labels=labels)
        return out.loss, ctc_blank_share(engine, out.logits, inputs, (labels >= 0).any(-1), self.config.pad_token_id)

    @torch.no_grad()
    def evaluate(self, engine, batches, device: torch.device) -> EvalResult:
        """Greedy-decoded dev transcripts with their language, gathered from every rank before PER is computed."""
        module = engine.module
        pairs: list[tuple[str, str, str]] = []
        loss_sum, n = 0.0, 0
        for batch in batches:
            inputs = model_inputs(batch, device)
            out = engine(**inputs, labels=batch["labels"].to(device))
            if torch.isfinite(out.loss):
                loss_sum, n = loss_sum + float(out.loss), n + 1
            lengths = module.unispeech._get_feat_extract_output_lengths(inputs["attention_mask"].sum(-1))
            hyps = ctc_greedy_decode(out.logits.float(), lengths, self.tokenizer)
            for lang, labels, hyp in zip(batch["lang"], batch["labels"], hyps):
                pairs.append((lang, self.tokenizer.decode([int(i) for i in labels if i >= 0]), hyp))
        return EvalResult({"dev_loss": loss_sum, "dev_batches": float(n)}, pairs)

    def summarize(self, sums: dict[str, float], items: list[Any]) -> dict[str, float]:
        """dev_loss, dev_per over every scored row and ``dev_per/<lang>`` per language (the model card's table)."""
        out = {"dev_loss": sums["dev_loss"] / max(sums["dev_batches"], 1.0)}
        scored = [(lang, r, h) for lang, r, h in items if r.strip()]  # unlabeled dev rows cannot be scored
        if scored:
            out["dev_per"] = _per(scored)
            for lang in sorted({lang for lang, _, _ in scored}):
                out[f"{PER_BY_LANGUAGE}{lang}"] = _per([t for t in scored if t[0] == lang])
        return out


PER_BY_LANGUAGE = "dev_per/"  # metric prefix of the per-language dev PER


def _per(triples: list[tuple[str, str, str]]) -> float:
    return float(error_rates([r for _, r, _ in triples], [h for _, _, h in triples])["error_rate"])
