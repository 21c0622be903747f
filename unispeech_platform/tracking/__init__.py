"""Experiment tracking, and the only package that imports mlflow: the RunStore every layer creates and looks up
runs through, RunTracking (what jobs, experiments and sweeps record through, best effort: start, log, finish,
replay), the rank-0 Tracker of the train loop, and tracking-URI resolution. How records outlive a server outage
(the spool, its typed records, their replay) stays inside this package (docs/training.md#tracking-outages)."""

from unispeech_platform.tracking.best_effort import BestEffortStore, replay_spools
from unispeech_platform.tracking.job_run import log_job_end, log_job_start, metric_history, open_run
from unispeech_platform.tracking.run_tracking import RunTracking
from unispeech_platform.tracking.spool import Spool, read_records, spool_path
from unispeech_platform.tracking.store import JOB_TAG, PARENT_TAG, RunStore, run_line, ui_path
from unispeech_platform.tracking.tracker import MLflowTracker, NullTracker, Tracker, make_tracker
from unispeech_platform.tracking.uri import (
    TrackingError,
    check_reachable,
    checked_tracking_uri,
    given_run_id,
    resolve_experiment,
    resolve_tracking_uri,
)

__all__ = [
    "BestEffortStore",
    "replay_spools",
    "Spool",
    "read_records",
    "spool_path",
    "JOB_TAG",
    "PARENT_TAG",
    "MLflowTracker",
    "NullTracker",
    "RunStore",
    "RunTracking",
    "Tracker",
    "TrackingError",
    "check_reachable",
    "checked_tracking_uri",
    "log_job_end",
    "log_job_start",
    "make_tracker",
    "metric_history",
    "open_run",
    "given_run_id",
    "resolve_experiment",
    "resolve_tracking_uri",
    "run_line",
    "ui_path",
]
