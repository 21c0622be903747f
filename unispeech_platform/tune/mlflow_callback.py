"""MLflow for sweeps: one parent run per sweep, a nested run per trial (and per fine-tuning stage below it), and
a Tune callback that closes the runs of trials Tune ends itself.

ASHA stops a trial by killing its actor, so the trial's own code never marks its MLflow run finished: without
``CloseTrialRuns`` those runs stay RUNNING forever. Early-stopped runs end as KILLED with a tag saying so.

A Tune callback that raises stops the whole sweep, so closing a trial's runs never raises: while MLflow is away
it warns, and the sweep closes every trial's runs again from its trials table when it ends (``close_trial_runs``),
on --resume too (docs/training.md#tracking-outages).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune import Callback

from unispeech_platform.config.redact import redact_uri
from unispeech_platform.config.sections import TrackingSection
from unispeech_platform.tracking import RunStore, RunTracking, given_run_id, resolve_experiment
from unispeech_platform.tracking.retry import with_retries

SWEEP_TAG = "unispeech.sweep"
TRIAL_TAG = "unispeech.trial_id"
STAGE_TAG = "unispeech.stage"
EARLY_TAG = "unispeech.early_stopped"


def open_parent_run(uri: str, section: TrackingSection, sweep_name: str, *, resume: bool) -> str:
    """The sweep's run (reopened by name with --resume)."""
    store = RunStore(uri)
    run_id = store.open_job_run(resolve_experiment(section), f"sweep-{sweep_name}", section.run_name, resume=resume,
                                given=given_run_id())
    store.set_tags(run_id, {SWEEP_TAG: sweep_name})
    return run_id


def nested_run(uri: str, parent_id: str, trial_id: str, name: str, stage: str) -> str:
    """Find or create the run of one trial stage below ``parent_id`` (a restored trial reuses its run): the
    pretraining stage is nested under the sweep's run, a fine-tuning stage under its trial's pretraining run."""
    store = RunStore(uri)
    parent = store.run(parent_id)
    exp_id = parent.info.experiment_id
    found = store.find_runs(exp_id, {TRIAL_TAG: trial_id, STAGE_TAG: stage})
    if found:
        return store.reopen(found[0].info.run_id)
    tags = {TRIAL_TAG: trial_id, STAGE_TAG: stage, SWEEP_TAG: parent.data.tags.get(SWEEP_TAG, "")}
    return store.create_run(exp_id, name, parent=parent_id, tags=tags)


def trial_runs(uri: str, parent_id: str, trial_id: str) -> list:
    """Every MLflow run of a trial (its stages), searched by tags."""
    store = RunStore(uri)
    return store.find_runs(store.run(parent_id).info.experiment_id, {TRIAL_TAG: trial_id})


def close_trial_runs(uri: str, parent_id: str, trial_id: str, *, failed: bool, early: bool, reached: int) -> None:
    """End a trial's RUNNING runs: FAILED, KILLED (early-stopped) or FINISHED, tagged with how far it got."""
    store = RunStore(uri)
    for run in with_retries(lambda: trial_runs(uri, parent_id, trial_id)):
        with_retries(lambda run=run: store.set_tags(
            run.info.run_id, {EARLY_TAG: str(early).lower(), "unispeech.trial_step_reached": reached}))
        if run.info.status == "RUNNING":
            with_retries(lambda run=run: store.finish(
                run.info.run_id, "FAILED" if failed else "KILLED" if early else "FINISHED"))


class CloseTrialRuns(Callback):
    """Ends the MLflow runs of each trial when Tune ends the trial: FINISHED, KILLED (early-stopped) or FAILED."""

    def __init__(self, uri: str, parent_id: str, total_steps: int):
        self.uri = uri
        self.parent_id = parent_id
        self.total_steps = total_steps

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial, failed=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial, failed=True)

    def _close(self, trial, *, failed: bool) -> None:
        reached = int((trial.last_result or {}).get("trial_step", 0))
        early = not failed and reached < self.total_steps
        try:
            close_trial_runs(self.uri, self.parent_id, trial.trial_id, failed=failed, early=early, reached=reached)
        except Exception as e:  # raising here would stop every other trial of the sweep
            print(f"WARNING: MLflow: the runs of trial {trial.trial_id} could not be closed "
                  f"({redact_uri(str(e).splitlines()[0] if str(e) else type(e).__name__)[:200]}); "
                  "the sweep closes them when it ends", flush=True)


def sweep_tracking(uri: str, runs_dir: Path) -> RunTracking:
    """The sweep's best-effort tracking (its parent run's end records), kept with its trial stages' runs
    (``<name>-trials/<trial>-<stage>``), whose leftovers it replays."""
    stages = sorted(p for p in runs_dir.glob("*") if p.is_dir())
    return RunTracking(uri, runs_dir, stages=stages)


def replay_earlier_attempt(uri: str, runs_dir: Path) -> None:
    """Before a --resume reopens the sweep's run: what an earlier attempt could not record (TrackingError, exit 3,
    when the server stops answering during the replay)."""
    sweep_tracking(uri, runs_dir).replay_or_fail("an earlier attempt of the sweep")


def finish_sweep_run(uri: str, parent: str, rows: list[dict[str, Any]], *, report: Path, metric: str,
                     best: dict[str, Any] | None, failed: bool, runs_dir: Path) -> None:
    """The sweep's end in MLflow, best effort (an outage after hours of trials costs no result: the report is on
    disk and the records wait in ``<name>-trials/`` for --resume): every trial's runs closed from the trials
    table, the report as artifacts, the best metric, the parent's status."""
    for row in rows:
        try:
            close_trial_runs(uri, parent, row["trial"], failed=row["status"] == "ERROR",
                             early=row["status"] == "EARLY_STOPPED", reached=row["trial_step"])
        except Exception:
            print("WARNING: MLflow unreachable: trial runs it has not closed yet are closed by --resume", flush=True)
            break
    tracking = sweep_tracking(uri, runs_dir)
    tracking.log_artifacts(parent, str(report), "sweep")
    if best:  # at the updates the sweep has trained: a --resume that trains more may change the best
        tracking.log_metrics(parent, {f"best/{metric}": best[f"{metric}_last"]}, sum(r["trial_step"] for r in rows))
        tracking.set_tags(parent, {"unispeech.best_trial": best["trial"]})
    tracking.end(parent, "FAILED" if failed else "FINISHED")
    if line := tracking.held_line("this sweep runs again with --resume"):
        print(line, flush=True)
