"""Evaluation results into MLflow: an evaluation is a run of its own, nested under the run that trained the model
(``mlflow.parentRunId``, in that run's experiment) when that run is known and lives in this tracking store, its
metrics logged at the update the model is from, so they line up with the training curves
(docs/training.md#mlflow). A model without a known training run gets a top-level run (step 0 when its update is
not known either); with $MLFLOW_RUN_ID set the evaluation records into that run.

The run is created while the server answers (at the job's start); what follows goes through RunTracking, so an
outage keeps the records for a replay (docs/training.md#tracking-outages)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from unispeech_platform.config.redact import redact_uri
from unispeech_platform.config.sections import TrackingSection
from unispeech_platform.tracking import (
    JOB_TAG,
    RunStore,
    RunTracking,
    TrackingError,
    given_run_id,
    resolve_experiment,
)
from unispeech_platform.tracking.retry import with_retries

log = logging.getLogger("unispeech.evaluate")
MODEL_TAG = "unispeech.model_path"
STEP_TAG = "unispeech.model_step"
"""The training update the evaluated model is from (its metrics are logged at that step)."""


class RunWriter(Protocol):
    """What recording an evaluation needs of a store: RunStore (live) or RunTracking (best effort: an outage
    keeps the records for a later replay)."""

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None: ...
    def log_metrics(self, run_id: str, metrics: dict[str, float | None], step: int) -> None: ...
    def log_artifacts(self, run_id: str, local: str, artifact_path: str | None) -> None: ...


def spool_dir(out_dir: str | os.PathLike) -> str:
    """Where an evaluation's records wait while the server is away: beside its output directory, not in it (the
    output directory is uploaded as the run's artifacts)."""
    out = Path(out_dir).resolve()
    return str(out.with_name(f".{out.name}.mlflow"))


def record_evaluation(store: RunWriter, run_id: str, *, model_path: str, metrics: dict[str, float], out_dir: str,
                      artifact_path: str, job: str, step: int | None = None) -> None:
    """Into an existing run: the model path (and update) as tags, metrics at ``step`` (the model's training
    update; 0 when unknown), every file of ``out_dir`` under ``artifact_path``."""
    tags = {f"{job}.model_path": model_path, **({STEP_TAG: str(step)} if step is not None else {})}
    store.set_tags(run_id, tags)
    store.log_metrics(run_id, metrics, step or 0)
    store.log_artifacts(run_id, out_dir, artifact_path)


def open_evaluation(uri: str, section: TrackingSection, *, training_run: str | None, model_path: str, job: str,
                    step: int | None) -> str:
    """The evaluation's run, RUNNING: $MLFLOW_RUN_ID, else a new run nested under ``training_run`` (when that run
    is in this store), else a new top-level run in tracking.experiment. TrackingError (exit 3) when the server
    does not answer."""
    store = RunStore(uri)
    tags = {MODEL_TAG: model_path, JOB_TAG: job, **({STEP_TAG: str(step)} if step is not None else {})}

    def open_run() -> str:
        if given := given_run_id():
            store.run(given)  # not in this store: the job fails at its start
            store.set_tags(given, tags)
            return store.reopen(given)
        parent = training_run if store.exists(training_run) else None
        if training_run and parent is None:
            log.warning("run %s (recorded with the model) is not in this tracking store: the evaluation's run is "
                        "not nested under it", training_run)
        experiment = (store.run(parent).info.experiment_id if parent
                      else store.experiment_id(resolve_experiment(section)))
        name = section.run_name or f"{job} {os.path.basename(model_path.rstrip('/'))}"
        return store.create_run(experiment, name, parent=parent, tags=tags)

    try:
        return with_retries(open_run)
    except Exception as e:
        raise TrackingError(f"cannot open the MLflow run of the {job} in {redact_uri(uri)}: "
                            f"{redact_uri(str(e))[:300]}") from None


def finish_evaluation(tracking: RunTracking, run_id: str, *, ok: bool, model_path: str, metrics: dict[str, float],
                      out_dir: str, artifact_path: str, job: str, step: int | None,
                      dataset: dict[str, Any] | None = None) -> None:
    """Best effort: the results (when ``ok``), the corpus as the run's evaluation dataset input, and the status;
    a warning names what an outage keeps."""
    if ok:
        record_evaluation(tracking, run_id, model_path=model_path, metrics=metrics, out_dir=out_dir,
                          artifact_path=artifact_path, job=job, step=step)
    if dataset is not None:
        tracking.log_dataset(run_id, dataset, "evaluation")
    tracking.end(run_id, "FINISHED" if ok else "FAILED")
    if line := tracking.held_line(f"this {job} runs again with the same output directory"):
        log.warning(line)


@dataclass
class EvaluationRun:
    """An evaluation's run from the start of its work to its end (jobs.evaluate)."""

    tracking: RunTracking
    run_id: str
    model_path: str
    step: int | None
    job: str
    artifact_path: str
    out_dir: str

    @classmethod
    def open(cls, uri: str, section: TrackingSection, *, training_run: str | None, model_path: str,
             step: int | None, job: str, artifact_path: str, out_dir: str) -> EvaluationRun:
        """Replay what an earlier evaluation into ``out_dir`` kept, then open_evaluation."""
        tracking = RunTracking(uri, spool_dir(out_dir))
        tracking.replay()
        run_id = open_evaluation(uri, section, training_run=training_run, model_path=model_path, job=job, step=step)
        return cls(tracking, run_id, model_path, step, job, artifact_path, out_dir)

    def finish(self, *, ok: bool, metrics: dict[str, float] | None = None,
               dataset: dict[str, Any] | None = None) -> None:
        finish_evaluation(self.tracking, self.run_id, ok=ok, model_path=self.model_path, metrics=metrics or {},
                          out_dir=self.out_dir, artifact_path=self.artifact_path, job=self.job, step=self.step,
                          dataset=dataset)


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
    step: int | None = None,
    dataset: dict[str, Any] | None = None,
) -> str:
    """All at once, after the work: the evaluation's run (nested under ``run_id``, the training run, when it is
    in this store), metrics at ``step``, every file of ``out_dir`` under ``artifact_path``; returns its id."""
    run = EvaluationRun.open(uri, section, training_run=run_id, model_path=model_path, step=step, job=job,
                             artifact_path=artifact_path, out_dir=out_dir)
    run.finish(ok=True, metrics=metrics, dataset=dataset)
    return run.run_id
