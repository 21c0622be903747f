"""Experiment tracking, and the only package that imports mlflow: the RunStore every layer records runs through,
the rank-0 Tracker of the train loop, a job run's start/end records, and tracking-URI resolution."""

from unispeech_platform.tracking.job_run import log_job_end, log_job_start, metric_history, open_run
from unispeech_platform.tracking.store import JOB_TAG, PARENT_TAG, RunStore, run_line, ui_path
from unispeech_platform.tracking.tracker import MLflowTracker, NullTracker, Tracker, make_tracker
from unispeech_platform.tracking.uri import (
    TrackingError,
    check_reachable,
    checked_tracking_uri,
    resolve_tracking_uri,
)

__all__ = [
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
