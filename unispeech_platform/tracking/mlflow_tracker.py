"""MLflow behind the Tracker interface: URI resolution, reachability check, one run per job, metrics that
appear once per step even across restarts, and the driver-side params/tags/artifacts."""

from __future__ import annotations

import math
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from unispeech_platform.config.sections import TrackingSection

JOB_TAG = "unispeech.job"
DEFAULT_DB = "mlflow.db"


class TrackingError(RuntimeError):
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


def check_reachable(uri: str, timeout_s: float) -> None:
    """Fail fast (before Ray starts) when a server does not answer or a local store cannot be written."""
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                if resp.status != 200:
                    raise TrackingError(f"MLflow server {uri} answered {resp.status} on /health")
        except (urllib.error.URLError, OSError) as e:
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({e}); start it, fix tracking.uri / "
                "MLFLOW_TRACKING_URI, or unset them to use the local sqlite store"
            ) from None
    elif uri.startswith("sqlite:///"):
        parent = Path(uri[len("sqlite:///") :]).parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise TrackingError(f"cannot write the MLflow sqlite store in {parent}")


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def open_run(uri: str, section: TrackingSection, job_name: str, *, resume: bool) -> str:
    """Driver: create the job's run, or with resume reopen the newest run of this job name (same run id)."""
    client = _client(uri)
    exp = client.get_experiment_by_name(section.experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(section.experiment)
    if resume:
        runs = client.search_runs(
            [exp_id], filter_string=f"tags.`{JOB_TAG}` = '{job_name}'", order_by=["attributes.start_time DESC"]
        )
        if runs:
            client.update_run(runs[0].info.run_id, status="RUNNING")
            return runs[0].info.run_id
    run = client.create_run(exp_id, run_name=section.run_name or job_name, tags={JOB_TAG: job_name})
    return run.info.run_id


class MLflowTracker:
    """Rank-0 tracker bound to an existing run. Steps at or below the highest step stored before this tracker
    opened the run are dropped, so a worker group restored from an older checkpoint does not log a step twice
    (no gaps either: those steps were logged by the previous attempt)."""

    def __init__(self, uri: str, run_id: str, watermark_key: str = "loss"):
        self.client = _client(uri)
        self.run_id = run_id
        history = self.client.get_metric_history(run_id, watermark_key)
        self.watermark = max((m.step for m in history), default=-1)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        if step <= self.watermark:  # replayed after a restore: already in the store
            return
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and math.isfinite(v)]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i : i + 1000])

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))


def log_job_start(uri: str, run_id: str, params: dict[str, Any], tags: dict[str, str], config_yaml: str) -> None:
    """Driver: full resolved config as params (flattened) and as an artifact, plus environment tags."""
    from mlflow.entities import Param, RunTag

    client = _client(uri)
    existing = client.get_run(run_id).data.params
    items = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i : i + 100])
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
    client.log_text(run_id, config_yaml, "config/resolved.yaml")


def log_job_end(
    uri: str, run_id: str, *, status: str, artifact_dirs: dict[str, str | None], vocab: str | None = None
) -> None:
    """Driver: upload artifact directories (model), the vocabulary, the loss plot, and close the run."""
    from unispeech_platform.tracking.plots import loss_plot

    client = _client(uri)
    for artifact_path, local in artifact_dirs.items():
        if local and os.path.isdir(local):
            client.log_artifacts(run_id, local, artifact_path)
    if vocab and os.path.isfile(vocab):
        client.log_artifact(run_id, vocab, "vocab")
    history = {k: client.get_metric_history(run_id, k) for k in ("loss", "ctc_loss", "contrastive_loss", "dev_loss")}
    png = loss_plot({k: [(m.step, m.value) for m in v] for k, v in history.items() if v})
    if png is not None:
        client.log_artifact(run_id, png, "plots")
    client.set_terminated(run_id, status=status)


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in _client(uri).get_metric_history(run_id, key)]
