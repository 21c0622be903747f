"""A training job's MLflow run, driver side: open (or reopen with --resume), record the resolved config and
environment at the start, upload the model, vocabulary and loss plot and close it at the end."""

from __future__ import annotations

import os
from typing import Any

from unispeech_platform.config.sections import TrackingSection
from unispeech_platform.tracking.plots import loss_plot
from unispeech_platform.tracking.store import RunStore

PLOTTED = ("loss", "ctc_loss", "contrastive_loss", "dev_loss")


def open_run(uri: str, section: TrackingSection, job_name: str, *, resume: bool) -> str:
    """Create the job's run, or with resume reopen the newest run of this job name (same run id)."""
    return RunStore(uri).open_job_run(section.experiment, job_name, section.run_name, resume=resume)


def log_job_start(uri: str, run_id: str, params: dict[str, Any], tags: dict[str, str], config_yaml: str) -> None:
    """Full resolved config as params (flattened) and as an artifact, plus environment tags."""
    store = RunStore(uri)
    store.log_params(run_id, params)
    store.set_tags(run_id, tags)
    store.log_text(run_id, config_yaml, "config/resolved.yaml")


def log_job_end(
    uri: str, run_id: str, *, status: str, artifact_dirs: dict[str, str | None], vocab: str | None = None
) -> None:
    """Upload artifact directories (model), the vocabulary, the loss plot, and close the run."""
    store = RunStore(uri)
    for artifact_path, local in artifact_dirs.items():
        if local and os.path.isdir(local):
            store.log_artifacts(run_id, local, artifact_path)
    if vocab and os.path.isfile(vocab):
        store.log_artifact(run_id, vocab, "vocab")
    png = loss_plot({k: points for k in PLOTTED if (points := store.metric_history(run_id, k))})
    if png is not None:
        store.log_artifact(run_id, png, "plots")
    store.finish(run_id, status)


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return RunStore(uri).metric_history(run_id, key)
