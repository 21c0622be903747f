"""(No Ray, no server) The experiment's MLflow runs: planned at the start and SCHEDULED; an arm that starts is
RUNNING; an experiment that stops early leaves no run waiting (KILLED), and a --resume after a SIGKILL marks
whatever an interrupted attempt left RUNNING or SCHEDULED KILLED, at any depth. The outage itself, with a real
server and Ray, is tests/test_crosslingual.py."""

from __future__ import annotations

from evaluate_helpers import ROOT

from unispeech_platform.experiments.runs import ExperimentRuns


def _runs(tmp_path) -> ExperimentRuns:
    from unispeech_platform.config import load_config
    from unispeech_platform.experiments.config import ExperimentConfig

    cfg = load_config(ExperimentConfig, ROOT / "configs" / "crosslingual_tiny.yaml",
                      [f"experiment.storage_path={tmp_path / 'runs'}"])
    root = tmp_path / "runs" / "crosslingual-tiny"
    root.mkdir(parents=True, exist_ok=True)
    return ExperimentRuns(f"sqlite:///{tmp_path / 'mlflow.db'}", cfg, root, [])


def _status(runs: ExperimentRuns, run_id: str) -> str:
    return runs.store.run(run_id).info.status


def test_planned_runs_wait_and_an_early_stop_kills_those_never_reached(tmp_path):
    runs = _runs(tmp_path)
    parent = runs.open_parent(None)
    first, second = (runs.plan(label, parent, {"unispeech.arm": label}) for label in ("supervised", "unispeech"))
    assert {_status(runs, r) for r in (first.arm, first.pretrain, second.finetune)} == {"SCHEDULED"}
    runs.start(first.arm)
    runs.hand_over(first.pretrain)  # its training job marks it RUNNING and ends it; here it fails before that
    assert _status(runs, first.arm) == "RUNNING"
    runs.finish(first.arm, ok=False)
    runs.cancel_waiting()  # the experiment stops: the failed arm's finetune and the whole second arm never ran
    assert _status(runs, first.arm) == "FAILED" and _status(runs, first.pretrain) == "SCHEDULED"
    assert {_status(runs, r) for r in (first.finetune, second.arm, second.pretrain, second.finetune)} == {"KILLED"}

    # A SIGKILL runs no finally: the next --resume finds the parent and kills what was left waiting, even a stage
    # run under an arm that had already ended, and reopens the same parent.
    again = _runs(tmp_path)
    assert again.open_parent(parent) == parent and _status(again, parent) == "RUNNING"
    assert _status(again, first.pretrain) == "KILLED" and _status(again, first.arm) == "FAILED"
