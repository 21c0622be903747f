"""Evaluation results into MLflow: into the model's training run when it is known (and lives in this tracking
store), else into a new run tagged with the model path."""

from __future__ import annotations

import logging
import os

from unispeech_platform.config.sections import TrackingSection

log = logging.getLogger("unispeech.evaluate")
MODEL_TAG = "unispeech.model_path"


def checked_tracking_uri(section: TrackingSection) -> str | None:
    """The absolute tracking URI, checked reachable/writable (before Ray starts); None when tracking is off."""
    from unispeech_platform.tracking import check_reachable, resolve_tracking_uri

    if not section.enabled:
        return None
    uri = resolve_tracking_uri(section)
    check_reachable(uri, section.connect_timeout_s)
    return uri


def _existing_run(client, run_id: str | None) -> str | None:
    if not run_id:
        return None
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
        return run_id
    except MlflowException:
        log.warning("run %s (recorded with the model) is not in this tracking store: logging to a new run", run_id)
        return None


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
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from unispeech_platform.tracking.mlflow_tracker import JOB_TAG

    client = MlflowClient(tracking_uri=uri)
    existing = _existing_run(client, run_id)
    if existing is None:
        exp = client.get_experiment_by_name(section.experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(section.experiment)
        name = section.run_name or f"{job} {os.path.basename(model_path.rstrip('/'))}"
        run_id = client.create_run(exp_id, run_name=name, tags={MODEL_TAG: model_path, JOB_TAG: job}).info.run_id
    else:
        run_id = existing
        client.set_tag(run_id, f"{job}.model_path", model_path)
    from time import time

    now = int(time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    client.log_artifacts(run_id, out_dir, artifact_path)
    if existing is None:
        client.set_terminated(run_id, status="FINISHED")
    return run_id
