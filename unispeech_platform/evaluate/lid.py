"""Language identification: fine-tune UniSpeechForSequenceClassification to tell the corpus' languages apart,
then score it with accuracy and a confusion matrix.

- ``LIDTask``: the train-loop task (registered as ``lid`` in ``unispeech_platform.train.tasks.make_task``); it
  shares CTC fine-tuning's freezing schedule and replaces the head, the loss and the dev score.
- ``prepare_lid_job``: driver side, before Ray: the label set (data.langs, else every language of the corpus)
  becomes the model's ``id2label``.
- ``evaluate_lid``: Ray Data inference of the exported model on the eval splits, accuracy per language,
  confusion-matrix plot, logged into the training run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unispeech_platform.train.tasks import CTCTask, model_inputs


class LIDTask(CTCTask):
    """Utterance-level language classification with cross-entropy over ``config.id2label``."""

    metric_keys = ("loss",)
    score_key = "dev_error"  # the loop keeps the model with the lowest score: 1 - accuracy

    def model_class(self) -> type[nn.Module]:
        from unispeech_core import UniSpeechForSequenceClassification

        return UniSpeechForSequenceClassification

    def build_model(self) -> nn.Module:
        if not self.model_overrides.get("id2label"):
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
    def evaluate(self, engine, batches, device: torch.device) -> dict[str, float]:
        sums = {"dev_loss": 0.0, "dev_batches": 0.0, "dev_correct": 0.0, "dev_rows": 0.0}
        for batch in batches:
            labels = self._labels(batch, device)
            out = engine(**model_inputs(batch, device), labels=labels)
            sums["dev_loss"] += float(out.loss)
            sums["dev_batches"] += 1
            sums["dev_correct"] += float((out.logits.argmax(-1) == labels).sum())
            sums["dev_rows"] += len(labels)
        return sums

    @staticmethod
    def summarize(sums: dict[str, Any], gathered: list[Any] | None = None) -> dict[str, float]:
        accuracy = sums["dev_correct"] / max(sums["dev_rows"], 1.0)
        return {"dev_loss": sums["dev_loss"] / max(sums["dev_batches"], 1.0), "dev_accuracy": accuracy,
                "dev_error": 1.0 - accuracy}


def corpus_languages(job) -> list[str]:
    """data.langs, else every language with a train split in the corpus (sorted)."""
    if job.data.langs:
        return sorted(job.data.langs)
    from unispeech_platform.data.schema import scan_corpus

    return sorted({p.lang for p in scan_corpus(job.data.path, check_schema=False) if p.split in job.data.train_splits})


def prepare_lid_job(job):
    """The fine-tuning job with task lid and the label set in model.id2label (validated again)."""
    langs = corpus_languages(job)
    if len(langs) < 2:
        raise ValueError(f"language ID needs at least two languages, the corpus has {langs}")
    raw = job.model_dump(mode="json")
    raw["model"]["id2label"] = {str(i): lang for i, lang in enumerate(langs)}
    raw["finetune"]["task"] = "lid"
    return type(job).model_validate(raw)


@dataclass
class LIDReport:
    accuracy: float
    per_language: dict[str, float]
    labels: list[str]
    confusion: list[list[int]]
    """confusion[i][j]: utterances of labels[i] predicted as labels[j]."""
    out_dir: str

    def metrics(self) -> dict[str, float]:
        return {"lid/accuracy": self.accuracy, **{f"lid/accuracy/{k}": v for k, v in self.per_language.items()}}


def score_lid(predictions, labels: list[str]) -> tuple[float, dict[str, float], list[list[int]]]:
    good = predictions[predictions["error"].isna()]
    if good.empty:
        raise ValueError("no utterances to score")
    index = {lang: i for i, lang in enumerate(labels)}
    confusion = [[0] * len(labels) for _ in labels]
    for ref, hyp in zip(good["ref"], good["hyp"]):
        confusion[index[ref]][index[hyp]] += 1
    per_lang = {lang: confusion[i][i] / sum(confusion[i]) for i, lang in enumerate(labels) if sum(confusion[i])}
    return float((good["ref"] == good["hyp"]).mean()), per_lang, confusion


def evaluate_lid(job, model_dir: str, out_dir: str | Path, *, uri: str | None, run_id: str | None) -> LIDReport:
    """Accuracy + confusion matrix of an exported LID model on job.data.eval_splits (Ray must be connected)."""
    import json

    from unispeech_core import UniSpeechConfig
    from unispeech_platform.evaluate.inference import LIDPredictor, run_inference
    from unispeech_platform.evaluate.job import absolute_data
    from unispeech_platform.evaluate.report import confusion_plot

    labels = [v for _, v in sorted(UniSpeechConfig.from_pretrained(model_dir).id2label.items())]
    data = absolute_data(job.data).model_copy(update={"labeled_only": False})
    predictions = run_inference(data, list(job.data.eval_splits), model_dir, LIDPredictor)
    accuracy, per_lang, confusion = score_lid(predictions, labels)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = LIDReport(accuracy, per_lang, labels, confusion, str(out))
    (out / "lid.json").write_text(json.dumps(report.__dict__, indent=1), encoding="utf-8")
    predictions.to_json(out / "predictions.jsonl", orient="records", lines=True, force_ascii=False)
    confusion_plot(labels, confusion, out / "confusion.png", f"LID accuracy {100 * accuracy:.1f}% ({model_dir})")
    if uri is not None:
        from unispeech_platform.evaluate.tracking import log_evaluation

        log_evaluation(uri, job.tracking, run_id=run_id, model_path=model_dir, metrics=report.metrics(),
                       out_dir=str(out), artifact_path="lid", job="lid")
    return report
