"""The experiment's MLflow runs: a parent run, a child run per arm and seed, and that arm's pretrain/finetune job
runs nested under it, the evaluation's run nested under the finetune run (the UI shows the tree).

Every run is created when the experiment starts, while the server is known to answer, and waits SCHEDULED until
its stage starts. After that nothing the experiment records needs the server: records go through RunTracking,
so an outage during an experiment of hours keeps them (in the experiment's storage and each stage's run directory)
and never fails a stage. They are replayed when the server answers again: at the next arm, at the end, or by a
later ``--resume`` (docs/training.md#tracking-outages)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from unispeech_platform.config.redact import redact_uri
from unispeech_platform.experiments.config import ExperimentConfig
from unispeech_platform.runtime.hardware import machine_line
from unispeech_platform.runtime.layout import RunLayout
from unispeech_platform.tracking import (
    JOB_TAG,
    PARENT_TAG,
    RunStore,
    RunTracking,
    TrackingError,
    resolve_experiment,
)
from unispeech_platform.tracking.retry import with_retries

EXPERIMENT_TAG = "unispeech.experiment"
WAITING = ("RUNNING", "SCHEDULED")
"""Statuses of runs an earlier, interrupted attempt left open: marked KILLED by a --resume."""


@dataclass(frozen=True)
class ArmRuns:
    """The runs of one arm and seed: its own (table scores, stage times) and its two training jobs'."""

    arm: str
    pretrain: str
    finetune: str
    continued: str | None = None
    """A two-stage arm's second pretraining stage (experiment.continued)."""
    evaluate: str | None = None
    """The evaluation of the fine-tuned model, nested under the finetune run (its metrics at the model's update)."""


class ExperimentRuns:
    def __init__(self, uri: str, cfg: ExperimentConfig, root: Path, stages: Iterable[RunLayout]):
        """``root``: the experiment's storage; ``stages``: the run of every training stage (their records are
        replayed by the experiment, since a finished stage's job never starts again to replay them itself)."""
        self.uri, self.cfg = uri, cfg
        self.store = RunStore(uri)
        self.best = RunTracking(uri, root, stages=stages)
        self.waiting: set[str] = set()
        """Planned runs no stage has started: KILLED if the experiment stops before it reaches them."""
        self.experiment_id = self._at_start("find the MLflow experiment",
                                            lambda: self.store.experiment_id(resolve_experiment(cfg.tracking)))

    def _at_start(self, what: str, call):
        """A call made before any stage runs: an unusable server fails the experiment here (exit 3), before hours
        of work whose runs could not be opened."""
        try:
            return with_retries(call)
        except Exception as e:
            raise TrackingError(f"cannot {what} in {redact_uri(self.uri)}: {redact_uri(str(e))[:300]}") from None

    # -- at the start ----------------------------------------------------------------------------------------
    def open_parent(self, previous: str | None) -> str:
        """The parent run: the previous attempt's reopened on --resume (after replaying what that attempt could
        not record; its unfinished runs marked KILLED), else a new one with the config."""
        if previous and self._at_start("look up the parent run", lambda: self.store.exists(previous)):
            self.best.replay_or_fail("an earlier attempt")
            self._at_start("mark the interrupted runs KILLED", lambda: self._kill_waiting(previous))
            return self._at_start("reopen the parent run", lambda: self.store.reopen(previous))
        from unispeech_platform.config import loggable_params, to_yaml

        def create() -> str:
            name = self.cfg.experiment.name
            parent = self.store.create_run(self.experiment_id, name,
                                           tags={EXPERIMENT_TAG: name, "machine": machine_line()})
            self.store.log_params(parent, loggable_params(self.cfg))
            self.store.log_text(parent, to_yaml(self.cfg), "config/experiment.yaml")
            return parent

        return self._at_start("create the parent run", create)

    def _kill_waiting(self, parent: str) -> None:
        tree = [parent]
        while tree:  # the interrupted arm's run and its stage runs, and the runs planned for arms never started
            for run in self.store.find_runs(self.experiment_id, {PARENT_TAG: tree.pop()}):
                if run.info.status in WAITING:
                    self.store.finish(run.info.run_id, "KILLED")
                tree.append(run.info.run_id)

    def plan(self, label: str, parent: str, tags: dict[str, str], *, continued: bool = False) -> ArmRuns:
        """The arm's run and its stage runs (pretrain, finetune, and a two-stage arm's continued), created now and
        SCHEDULED."""
        def create() -> ArmRuns:
            arm = self.store.schedule(self.store.create_run(self.experiment_id, label, parent=parent, tags=tags))
            names = ("pretrain", "finetune", "continued") if continued else ("pretrain", "finetune")
            stages = [self.store.schedule(self.store.create_run(self.experiment_id, f"{label}/{stage}", parent=arm))
                      for stage in names]
            evaluate = self.store.schedule(self.store.create_run(
                self.experiment_id, f"{label}/evaluate", parent=stages[1], tags={JOB_TAG: "evaluate"}))
            return ArmRuns(arm, *stages, evaluate=evaluate)

        planned = self._at_start(f"create the runs of {label}", create)
        self.waiting.update(r for r in (planned.arm, planned.pretrain, planned.finetune, planned.continued,
                                        planned.evaluate) if r)
        return planned

    # -- during and after: best effort -----------------------------------------------------------------------
    def start(self, run_id: str) -> None:
        """An arm's run: RUNNING now."""
        self.waiting.discard(run_id)
        self.best.reopen(run_id)

    def hand_over(self, run_id: str) -> str:
        """A stage run given to its training job, which marks it RUNNING (train.driver)."""
        self.waiting.discard(run_id)
        return run_id

    def cancel_waiting(self) -> None:
        """The experiment stops (a failed stage, Ctrl-C): the runs it never reached are KILLED, not left waiting."""
        for run_id in sorted(self.waiting):
            self.best.end(run_id, "KILLED")
        self.waiting.clear()

    def finish(self, run_id: str, ok: bool) -> None:
        self.best.end(run_id, "FINISHED" if ok else "FAILED")

    def replay(self) -> None:
        """What an outage left of the experiment's and its finished stages' records, as soon as the server
        answers again."""
        self.best.replay()

    def pending_line(self) -> str | None:
        """A warning naming where records are still kept (the server away at the end), else None."""
        return self.best.held_line("this experiment runs again with --resume")
