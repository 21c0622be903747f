"""Tracking that never stops training: every call to MLflow has bounded retries; while the server cannot be
reached, records go to the run's spool (tracking.spool) and are replayed, in order and without duplicate steps,
when it answers again or at the next start (docs/training.md#tracking-outages).

Used by the driver (a job run's start and end records) and by rank 0's tracker. Only a store that *rejects* a
record (a 4xx answer: retrying cannot help) drops it, with a warning; anything else is spooled.
"""

from __future__ import annotations

import math
import os
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from unispeech_platform.config.redact import redact_uri, strip_userinfo
from unispeech_platform.tracking.plots import PLOTTED, loss_plot
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
    text = redact_uri(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
    return text if len(text) <= 200 else text[:197] + "..."


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
            self._submit({"run_id": run_id, "kind": "metrics", "step": int(step), "metrics": finite})

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        if params:
            self._submit({"run_id": run_id, "kind": "params", "params": {k: str(v) for k, v in params.items()}})

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        if tags:
            self._submit({"run_id": run_id, "kind": "tags", "tags": {k: str(v) for k, v in tags.items()}})

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._submit({"run_id": run_id, "kind": "text", "text": text, "artifact_file": artifact_file})

    def log_artifacts(self, run_id: str, local: str, artifact_path: str | None) -> None:
        """A local file or directory, uploaded (or, while the server is away, uploaded from there on replay)."""
        self._submit({"run_id": run_id, "kind": "artifacts", "local": os.path.abspath(local),
                      "artifact_path": artifact_path})

    def log_phone_model(self, run_id: str, model_dir: str, registered_model: str | None) -> None:
        """A CTC export as the run's MLflow Model (tracking.model_logging), registered when a name is given."""
        self._submit({"run_id": run_id, "kind": "model", "local": os.path.abspath(model_dir),
                      "registered_model": registered_model})

    def reopen(self, run_id: str) -> None:
        """Mark the run RUNNING again (a job continuing a run whose end was recorded)."""
        self._submit({"run_id": run_id, "kind": "reopen"})

    def end(self, run_id: str, status: str) -> None:
        """The loss plot (from the stored curves) and the run's final status."""
        self._submit({"run_id": run_id, "kind": "end", "status": status})

    # -- reading ---------------------------------------------------------------------------------------------
    def max_step(self, run_id: str, key: str) -> int:
        """The highest step of ``key`` already recorded for the run: in the store (when it answers) or the spool."""
        try:
            stored = self._stored_steps(run_id).get(key, -1)
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
    def _submit(self, record: dict[str, Any]) -> None:
        if not self.spool.pending:
            try:
                self._apply([record])
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
        if first["kind"] != "metrics":
            return [first]
        group = []
        for record in self.spool.pending[:GROUP]:
            if record["kind"] != "metrics" or record["run_id"] != first["run_id"]:
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

    # -- applying records ------------------------------------------------------------------------------------
    def _stored_steps(self, run_id: str) -> dict[str, int]:
        if run_id not in self._known:
            self._known[run_id] = with_retries(lambda: self.store.latest_steps(run_id))
        return self._known[run_id]

    def _apply(self, records: list[dict[str, Any]]) -> None:
        record = records[0]
        run_id, kind = record["run_id"], record["kind"]
        if kind == "metrics":
            self._apply_metrics(run_id, records)
        elif kind == "params":
            with_retries(lambda: self.store.log_params(run_id, record["params"]))  # skips params already there
        elif kind == "tags":
            with_retries(lambda: self.store.set_tags(run_id, record["tags"]))
        elif kind == "text":
            with_retries(lambda: self.store.log_text(run_id, record["text"], record["artifact_file"]))
        elif kind == "artifacts":
            self._upload(run_id, record["local"], record["artifact_path"])
        elif kind == "model":
            self._log_phone_model(run_id, record["local"], record.get("registered_model"))
        elif kind == "reopen":
            with_retries(lambda: self.store.reopen(run_id))
        elif kind == "end":
            self._end(run_id, record["status"])
            self.replayed_ends.add(run_id)
        else:
            raise ValueError(f"unknown tracking record kind {kind!r}")

    def _apply_metrics(self, run_id: str, records: list[dict[str, Any]]) -> None:
        """One request; keys at steps the store already holds are dropped (MLflow would keep both). Tried once:
        a failed request may still have landed, and only a replay that reads the stored steps again is sure."""
        stored = self._stored_steps(run_id)
        after = dict(stored)
        points = []
        for record in records:
            step = int(record["step"])
            fresh = {k: v for k, v in record["metrics"].items() if step > after.get(k, -1)}
            after.update(dict.fromkeys(fresh, step))
            if fresh:
                points.append((step, fresh))
        if points:
            with_retries(lambda: self.store.log_metric_points(run_id, points), tries=1)
        stored.update(after)

    def _upload(self, run_id: str, local: str, artifact_path: str | None) -> None:
        if os.path.isdir(local):
            with_retries(lambda: self.store.log_artifacts(run_id, local, artifact_path))
        elif os.path.isfile(local):
            with_retries(lambda: self.store.log_artifact(run_id, local, artifact_path))
        else:
            self.warn(f"WARNING: {local} is gone: not uploaded to MLflow run {run_id}")

    def _log_phone_model(self, run_id: str, local: str, registered_model: str | None) -> None:
        from unispeech_platform.tracking.model_logging import log_phone_model

        if not os.path.isdir(local):
            self.warn(f"WARNING: {local} is gone: no MLflow Model logged for run {run_id}")
            return
        with_retries(lambda: log_phone_model(self.uri, run_id, local, registered_model))

    def _end(self, run_id: str, status: str) -> None:
        curves = {}
        for key in PLOTTED:
            if points := with_retries(lambda key=key: self.store.metric_history(run_id, key)):
                curves[key] = points
        try:
            png = loss_plot(curves)
        except Exception as e:  # a plot is not worth failing a run's end for
            self.warn(f"WARNING: loss plot failed ({_short(e)})")
            png = None
        if png is not None:
            with_retries(lambda: self.store.log_artifact(run_id, png, "plots"))
        with_retries(lambda: self.store.finish(run_id, status))


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
