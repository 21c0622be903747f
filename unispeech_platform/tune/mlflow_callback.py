"""MLflow for sweeps: one parent run per sweep, a nested run per trial (and per fine-tuning stage below it), and
a Tune callback that closes the runs of trials Tune ends itself.

ASHA stops a trial by killing its actor, so the trial's own code never marks its MLflow run finished: without
``CloseTrialRuns`` those runs stay RUNNING forever. Early-stopped runs end as KILLED with a tag saying so.
"""

from __future__ import annotations

from ray.tune import Callback

from unispeech_platform.config.sections import TrackingSection
from unispeech_platform.tracking.mlflow_tracker import open_run

PARENT_TAG = "mlflow.parentRunId"
SWEEP_TAG = "unispeech.sweep"
TRIAL_TAG = "unispeech.trial_id"
STAGE_TAG = "unispeech.stage"
EARLY_TAG = "unispeech.early_stopped"


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def open_parent_run(uri: str, section: TrackingSection, sweep_name: str, *, resume: bool) -> str:
    """The sweep's run (reopened by name with --resume)."""
    run_id = open_run(uri, section, f"sweep-{sweep_name}", resume=resume)
    _client(uri).set_tag(run_id, SWEEP_TAG, sweep_name)
    return run_id


def nested_run(uri: str, parent_id: str, trial_id: str, name: str, stage: str) -> str:
    """Find or create the run of one trial stage below ``parent_id`` (a restored trial reuses its run): the
    pretraining stage is nested under the sweep's run, a fine-tuning stage under its trial's pretraining run."""
    client = _client(uri)
    parent = client.get_run(parent_id)
    exp_id = parent.info.experiment_id
    found = client.search_runs(
        [exp_id], filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}' and tags.`{STAGE_TAG}` = '{stage}'"
    )
    if found:
        client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    tags = {PARENT_TAG: parent_id, TRIAL_TAG: trial_id, STAGE_TAG: stage,
            SWEEP_TAG: parent.data.tags.get(SWEEP_TAG, "")}
    return client.create_run(exp_id, run_name=name, tags=tags).info.run_id


def trial_runs(uri: str, parent_id: str, trial_id: str) -> list:
    """Every MLflow run of a trial (its stages), searched by tags."""
    client = _client(uri)
    exp_id = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp_id], filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}'")


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
        client = _client(self.uri)
        for run in trial_runs(self.uri, self.parent_id, trial.trial_id):
            client.set_tag(run.info.run_id, EARLY_TAG, str(early).lower())
            client.set_tag(run.info.run_id, "unispeech.trial_step_reached", str(reached))
            if run.info.status == "RUNNING":
                status = "FAILED" if failed else "KILLED" if early else "FINISHED"
                client.set_terminated(run.info.run_id, status=status)
