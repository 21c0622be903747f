"""Scoring a language-identification model (trained by the ``lid`` task in ``train.tasks.lid``): Ray Data
inference of the exported model on the eval splits, accuracy per language, a confusion matrix and its plot,
logged into the training run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from unispeech_platform.config.jobs import FinetuneJobConfig
from unispeech_platform.runtime.layout import RunLayout


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


def evaluate_lid(job: FinetuneJobConfig, model_dir: str, out_dir: str | Path, *, uri: str | None, run_id: str | None) -> LIDReport:
    """Accuracy + confusion matrix of an exported LID model on job.data.eval_splits (Ray must be connected)."""
    import json

    from unispeech_core import UniSpeechConfig
    from unispeech_platform.evaluate.inference import LIDPredictor, data_for_actors, run_inference
    from unispeech_platform.evaluate.report import LID_FILES, confusion_plot, lid_report_made
    from unispeech_platform.runtime.output_paths import open_output_dir
    from unispeech_platform.runtime.ray_session import decide_use_gpu

    labels = [v for _, v in sorted(UniSpeechConfig.from_pretrained(model_dir).id2label.items())]
    data = data_for_actors(job.data, labeled_only=False)  # language labels come from the partitions
    predictions = run_inference(data, list(job.data.eval_splits), model_dir, LIDPredictor,
                                use_gpu=decide_use_gpu(None, 1))
    accuracy, per_lang, confusion = score_lid(predictions, labels)
    output, _ = open_output_dir(out_dir, "lid", overwrite=None, legacy=lid_report_made, flag="LID report directory")
    out = output.root
    report = LIDReport(accuracy, per_lang, labels, confusion, str(out))
    json_name, predictions_name, chart_name = LID_FILES
    output.claim(json_name).write_text(json.dumps(report.__dict__, indent=1), encoding="utf-8")
    predictions.to_json(output.claim(predictions_name), orient="records", lines=True, force_ascii=False)
    confusion_plot(labels, confusion, output.claim(chart_name), f"LID accuracy {100 * accuracy:.1f}% ({model_dir})")
    if uri is not None:
        from unispeech_platform.evaluate.model_source import recorded_training
        from unispeech_platform.evaluate.tracking import log_evaluation

        step = recorded_training(Path(model_dir))[1]  # nested under the training run, at the model's update
        log_evaluation(uri, job.tracking, run_id=run_id, model_path=model_dir, metrics=report.metrics(),
                       out_dir=str(out), artifact_path="lid", job="lid", step=step)
    return report


def lid_report_dir(job: FinetuneJobConfig) -> str:
    """Where the LID report of a training run goes: <run dir>/lid."""
    return RunLayout.of(job.checkpoint).output_dir("lid")
