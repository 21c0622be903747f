"""Experiment tracking: one small interface (Tracker) with an MLflow implementation used on rank 0."""

from unispeech_platform.tracking.mlflow_tracker import (
    MLflowTracker,
    TrackingError,
    check_reachable,
    log_job_end,
    log_job_start,
    metric_history,
    open_run,
    resolve_tracking_uri,
)
from unispeech_platform.tracking.tracker import NullTracker, Tracker

__all__ = [
    "MLflowTracker",
    "NullTracker",
    "Tracker",
    "TrackingError",
    "check_reachable",
    "log_job_end",
    "log_job_start",
    "metric_history",
    "open_run",
    "resolve_tracking_uri",
]
