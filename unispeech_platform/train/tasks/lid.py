"""Language identification as a training task: UniSpeechForSequenceClassification over ``config.id2label``,
sharing CTC fine-tuning's initialisation and freezing; the model with the highest dev accuracy is kept.

``prepare_lid_job`` (driver side, before Ray) turns the corpus languages into the model's label set.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from unispeech_core import UniSpeechForSequenceClassification
from unispeech_platform.config.jobs import FinetuneJobConfig
from unispeech_platform.runtime.errors import JobSetupError
from unispeech_platform.train.tasks.base import EvalResult, model_inputs
from unispeech_platform.train.tasks.ctc import CTCTask


class LIDTask(CTCTask):
    """Utterance-level language classification with cross-entropy."""

    score_key = "dev_accuracy"
    score_mode = "max"
    keeps_best = True

    def model_class(self) -> type[nn.Module]:
        return UniSpeechForSequenceClassification

    def build_model(self) -> nn.Module:
        if not self.model.id2label:
            raise ValueError("task 'lid' needs model.id2label (python -m jobs.lid fills it from the corpus languages)")
        model = super().build_model()
        self.label2id = model.config.label2id
        return model

    def _labels(self, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
        return torch.tensor([self.label2id[lang] for lang in batch["lang"]], dtype=torch.long, device=device)

    def forward(self, engine, batch: dict[str, Any], device: torch.device):
        out = engine(**model_inputs(batch, device), labels=self._labels(batch, device))
        return out.loss, {}

    @torch.no_grad()
    def evaluate(self, engine, batches, device: torch.device) -> EvalResult:
        sums = {"dev_loss": 0.0, "dev_batches": 0.0, "dev_correct": 0.0, "dev_rows": 0.0}
        for batch in batches:
            labels = self._labels(batch, device)
            out = engine(**model_inputs(batch, device), labels=labels)
            sums["dev_loss"] += float(out.loss)
            sums["dev_batches"] += 1
            sums["dev_correct"] += float((out.logits.argmax(-1) == labels).sum())
            sums["dev_rows"] += len(labels)
        return EvalResult(sums)

    def summarize(self, sums: dict[str, float], items: list[Any]) -> dict[str, float]:
        return {"dev_loss": sums["dev_loss"] / max(sums["dev_batches"], 1.0),
                "dev_accuracy": sums["dev_correct"] / max(sums["dev_rows"], 1.0)}


def corpus_languages(job: FinetuneJobConfig) -> list[str]:
    """data.langs, else every language with a train split in the corpus (sorted)."""
    if job.data.langs:
        return sorted(job.data.langs)
    from unispeech_platform.data.schema import scan_corpus

    return sorted({p.lang for p in scan_corpus(job.data.path, check_schema=False) if p.split in job.data.train_splits})


def prepare_lid_job(job: FinetuneJobConfig) -> FinetuneJobConfig:
    """The fine-tuning job with task lid and the label set in model.id2label (validated again)."""
    langs = corpus_languages(job)
    if len(langs) < 2:
        raise JobSetupError(f"language ID needs at least two languages, the corpus {job.data.path} has {langs}")
    raw = job.model_dump(mode="json")
    raw["model"]["id2label"] = {str(i): lang for i, lang in enumerate(langs)}
    raw["finetune"]["task"] = "lid"
    return type(job).model_validate(raw)
