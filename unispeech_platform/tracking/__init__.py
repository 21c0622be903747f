"""Experiment tracking, and the only package that imports mlflow: the RunStore every layer records runs through,
the rank-0 Tracker of the train loop, a job run's start/end records, tracking-URI resolution, and the spool that
keeps tracking best effort through a server outage (docs/training.md#tracking-outages)."""

from unispeech_platform.tracking.best_effort import BestEffortStore, replay_spools
from unispeech_platform.tracking.job_run import log_job_end, log_job_start, metric_history, open_run
from unispeech_platform.tracking.spool import Spool, read_records, spool_path
from unispeech_platform.tracking.store import JOB_TAG, PARENT_TAG, RunStore, run_line, ui_path
from unispeech_platform.tracking.tracker import MLflowTracker, NullTracker, Tracker, make_tracker
from unispeech_platform.tracking.uri import (
    TrackingError,
    check_reachable,
    checked_tracking_uri,
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
    "Tracker",
    "TrackingError",
    "check_reachable",
    "checked_tracking_uri",
    "log_job_end",
    "log_job_start",
    "make_tracker",
    "metric_history",
    "open_run",
    "resolve_tracking_uri",
    "run_line",
    "ui_path",
]
