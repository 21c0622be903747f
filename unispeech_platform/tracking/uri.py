"""Which tracking store a job uses, and the fail-fast check that it is usable (before Ray starts)."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from unispeech_platform.config.redact import redact_uri, strip_userinfo
from unispeech_platform.config.sections import TrackingSection
from unispeech_platform.runtime.errors import JobSetupError

DEFAULT_DB = "mlflow.db"
DEFAULT_EXPERIMENT = "unispeech"
"""The experiment of a job whose config names none and whose environment sets no $MLFLOW_EXPERIMENT_NAME."""


class TrackingError(JobSetupError):
    """The tracking backend is unusable (unreachable server, unwritable store)."""


def resolve_tracking_uri(section: TrackingSection) -> str:
    """tracking.uri, else $MLFLOW_TRACKING_URI, else sqlite:///<abs cwd>/mlflow.db. Local paths become absolute
    on the driver, so workers (whose cwd is a temporary job dir) write to the same store."""
    uri = section.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_DB
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///") :]
        return "sqlite:///" + os.path.abspath(path)
    if "://" not in uri:  # a bare path: a sqlite file or a directory store
        path = os.path.abspath(uri)
        return "sqlite:///" + path if path.endswith(".db") else Path(path).as_uri()
    return uri


def resolve_experiment(section: TrackingSection) -> str:
    """tracking.experiment, else $MLFLOW_EXPERIMENT_NAME, else "unispeech": the order of the tracking URI (a value
    the config names, in its file or with --set, beats the environment; the environment beats the default), and
    MLflow's own (the variable picks the experiment when the code names none)."""
    return section.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


def given_run_id() -> str | None:
    """$MLFLOW_RUN_ID: a run created by someone else (an orchestrator, a notebook) that this job records into
    instead of creating its own, as ``mlflow.start_run()`` does."""
    return os.environ.get("MLFLOW_RUN_ID") or None


def check_reachable(uri: str, timeout_s: float) -> None:
    """Fail fast (before Ray starts) when a server does not answer or a local store cannot be written."""
    if uri.startswith(("http://", "https://")):
        url = strip_userinfo(uri).rstrip("/") + "/health"  # /health needs no login; urllib cannot take one in a URL
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                if resp.status != 200:
                    raise TrackingError(f"MLflow server {redact_uri(uri)} answered {resp.status} on /health")
        except (urllib.error.URLError, OSError) as e:
            raise TrackingError(
                f"MLflow tracking server {redact_uri(uri)} is unreachable ({e}); start it, fix tracking.uri / "
                "MLFLOW_TRACKING_URI, or unset them to use the local sqlite store"
            ) from None
    elif uri.startswith("sqlite:///"):
        parent = Path(uri[len("sqlite:///") :]).parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise TrackingError(f"cannot write the MLflow sqlite store in {parent}")


def checked_tracking_uri(section: TrackingSection) -> str | None:
    """The absolute tracking URI, checked reachable/writable; None when tracking is off."""
    if not section.enabled:
        return None
    uri = resolve_tracking_uri(section)
    check_reachable(uri, section.connect_timeout_s)
    return uri
