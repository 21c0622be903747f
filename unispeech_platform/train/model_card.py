"""The model card of a training job's export: the job's data, objective, dev scores and a command that trains
the same model again (unispeech_core.model_card renders it)."""

from __future__ import annotations

from typing import Any

from unispeech_core.model_card import ModelCard
from unispeech_platform.config.redact import redact_uri
from unispeech_platform.config.tasks import TASK_SPECS
from unispeech_platform.train.tasks.ctc import PER_BY_LANGUAGE


def _command(job: Any) -> str:
    """The job's entry point with the keys that make this model (the full resolved config is the MLflow run's
    config/resolved.yaml)."""
    keys = {"data.path": redact_uri(job.data.path), "checkpoint.name": job.checkpoint.name,
            "train.max_steps": job.train.max_steps}
    section, init_from = _init_from(job)
    if init_from:
        keys[f"{section}.init_from"] = redact_uri(init_from)
    sets = " ".join(f"--set {k}={v}" for k, v in keys.items())
    return f"python -m {TASK_SPECS[job.task].entrypoint} --config CONFIG.yaml {sets}"


def _init_from(job: Any) -> tuple[str, str | None]:
    """(section, model directory) the job started from: finetune.init_from, or a continued pretraining's."""
    for section in ("finetune", "pretrain"):
        init_from = getattr(getattr(job, section, None), "init_from", None)
        if init_from:
            return section, init_from
    return "finetune", None


def job_model_card(job: Any, step: int | None, dev: dict[str, float] | None = None) -> ModelCard:
    """``job``: a PretrainJobConfig/FinetuneJobConfig; ``dev``: the dev metrics at ``step`` (loss and score
    keys; counters such as dev_batches are left out)."""
    data = job.data
    langs = list(data.langs or [])
    items = [f"corpus `{redact_uri(data.path)}`",
             f"languages: {', '.join(langs) if langs else 'every language in the corpus'}",
             f"training splits: {', '.join(data.train_splits)}; dev splits: {', '.join(data.eval_splits)}"]
    dev = dev or {}
    per_by_language = {k[len(PER_BY_LANGUAGE):]: float(v) for k, v in dev.items() if k.startswith(PER_BY_LANGUAGE)}
    metrics = {k: float(v) for k, v in dev.items() if k.startswith("dev_") and not k.startswith(PER_BY_LANGUAGE)
               and k not in ("dev_batches", "dev_rows", "dev_correct")}
    _, init_from = _init_from(job)
    return ModelCard(name=job.checkpoint.name, task=job.task, data=items, languages=langs, step=step,
                     metrics=metrics, per_by_language=per_by_language, command=_command(job),
                     base_model=redact_uri(init_from) if init_from else None)
