"""``python -m jobs.evaluate``: model and corpus checks (no Ray) -> Ray Data inference on an actor pool -> jiwer
scores -> table, chart and MLflow."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from unispeech_platform.evaluate.config import EvaluateJobConfig
from unispeech_platform.evaluate.model_source import ModelLoadError, resolve_model
from unispeech_platform.evaluate.scoring import Score

log = logging.getLogger("unispeech.evaluate")


@dataclass
class EvaluationResult:
    scores: list[Score]
    metrics: dict[str, float]
    """What was logged to MLflow (per/<lang>, per/avg, per/weighted, ...)."""
    out_dir: str
    run_id: str | None
    tracking_uri: str | None
    table: str
    """The Markdown table."""


def run_evaluation(cfg: EvaluateJobConfig) -> EvaluationResult:
    from unispeech_platform.data.validate import check_corpus
    from unispeech_platform.evaluate.tracking import log_evaluation
    from unispeech_platform.runtime.ray_session import connect_ray, decide_use_gpu
    from unispeech_platform.tracking import checked_tracking_uri

    ev = cfg.evaluate
    out_dir = Path(ev.output_dir).resolve()
    model = resolve_model(ev.model_path, out_dir)  # raises ModelLoadError before any Ray work
    if model.architecture not in ("UniSpeechForCTC",):
        raise ModelLoadError(f"{model.model_dir}: a {model.architecture}; PER evaluation needs a UniSpeechForCTC model")
    check_corpus(cfg.data, ev.splits)  # CorpusError naming the file before Ray starts
    uri = checked_tracking_uri(cfg.tracking)

    connect_ray(cfg.ray)
    from unispeech_platform.evaluate.inference import CTCPredictor, data_for_actors, run_inference
    from unispeech_platform.evaluate.report import markdown_table, write_per_report
    from unispeech_platform.evaluate.scoring import per_metrics, score_per

    predictions = run_inference(
        data_for_actors(cfg.data, labeled_only=True), ev.splits, model.model_dir, CTCPredictor, num_actors=ev.num_actors,
        cpus_per_actor=ev.cpus_per_actor, use_gpu=decide_use_gpu(ev.use_gpu, ev.num_actors), batch_rows=ev.batch_rows,
    )
    scores = score_per(predictions)
    metrics = per_metrics(scores)
    write_per_report(scores, predictions, out_dir, ev.model_path)
    run_id = None
    if uri is not None:
        run_id = log_evaluation(
            uri, cfg.tracking, run_id=ev.run_id or model.run_id, model_path=ev.model_path, metrics=metrics,
            out_dir=str(out_dir), artifact_path="evaluation", job="evaluate",
        )
    return EvaluationResult(scores, metrics, str(out_dir), run_id, uri, markdown_table(scores))
