"""Evaluation results into MLflow: into the model's training run when it is known (and lives in this tracking
store), else into a new run tagged with the model path."""

from __future__ import annotations

import logging
import os
from typing import Any, Protocol

from unispeech_platform.config.sections import TrackingSection
from unispeech_platform.tracking import JOB_TAG, RunStore

log = logging.getLogger("unispeech.evaluate")
MODEL_TAG = "unispeech.model_path"


class RunWriter(Protocol):
    """What recording an evaluation needs of a store: RunStore (live) or RunTracking (best effort: an outage
    keeps the records for a later replay)."""

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None: ...
    def log_metrics(self, run_id: str, metrics: dict[str, float | None], step: int) -> None: ...
    def log_artifacts(self, run_id: str, local: str, artifact_path: str | None) -> None: ...


def record_evaluation(store: RunWriter, run_id: str, *, model_path: str, metrics: dict[str, float], out_dir: str,
                      artifact_path: str, job: str) -> None:
    """Into an existing run: the model path as a tag, metrics at step 0, every file of ``out_dir`` under
    ``artifact_path``."""
    store.set_tags(run_id, {f"{job}.model_path": model_path})
    store.log_metrics(run_id, metrics, 0)
    store.log_artifacts(run_id, out_dir, artifact_path)


def log_evaluation(
    uri: str,
    section: TrackingSection,
    *,
    run_id: str | None,
    model_path: str,
    metrics: dict[str, float],
    out_dir: str,
    artifact_path: str,
    job: str,
) -> str:
    """Log metrics (step 0) and every file of ``out_dir`` under ``artifact_path``; returns the run id."""
    store = RunStore(uri)
    existing = store.exists(run_id)
    if run_id and not existing:
        log.warning("run %s (recorded with the model) is not in this tracking store: logging to a new run", run_id)
    if existing:
        record_evaluation(store, run_id, model_path=model_path, metrics=metrics, out_dir=out_dir,
                          artifact_path=artifact_path, job=job)
        return run_id
    name = section.run_name or f"{job} {os.path.basename(model_path.rstrip('/'))}"
    run_id = store.create_run(store.experiment_id(section.experiment), name, tags={MODEL_TAG: model_path, JOB_TAG: job})
    store.log_metrics(run_id, metrics, 0)
    store.log_artifacts(run_id, out_dir, artifact_path)
    store.finish(run_id, "FINISHED")
    return run_id
