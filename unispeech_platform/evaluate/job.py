"""``python -m jobs.evaluate``: model and corpus checks (no Ray) -> Ray Data inference on an actor pool -> jiwer
scores -> table, chart and MLflow."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from unispeech_core import PhoneTokenizer
from unispeech_core.tokenizer import VOCAB_NAME
from unispeech_platform.evaluate.config import EvaluateJobConfig, scored_architectures
from unispeech_platform.evaluate.model_source import EVALUATE_JOB, ModelLoadError, resolve_model
from unispeech_platform.evaluate.references import is_character_model, read_references, reference_vocab
from unispeech_platform.evaluate.report import REFERENCE_VOCAB, per_report_made
from unispeech_platform.evaluate.scoring import Score
from unispeech_platform.runtime.output_parent import check_output_parent
from unispeech_platform.runtime.output_paths import OutputDir, open_output_dir

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
    step: int | None = None
    """The training update the evaluated model is from, when recorded (its MLflow metrics' step)."""


def run_evaluation(cfg: EvaluateJobConfig) -> EvaluationResult:
    """Score the model; its MLflow run (evaluate/tracking.py) is opened before the work, nested under the training
    run at the model's update, and closed FINISHED with the results or FAILED."""
    from unispeech_platform.data.validate import check_corpus
    from unispeech_platform.evaluate.report import LEGEND, markdown_table
    from unispeech_platform.evaluate.tracking import EvaluationRun
    from unispeech_platform.tracking import checked_tracking_uri, resolve_tracking_uri

    ev = cfg.evaluate
    check_output_parent(ev.output_dir, "evaluate.output_dir", makes_parents=True, is_file=False)
    output, _ = open_output_dir(ev.output_dir, EVALUATE_JOB, overwrite=None, legacy=per_report_made,
                                flag="evaluate.output_dir")  # before any Ray work, as the model check
    out_dir = output.root
    model = resolve_model(ev.model_path, lambda: output,  # raises ModelLoadError before any Ray work
                          tracking_uri=resolve_tracking_uri(cfg.tracking))
    if model.architecture not in scored_architectures("per"):
        raise ModelLoadError(f"{model.model_dir}: a {model.architecture}; PER evaluation needs a "
                             f"{' or '.join(scored_architectures('per'))} model")
    model_vocab = PhoneTokenizer.from_file(model.model_dir).vocab
    # The model's vocabulary decides: the corpus may have none or a different one (docs/evaluation.md).
    data = cfg.data.model_copy(update={"vocab_path": str(Path(model.model_dir) / VOCAB_NAME)})
    parts = check_corpus(data, ev.splits)  # CorpusError naming the file before Ray starts
    uri = checked_tracking_uri(cfg.tracking)
    texts, corpus_phones = read_references(parts)
    ref_vocab, oov = reference_vocab(model_vocab, corpus_phones, output.claim(REFERENCE_VOCAB))
    if oov:
        log.warning("%d corpus phones are not in the model's vocabulary (scored as errors, counted per language): %s",
                    len(oov), " ".join(oov))
    data = data.model_copy(update={"vocab_path": str(ref_vocab)})
    run = None
    if uri is not None:
        run = EvaluationRun.open(uri, cfg.tracking, training_run=ev.run_id or model.run_id, model_path=ev.model_path,
                                 step=model.step, job="evaluate", artifact_path="evaluation", out_dir=str(out_dir))
    try:
        scores, metrics = _score(cfg, data, model, model_vocab, texts, output)
    except BaseException:
        if run is not None:
            run.finish(ok=False)
        raise
    if run is not None:
        run.finish(ok=True, metrics=metrics, dataset=corpus_input(cfg.data, ev.splits))
    return EvaluationResult(scores, metrics, str(out_dir), run.run_id if run else None, uri,
                            f"{LEGEND}\n\n{markdown_table(scores)}", model.step)


def corpus_input(data, splits: list[str]) -> dict | None:
    """The evaluated splits as the run's dataset input (data/dataset_record.py); None when it cannot be read."""
    from unispeech_platform.data.dataset_record import describe_corpus

    try:
        return describe_corpus(data, list(splits)).as_dict()
    except (OSError, ValueError) as e:  # CorpusError is a ValueError
        log.warning("the corpus is not recorded as the run's dataset input: %s", e)
        return None


def _score(cfg: EvaluateJobConfig, data, model, model_vocab, texts, output: OutputDir):
    """Inference on Ray, scores and the report files: (scores, metrics)."""
    from unispeech_platform.runtime.ray_session import connect_ray, decide_use_gpu

    ev = cfg.evaluate
    connect_ray(cfg.ray)
    from unispeech_platform.evaluate.inference import CTCPredictor, data_for_actors, run_inference
    from unispeech_platform.evaluate.report import write_per_report
    from unispeech_platform.evaluate.scoring import per_metrics, score_per, tokens_to_text

    predictions = run_inference(
        data_for_actors(data, labeled_only=True), ev.splits, model.model_dir, CTCPredictor, num_actors=ev.num_actors,
        cpus_per_actor=ev.cpus_per_actor, use_gpu=decide_use_gpu(ev.use_gpu, ev.num_actors), batch_rows=ev.batch_rows,
    )
    if texts and is_character_model(model_vocab):
        predictions["ref_text"] = predictions["id"].map(texts)
        predictions["hyp_text"] = predictions["hyp"].map(tokens_to_text, na_action="ignore")
    scores = score_per(predictions, set(model_vocab))
    metrics = per_metrics(scores)
    write_per_report(scores, predictions, output, ev.model_path)
    return scores, metrics
