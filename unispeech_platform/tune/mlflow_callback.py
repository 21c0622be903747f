"""MLflow for sweeps: one parent run per sweep, a nested run per trial (and per fine-tuning stage below it), and
a Tune callback that closes the runs of trials Tune ends itself.

ASHA stops a trial by killing its actor, so the trial's own code never marks its MLflow run finished: without
``CloseTrialRuns`` those runs stay RUNNING forever. Early-stopped runs end as KILLED with a tag saying so.
"""

from __future__ import annotations

from ray.tune import Callback

from unispeech_platform.config.sections import TrackingSection
from unispeech_platform.tracking import RunStore

SWEEP_TAG = "unispeech.sweep"
TRIAL_TAG = "unispeech.trial_id"
STAGE_TAG = "unispeech.stage"
EARLY_TAG = "unispeech.early_stopped"


def open_parent_run(uri: str, section: TrackingSection, sweep_name: str, *, resume: bool) -> str:
    """The sweep's run (reopened by name with --resume)."""
    store = RunStore(uri)
    run_id = store.open_job_run(section.experiment, f"sweep-{sweep_name}", section.run_name, resume=resume)
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
        store = RunStore(self.uri)
        for run in trial_runs(self.uri, self.parent_id, trial.trial_id):
            store.set_tags(run.info.run_id, {EARLY_TAG: str(early).lower(), "unispeech.trial_step_reached": reached})
            if run.info.status == "RUNNING":
                store.finish(run.info.run_id, "FAILED" if failed else "KILLED" if early else "FINISHED")
