"""System metrics (CPU, memory, disk, network, and GPU where present) of a job's run, the charts
``mlflow.start_run(log_system_metrics=True)`` gives: MLflow starts its SystemMetricsMonitor only from
``start_run``, and our runs are created through the client, so the driver starts the sampling itself.

MLflow's monitors sample (psutil; pynvml or pyrsmi for GPUs when installed) and its environment variables keep
their meaning: ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` (seconds, default 10),
``MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING`` (default 1), ``MLFLOW_SYSTEM_METRICS_NODE_ID``. What they sample
is recorded through a best-effort store like every other record (tracking.best_effort): while the server is away
it goes to a spool of its own (``<run spool>.system.jsonl``: another thread of the driver, while rank 0 appends
to the run's spool) and is replayed with the rest. MLflow's own loop stops for good at the first failed request;
this one does not.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from unispeech_platform.config.sections import TrackingSection
from unispeech_platform.tracking.best_effort import BestEffortStore
from unispeech_platform.tracking.spool import Spool

log = logging.getLogger("unispeech.tracking")
PREFIX = "system/"


def system_metrics_wanted(section: TrackingSection) -> bool:
    """tracking.system_metrics, else $MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING (true/1), else off."""
    if section.system_metrics is not None:
        return section.system_metrics
    return os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "").strip().lower() in ("true", "1")


def system_spool(run_spool: str) -> str:
    """Where the sampler's records wait while the server is away, beside the run's spool."""
    base = run_spool[: -len(".jsonl")] if run_spool.endswith(".jsonl") else run_spool
    return base + ".system.jsonl"


class SystemMetrics:
    """Samples on a daemon thread from ``start()`` to ``stop()``, logging ``system/<metric>`` (with a node id
    ``system/<node>/<metric>``) at steps 0, 1, ...; a resumed run continues after its last system step."""

    def __init__(self, uri: str, run_id: str, spool: str | None, *, warn: Callable[[str], None] | None = None):
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self.run_id = run_id
        # Its monitors, sampling settings and resumed step; its own loop and logger are not used (see above).
        self.monitor = SystemMetricsMonitor(run_id, resume_logging=True, tracking_uri=uri)
        self.store = BestEffortStore(uri, Spool(spool), warn=warn)
        self.prefix = PREFIX + (f"{self.monitor.node_id}/" if self.monitor.node_id else "")
        self.step = self.monitor._logging_step
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> SystemMetrics:
        self._thread = threading.Thread(target=self._loop, name="unispeech-system-metrics", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            for _ in range(int(self.monitor.samples_before_logging)):
                self._sample()
                if self._stop.wait(float(self.monitor.sampling_interval)):
                    break
            self._publish()

    def _sample(self) -> None:
        try:
            self.monitor.collect_metrics()
        except Exception as e:  # a sensor that fails (a GPU gone) must not end the job's charts
            log.debug("system metrics: sampling failed: %s", e)

    def _publish(self) -> None:
        try:
            metrics = self.monitor.aggregate_metrics()
        except Exception as e:
            log.debug("system metrics: aggregating failed: %s", e)
            metrics = {}
        for monitor in self.monitor.monitors:
            monitor.clear_metrics()
        if metrics:
            self.store.log_metrics(self.run_id, {self.prefix + k: v for k, v in metrics.items()}, self.step)
            self.step += 1

    def stop(self) -> str | None:
        """Stop sampling (the last, partial interval is logged) and replay what is spooled if the server answers;
        returns a warning naming what is still kept, else None."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=60)
            self._thread = None
        self.store.flush(force=True)
        return self.store.pending_line()
