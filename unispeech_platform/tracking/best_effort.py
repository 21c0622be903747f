"""Tracking that never stops training: every call to MLflow has bounded retries; while the server cannot be
reached, records go to the run's spool (tracking.spool) and are replayed, in order and without duplicate steps,
when it answers again or at the next start (docs/training.md#tracking-outages).

Used through RunTracking (jobs, experiments, sweeps) and by rank 0's tracker; what a record is and how it applies
itself is tracking.records. Only a store that *rejects* a record (a 4xx answer: retrying cannot help) drops it,
with a warning; anything else is spooled.
"""

from __future__ import annotations

import math
import os
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from unispeech_platform.config.redact import redact_uri, strip_userinfo
from unispeech_platform.runtime.errors import first_line
from unispeech_platform.tracking.records import (
    KINDS,
    Artifacts,
    DatasetInput,
    End,
    Metrics,
    Params,
    PhoneModel,
    Record,
    Reopen,
    Tags,
    Text,
    from_json,
)
from unispeech_platform.tracking.retry import is_transient, with_retries
from unispeech_platform.tracking.spool import Spool
from unispeech_platform.tracking.store import RunStore

RETRY_FIRST_S, RETRY_MAX_S = 5.0, 60.0
"""While records are pending, the server is probed (one /health request of at most 2 s) before a replay: first
after 5 s, then twice as long after each failed probe, at most every minute. A short outage is over in seconds;
a long one costs a few probes, not a step's worth of waiting each time."""
REMIND_EVERY_S = 120.0
"""While the server stays away, how often a warning says how much is spooled."""
PROBE_TIMEOUT_S = 2.0
GROUP = 200
"""Spooled metric records replayed per request."""


def _print_warning(line: str) -> None:
    print(line, flush=True)


def _short(error: BaseException) -> str:
    """The error's message in one line, any URI's login redacted (the one-line helper every layer uses)."""
    return first_line(error, with_type=False, clean=redact_uri)


def _describe(records: list[dict[str, Any]]) -> str:
    kinds = sorted({r["kind"] for r in records})
    steps = [r["step"] for r in records if r["kind"] == "metrics"]
    span = "" if not steps else f", step {steps[0]}" if len(steps) == 1 else f", steps {min(steps)}-{max(steps)}"
    return f"{len(records)} record(s) ({', '.join(kinds)}{span})"


class BestEffortStore:
    """A RunStore whose writes never raise because of the server: live while it answers, spooled while not."""

    def __init__(self, uri: str, spool: Spool, *, warn: Callable[[str], None] | None = None,
                 retry_first_s: float = RETRY_FIRST_S, remind_every_s: float = REMIND_EVERY_S):
        self.uri = uri
        self.store = RunStore(uri)
        self.spool = spool
        self.warn = warn or _print_warning
        self.retry_first_s, self.remind_every_s = retry_first_s, remind_every_s
        self._wait_s = retry_first_s
        self._known: dict[str, dict[str, int]] = {}  # run id -> highest stored step per metric key
        self._next_try = 0.0
        self._next_remind = 0.0
        self._down = False
        self.replayed_ends: set[str] = set()
        """Runs whose spooled end (a final status) this store replayed: a job starting again reopens them."""

    # -- records ---------------------------------------------------------------------------------------------
    def log_metrics(self, run_id: str, metrics: dict[str, float | None], step: int) -> None:
        finite = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        if finite:
            self._submit(Metrics(run_id, int(step), finite))

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        if params:
            self._submit(Params(run_id, {k: str(v) for k, v in params.items()}))

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        if tags:
            self._submit(Tags(run_id, {k: str(v) for k, v in tags.items()}))

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._submit(Text(run_id, text, artifact_file))

    def log_artifacts(self, run_id: str, local: str, artifact_path: str | None) -> None:
        """A local file or directory, uploaded (or, while the server is away, uploaded from there on replay)."""
        self._submit(Artifacts(run_id, os.path.abspath(local), artifact_path))

    def log_phone_model(self, run_id: str, model_dir: str, registered_model: str | None) -> None:
        """A CTC export as the run's MLflow Model (tracking.model_logging), registered when a name is given."""
        self._submit(PhoneModel(run_id, os.path.abspath(model_dir), registered_model))

    def log_dataset(self, run_id: str, dataset: dict[str, Any], context: str) -> None:
        """A dataset input of the run (tracking.store.RunStore.log_dataset)."""
        self._submit(DatasetInput(run_id, dataset, context))

    def reopen(self, run_id: str) -> None:
        """Mark the run RUNNING again (a job continuing a run whose end was recorded)."""
        self._submit(Reopen(run_id))

    def end(self, run_id: str, status: str) -> None:
        """The loss plot (from the stored curves) and the run's final status."""
        self._submit(End(run_id, status))

    # -- reading ---------------------------------------------------------------------------------------------
    def max_step(self, run_id: str, key: str) -> int:
        """The highest step of ``key`` already recorded for the run: in the store (when it answers) or the spool."""
        try:
            stored = self.stored_steps(run_id).get(key, -1)
        except Exception as e:
            if not is_transient(e):
                raise
            self._went_down(e)
            stored = -1
        return max(stored, self.spool.max_step(run_id, key))

    def pending_line(self) -> str | None:
        """A warning naming what is still spooled, or None when everything reached MLflow."""
        if not self.spool.pending:
            return None
        why = f" ({self.spool.error}; kept in memory only)" if self.spool.error else ""
        return (f"WARNING: MLflow {redact_uri(self.uri)} unreachable: {_describe(self.spool.pending)} kept in "
                f"{self.spool.where}{why}; they are replayed when this job starts again (--resume)")

    # -- live or spooled -------------------------------------------------------------------------------------
    def _submit(self, typed: Record) -> None:
        record = typed.as_json()
        if not self.spool.pending:
            try:
                typed.apply(self)
                return
            except Exception as e:
                if not is_transient(e):
                    self._rejected([record], e)
                    return
                self._went_down(e)
        first = not self.spool.pending
        self.spool.append(record)
        if first:
            self.warn(f"WARNING: MLflow {redact_uri(self.uri)} unreachable: spooling tracking records to "
                      f"{self.spool.where}, first {_describe([record])}; training continues and they are "
                      f"replayed when the server answers")
        self.flush()

    def flush(self, *, force: bool = False) -> bool:
        """Replay the spool in order if the server answers (not before the next probe is due unless ``force``);
        True when nothing is pending any more."""
        if not self.spool.pending:
            return True
        now = time.monotonic()
        if not force and now < self._next_try:
            return False
        if not self._answers():
            self._wait_s = min(2 * self._wait_s, RETRY_MAX_S)
            self._next_try = now + self._wait_s
            if now >= self._next_remind:
                self._next_remind = now + self.remind_every_s
                self.warn(f"WARNING: MLflow still unreachable: {_describe(self.spool.pending)} spooled in "
                          f"{self.spool.where}")
            return False
        replayed: list[dict[str, Any]] = []
        while self.spool.pending:
            group = self._next_group()
            try:
                self._apply(group)
            except Exception as e:
                if is_transient(e):
                    self._went_down(e)
                    return False
                self._rejected(group, e)
            self.spool.mark_replayed(group[-1]["seq"])
            replayed += group
        self._down, self._wait_s = False, self.retry_first_s
        self.warn(f"MLflow is reachable again: replayed {_describe(replayed)} from {self.spool.where}")
        return True

    def _next_group(self) -> list[dict[str, Any]]:
        """The next record, or the run of consecutive metric records of one run that follows (one request)."""
        first = self.spool.pending[0]
        if first["kind"] not in KINDS or not KINDS[first["kind"]].groupable:
            return [first]
        group = []
        for record in self.spool.pending[:GROUP]:
            if record["kind"] != first["kind"] or record["run_id"] != first["run_id"]:
                break
            group.append(record)
        return group

    def _answers(self) -> bool:
        """A cheap probe before a replay, so an outage costs a refused connection, not MLflow's retries."""
        if not self.uri.startswith(("http://", "https://")):
            return True
        try:
            with urllib.request.urlopen(strip_userinfo(self.uri).rstrip("/") + "/health",
                                        timeout=PROBE_TIMEOUT_S) as resp:
                return resp.status == 200
        except OSError:
            return False

    def _went_down(self, error: BaseException) -> None:
        self._known.clear()  # a request may have landed before the failure: read the stored steps afresh
        self._next_try = time.monotonic() + self._wait_s
        if not self._down:
            self._down = True
            self._next_remind = time.monotonic() + self.remind_every_s
            self.warn(f"WARNING: MLflow call failed ({_short(error)})")

    def _rejected(self, records: list[dict[str, Any]], error: BaseException) -> None:
        self.warn(f"WARNING: MLflow rejected {_describe(records)} ({_short(error)}): dropped")

    def warn_failed(self, what: str, error: BaseException) -> None:
        self.warn(f"WARNING: {what} failed ({_short(error)})")

    # -- applying records (tracking.records) ----------------------------------------------------------------
    def stored_steps(self, run_id: str) -> dict[str, int]:
        """The highest step per metric key the store holds for the run (read once, then kept up to date)."""
        if run_id not in self._known:
            self._known[run_id] = with_retries(lambda: self.store.latest_steps(run_id))
        return self._known[run_id]

    def _apply(self, records: list[dict[str, Any]]) -> None:
        """Spooled records (one, or a group of one groupable kind and run) applied in one go."""
        typed = [from_json(record) for record in records]
        type(typed[0]).apply_all(self, typed)


def held_spools(paths: list[str]) -> list[Spool]:
    """The spool files among ``paths`` that exist and still hold records not replayed."""
    return [spool for spool in (Spool(p) for p in paths if os.path.isfile(p)) if spool.pending]


def replay_spools(uri: str, paths: list[str], *, warn: Callable[[str], None] | None = None) -> list[str]:
    """Replay what other processes left spooled in ``paths`` (e.g. the finished stages of an experiment, whose
    jobs never start again to replay their own); returns the paths that still hold records (server away)."""
    held = held_spools(paths)
    for i, spool in enumerate(held):
        if not BestEffortStore(uri, spool, warn=warn).flush(force=True):
            return [s.where for s in held[i:]]  # the server is away: the rest would only repeat the warning
    return []
