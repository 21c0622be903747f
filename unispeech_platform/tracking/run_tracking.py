"""RunTracking: the one object a job, an experiment or a sweep records its MLflow runs through (start, log,
finish, replay), best effort: an outage never fails it (docs/training.md#tracking-outages).

The caller says where its output lives (a job's RunLayout, an experiment's or a sweep's directory) and, for an
experiment or a sweep, where its stages' output lives; where records wait while the server is away, and how they
are replayed, stays inside this package (tracking.spool, tracking.best_effort)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from functools import cached_property
from typing import Any

from unispeech_platform.config.redact import redact_uri
from unispeech_platform.config.sections import TrackingSection
from unispeech_platform.runtime.layout import RunLayout
from unispeech_platform.tracking.best_effort import BestEffortStore, held_spools, replay_spools
from unispeech_platform.tracking.job_run import log_job_end, log_job_start, open_run
from unispeech_platform.tracking.spool import SPOOL_NAME, Spool, spool_path
from unispeech_platform.tracking.system_metrics import SystemMetrics, system_metrics_wanted, system_spool
from unispeech_platform.tracking.uri import TrackingError

Where = RunLayout | str | os.PathLike
"""A job's run (its RunLayout), or the directory of an experiment or a sweep."""


def _spool_of(where: Where) -> str:
    return spool_path(where) if isinstance(where, RunLayout) else os.path.join(os.fspath(where), SPOOL_NAME)


class RunTracking:
    """Best-effort tracking for the runs recorded from one output location.

    ``stages``: the locations of the jobs whose runs this one owns (an experiment's training stages, a sweep's
    trial stages): a finished stage's job never starts again, so what it could not record is replayed here.

    The record methods (``log_metrics`` ... ``end``) are for one process (an experiment's or a sweep's driver).
    A training job's start and end (``open_job_run``, ``log_job_start``, ``log_job_end``) read what is pending
    afresh each time, since the job's rank 0 records into the same place in between (tracking.tracker)."""

    def __init__(self, uri: str, where: Where, *, stages: Iterable[Where] = (),
                 warn: Callable[[str], None] | None = None):
        self.uri = uri
        self.warn = warn
        self._spool_file = _spool_of(where)
        self._stage_spools = [_spool_of(stage) for stage in stages]
        self._system_spool = system_spool(self._spool_file)
        """The system-metrics sampler's records (tracking.system_metrics), replayed with this location's."""
        self._system: SystemMetrics | None = None

    @cached_property
    def _records(self) -> BestEffortStore:
        return BestEffortStore(self.uri, Spool(self._spool_file), warn=self.warn)

    # -- records ---------------------------------------------------------------------------------------------
    def log_metrics(self, run_id: str, metrics: dict[str, float | None], step: int) -> None:
        self._records.log_metrics(run_id, metrics, step)

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        self._records.log_params(run_id, params)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self._records.set_tags(run_id, tags)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._records.log_text(run_id, text, artifact_file)

    def log_artifacts(self, run_id: str, local: str, artifact_path: str | None) -> None:
        self._records.log_artifacts(run_id, local, artifact_path)

    def log_dataset(self, run_id: str, dataset: dict[str, Any], context: str) -> None:
        """The corpus as one of the run's dataset inputs (``dataset``: data.dataset_record.CorpusDataset's dict)."""
        self._records.log_dataset(run_id, dataset, context)

    def reopen(self, run_id: str) -> None:
        """The run RUNNING again (e.g. a SCHEDULED run whose stage starts)."""
        self._records.reopen(run_id)

    def end(self, run_id: str, status: str) -> None:
        """The loss plot and the run's final status."""
        self._records.end(run_id, status)

    # -- a training job's run --------------------------------------------------------------------------------
    def open_job_run(self, section: TrackingSection, job_name: str, *, resume: bool) -> str:
        """The job's run, created or (resume) reopened, after replaying what an earlier start left (TrackingError,
        exit 3, when that or opening the run fails)."""
        run_id = open_run(self.uri, section, job_name, resume=resume, spool=self._spool_file, warn=self.warn)
        replay_spools(self.uri, [self._system_spool], warn=self.warn)
        return run_id

    def watch_system(self, run_id: str, section: TrackingSection) -> None:
        """Sample this machine's CPU, memory, disk, network (and GPU) into the run as system/* metrics until
        ``log_job_end``, when tracking.system_metrics (or $MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING) asks for it.
        Best effort: a sampler that cannot start is a warning."""
        if self._system is not None or not system_metrics_wanted(section):
            return
        try:
            self._system = SystemMetrics(self.uri, run_id, self._system_spool, warn=self.warn).start()
        except Exception as e:  # e.g. psutil missing
            (self.warn or print)(f"WARNING: system metrics not logged: {type(e).__name__}: "
                                 f"{redact_uri(str(e))[:200]}")

    def _stop_system(self) -> None:
        if self._system is not None:
            system, self._system = self._system, None
            if line := system.stop():
                (self.warn or print)(line)

    def log_job_start(self, run_id: str, params: dict[str, Any], tags: dict[str, str], config_yaml: str, *,
                      reopen: bool = False) -> None:
        log_job_start(self.uri, run_id, params, tags, config_yaml, spool=self._spool_file, warn=self.warn,
                      reopen=reopen)

    def log_job_end(self, run_id: str, *, status: str, artifact_dirs: dict[str, str | None],
                    vocab: str | None = None, phone_model: str | None = None,
                    registered_model: str | None = None) -> None:
        self._stop_system()
        log_job_end(self.uri, run_id, status=status, artifact_dirs=artifact_dirs, vocab=vocab,
                    spool=self._spool_file, warn=self.warn, phone_model=phone_model,
                    registered_model=registered_model)

    # -- replay ----------------------------------------------------------------------------------------------
    def replay(self) -> list[str]:
        """Replay what this location and its stages hold, if the server answers; returns the files still holding
        records (while the server is away only one warning: the stages are not tried after this one failed)."""
        if not self._records.flush(force=True):
            return [self._records.spool.where,
                    *(spool.where for spool in held_spools([self._system_spool, *self._stage_spools]))]
        return replay_spools(self.uri, [self._system_spool, *self._stage_spools], warn=self.warn)

    def replay_or_fail(self, what: str) -> None:
        """Before a --resume reopens runs: replay what ``what`` (an earlier attempt) left, else TrackingError."""
        if self.replay():
            raise TrackingError(f"MLflow {redact_uri(self.uri)}: records {what} spooled cannot be replayed; the "
                                "server stopped answering (start it and run again)")

    def held_line(self, rerun: str) -> str | None:
        """After a last replay, a warning naming where records are still kept (the server away at the end) and
        that ``rerun`` (e.g. "this experiment runs again with --resume") replays them; None when all are in."""
        left = self.replay()
        if not left:
            return None
        return (f"WARNING: MLflow {redact_uri(self.uri)} unreachable: tracking records are kept in {', '.join(left)}; "
                f"they are replayed when {rerun}")
