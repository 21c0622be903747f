"""A training job's MLflow run, driver side: open (or reopen with --resume), record the resolved config and
environment at the start, upload the model, vocabulary and loss plot and close it at the end.

Once the run is open everything is best effort (tracking.best_effort): an outage spools to ``spool`` (the run's
spool file, tracking.spool_path) and never fails the job. Opening the run is not: a job that cannot open its run
fails at the start (TrackingError, exit 3), like the reachability check before it."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from unispeech_platform.config.redact import redact_uri
from unispeech_platform.config.sections import TrackingSection
from unispeech_platform.tracking.best_effort import BestEffortStore
from unispeech_platform.tracking.plots import PLOTTED
from unispeech_platform.tracking.retry import with_retries
from unispeech_platform.tracking.spool import Spool
from unispeech_platform.tracking.store import RunStore
from unispeech_platform.tracking.uri import TrackingError, given_run_id, resolve_experiment

__all__ = ["PLOTTED", "log_job_end", "log_job_start", "metric_history", "open_run"]
Warn = Callable[[str], None] | None


def open_run(uri: str, section: TrackingSection, job_name: str, *, resume: bool, spool: str | None = None,
             warn: Warn = None) -> str:
    """Create the job's run, or with resume reopen the newest run of this job name (same run id). What an earlier
    start left in ``spool`` is replayed first (before the reopen: a spooled end must not close the reopened run)."""
    pending = BestEffortStore(uri, Spool(spool), warn=warn)
    if not pending.flush(force=True):
        raise TrackingError(f"MLflow {redact_uri(uri)}: the records spooled in {spool} by an earlier start cannot "
                            "be replayed; the server stopped answering (start it and run again)")
    try:
        return with_retries(
            lambda: RunStore(uri).open_job_run(resolve_experiment(section), job_name, section.run_name,
                                               resume=resume, given=given_run_id()))
    except Exception as e:
        raise TrackingError(f"cannot open the MLflow run of {job_name} in {redact_uri(uri)}: "
                            f"{redact_uri(str(e))[:300]}") from None


def log_job_start(uri: str, run_id: str, params: dict[str, Any], tags: dict[str, str], config_yaml: str, *,
                  spool: str | None = None, warn: Warn = None, reopen: bool = False) -> None:
    """Full resolved config as params (flattened) and as an artifact, plus environment tags. ``reopen``: mark the
    run RUNNING first (a run its caller created ahead of the job, e.g. an experiment's SCHEDULED stage run)."""
    store = BestEffortStore(uri, Spool(spool), warn=warn)
    store.flush(force=True)
    if reopen or run_id in store.replayed_ends:  # or an earlier start's end, replayed only now (a resumed trial)
        store.reopen(run_id)
    store.log_params(run_id, params)
    store.set_tags(run_id, tags)
    store.log_text(run_id, config_yaml, "config/resolved.yaml")


def log_job_end(
    uri: str, run_id: str, *, status: str, artifact_dirs: dict[str, str | None], vocab: str | None = None,
    spool: str | None = None, warn: Warn = None, phone_model: str | None = None,
    registered_model: str | None = None,
) -> None:
    """Upload artifact directories (export), the vocabulary, the MLflow Model of a CTC export (``phone_model``:
    ``runs:/<run_id>/model``, registered as ``registered_model`` when set), the loss plot, and close the run.
    Never raises because of the server: what cannot be sent stays in the spool, and a warning says so."""
    store = BestEffortStore(uri, Spool(spool), warn=warn)
    store.flush(force=True)
    if phone_model and os.path.isdir(phone_model):
        store.log_phone_model(run_id, phone_model, registered_model)
    for artifact_path, local in artifact_dirs.items():
        if local and os.path.isdir(local):
            store.log_artifacts(run_id, local, artifact_path)
    if vocab and os.path.isfile(vocab):
        store.log_artifacts(run_id, vocab, "vocab")
    store.end(run_id, status)
    if line := store.pending_line():
        store.warn(line)


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return RunStore(uri).metric_history(run_id, key)
