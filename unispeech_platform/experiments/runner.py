"""Run an experiment top to bottom with a numbered step line before every stage; a failing stage is named with
its reason (ExperimentStepError) instead of a bare traceback at the end of a long log."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from unispeech_platform.experiments.config import ExperimentConfig
from unispeech_platform.experiments.report import (
    ArmResult,
    aggregate_results,
    method_note,
    parent_metrics,
    results_tables,
    timing_table,
)
from unispeech_platform.experiments.stages import ArmStages, arm_stages
from unispeech_platform.experiments.statistics import Aggregate
from unispeech_platform.experiments.storage import (
    MARKER,
    RESULT_SUFFIX,
    check_resumable,
    check_storage,
    claim_storage,
    clear_arm,
    load_arm_result,
    save_arm_result,
    write_marker,
)
from unispeech_platform.runtime.hardware import machine_line
from unispeech_platform.tracking import RunStore, checked_tracking_uri

EXPERIMENT_TAG = "unispeech.experiment"


class ExperimentStepError(RuntimeError):
    """A stage failed; the message names it and why."""


@dataclass
class ExperimentResult:
    arms: list[ArmResult]
    """One per (seed, arm), in run order."""
    table: str
    timings: str
    seconds: float
    run_id: str | None
    tracking_uri: str | None
    experiment_id: str | None
    aggregates: dict[str, Aggregate] = field(default_factory=dict)
    """split -> mean ± sd over seeds and the reductions with their CIs (what ``table`` shows)."""
    kept: dict[str, str] = field(default_factory=dict)
    """--resume: label -> machine of each arm and seed that finished before it (not run again)."""


class Progress:
    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.perf_counter()

    @contextlib.contextmanager
    def step(self, title: str, seconds: dict[str, float] | None = None, key: str | None = None):
        self.done += 1
        t0 = time.perf_counter()
        print(f"\n==> [{self.done}/{self.total}] {title}  (t+{t0 - self.start:.0f}s)", flush=True)
        try:
            yield
        except Exception as e:  # name the step, keep the cause chained for the traceback
            raise ExperimentStepError(f"step {self.done}/{self.total} '{title}' failed: {type(e).__name__}: {e}") from e
        dt = time.perf_counter() - t0
        if seconds is not None and key:
            seconds[key] = dt
        print(f"<== [{self.done}/{self.total}] {title}: done in {dt:.0f}s", flush=True)

    def skip(self, steps: int, title: str) -> None:
        """Steps a --resume does not run again (a finished arm and seed): counted, with one line."""
        self.done += steps
        print(f"\n==> [{self.done}/{self.total}] {title}", flush=True)


SEEDED_KEYS = ("train.seed", "data.seed")
"""Set per run from experiment.seeds; a stage or arm override of them would make every seed the same run."""


def validate(cfg: ExperimentConfig) -> list[ArmStages]:
    """Every stage config of every arm and seed, built without Ray (raises ConfigError)."""
    from unispeech_platform.config import ConfigError, flatten

    exp = cfg.experiment
    ref = exp.reference_arm
    if ref is not None and ref not in exp.arms:
        raise ConfigError(f"experiment.reference_arm={ref!r} is not an arm ({list(exp.arms)})")
    for where, overrides in [("pretrain.overrides", cfg.pretrain.overrides),
                             ("finetune.overrides", cfg.finetune.overrides),
                             *((f"experiment.arms.{arm}", o) for arm, o in exp.arms.items())]:
        clash = [k for k in SEEDED_KEYS if k in flatten(overrides)]
        if clash:
            raise ConfigError(f"{where}: {', '.join(clash)} is set per run from experiment.seeds "
                              f"(now {exp.seeds}); remove it there and list the seeds in experiment.seeds")
    uri = "sqlite:///validate.db" if cfg.tracking.enabled else None
    return [arm_stages(cfg, arm, uri, seed=seed) for seed in exp.seeds for arm in exp.arms]


@dataclass
class ExperimentRuns:
    """The experiment's MLflow layout: a parent run, a child run per arm, the arm's pretrain/finetune job runs
    nested under it (so the UI shows the tree)."""

    store: RunStore
    experiment_id: str

    def create(self, name: str, parent: str | None = None, tags: dict[str, str] | None = None) -> str:
        return self.store.create_run(self.experiment_id, name, parent=parent, tags=tags)

    def finish(self, run_id: str, ok: bool) -> None:
        self.store.finish(run_id, "FINISHED" if ok else "FAILED")


def run_arm(stages: ArmStages, seed: int, label: str, runs: ExperimentRuns | None, parent: str | None,
            progress: Progress) -> ArmResult:
    """Pretrain, fine-tune and evaluate one arm with one seed; ``label`` names its runs (<arm> or <arm>-s<seed>)."""
    from unispeech_core.checkpoint import copy_ctc_head
    from unispeech_platform.evaluate.job import run_evaluation
    from unispeech_platform.evaluate.report import PREDICTIONS
    from unispeech_platform.experiments.statistics import read_utterance_errors
    from unispeech_platform.train import run_training

    secs: dict[str, float] = {}
    tags = {"unispeech.arm": stages.name, "unispeech.seed": str(seed)}
    arm_run = runs.create(label, parent, tags) if runs else None
    ok = False
    try:
        rows = " (labeled rows only)" if stages.pretrain.data.labeled_only else ""  # a ctc_weight-1 arm
        with progress.step(f"{label}: pretraining on {stages.pretrain.data.path}{rows}", secs, "pretrain"):
            pre_run = runs.create(f"{label}/pretrain", arm_run) if runs else None
            pre = run_training(stages.pretrain, run_id=pre_run)
            if stages.init_dir != pre.export_dir:
                copy_ctc_head(pre.export_dir, stages.init_dir)
        with progress.step(f"{label}: CTC fine-tuning on {stages.finetune.data.path}", secs, "finetune"):
            ft_run = runs.create(f"{label}/finetune", arm_run) if runs else None
            run_training(stages.finetune, run_id=ft_run)
        with progress.step(f"{label}: per-language PER", secs, "evaluate"):
            ev = stages.evaluate.model_copy(deep=True)
            ev.evaluate.run_id = arm_run
            evaluation = run_evaluation(ev)
            scores = evaluation.scores
            utterances = read_utterance_errors(Path(evaluation.out_dir) / PREDICTIONS)
        ok = True
    finally:
        if runs:
            if secs:
                runs.store.log_metrics(arm_run, {f"time/{k}_s": v for k, v in secs.items()})
            runs.finish(arm_run, ok)
    return ArmResult(stages.name, scores, secs, arm_run, seed, label, utterances)


def check_stage_data(stages: list[ArmStages]) -> None:
    """Every stage's corpus (paths, splits, schema, a sample of data pages, vocabulary) before Ray starts:
    CorpusError (exit 3) names the file. Stages sharing a corpus and splits are checked once."""
    from unispeech_platform.data.validate import check_corpus

    seen: set[tuple] = set()
    for st in stages:
        for data, splits in ((st.pretrain.data, st.pretrain.data.train_splits),
                             (st.finetune.data, st.finetune.data.train_splits),
                             (st.evaluate.data, st.evaluate.evaluate.splits)):
            key = (data.path, str(data.resolved_vocab_path()), tuple(data.langs or ()), tuple(splits))
            if key not in seen:
                seen.add(key)
                check_corpus(data, splits)


def run_experiment(cfg: ExperimentConfig, *, overwrite: bool = False, resume: bool = False) -> ExperimentResult:
    """Corpus -> Ray -> for each arm: pretrain, fine-tune, evaluate; the parent MLflow run gets the table.
    A previous run of the experiment is replaced only with ``overwrite`` (check_storage); ``resume`` continues it
    instead (check_resumable): finished arms and seeds are kept (their result files), the first unfinished one
    starts again from pretraining, and the parent MLflow run is reopened."""
    from unispeech_platform.evaluate.report import PREDICTIONS
    from unispeech_platform.experiments.corpus import build_corpora
    from unispeech_platform.runtime.ray_session import connect_ray

    exp = cfg.experiment
    progress = Progress(2 + 3 * len(exp.arms) * len(exp.seeds))
    if resume:
        root, record = check_resumable(cfg)
    else:
        check_storage(cfg, overwrite=overwrite)
    uri = checked_tracking_uri(cfg.tracking)
    # seed-major: a run stopped early still holds a complete comparison of every arm for the first seeds
    stages = [(seed, arm_stages(cfg, arm, uri, seed=seed)) for seed in exp.seeds for arm in exp.arms]
    if not resume:
        root = claim_storage(cfg, overwrite=overwrite)
        record = json.loads((root / MARKER).read_text(encoding="utf-8"))
    with progress.step(f"corpus: {cfg.corpus.high_resource} (pretraining) + {cfg.corpus.low_resource} (targets)"):
        build_corpora(cfg.corpus)
    check_stage_data([st for _, st in stages])
    runs = None
    if uri:
        store = RunStore(uri)
        runs = ExperimentRuns(store, store.experiment_id(cfg.tracking.experiment))
    parent = open_parent(runs, cfg, record.get("parent_run") if resume else None)
    record["parent_run"] = parent
    write_marker(root, record)
    with progress.step("Ray: join RAY_ADDRESS or start a local Ray"):
        connect_ray(cfg.ray)
    results, kept, ok, ref = [], {}, False, exp.reference_arm or list(exp.arms)[-1]
    try:
        for seed, st in stages:
            label = exp.run_label(st.name, seed)
            predictions = Path(st.evaluate.evaluate.output_dir) / PREDICTIONS
            done = load_arm_result(root, label, predictions) if resume else None
            if done is not None:
                progress.skip(3, f"{label}: finished before this --resume, kept ({label}{RESULT_SUFFIX})")
                results.append(done)
                kept[label] = done.machine
                continue
            if resume:
                clear_arm(root, label)
            results.append(run_arm(st, seed, label, runs, parent, progress))
            save_arm_result(root, results[-1])
        aggs = aggregate_results(results, ref)
        table, seconds = results_tables(aggs), time.perf_counter() - progress.start
        if runs:
            runs.store.log_metrics(parent, {**parent_metrics(aggs), "time/total_s": seconds})
            runs.store.log_text(parent, f"{table}\n{method_note(aggs)}\n{timing_table(results)}", "results.md")
        ok = True
    finally:
        if runs:
            runs.finish(parent, ok)
    return ExperimentResult(results, table, timing_table(results), seconds, parent, uri,
                            runs.experiment_id if runs else None, aggs, kept)


def open_parent(runs: ExperimentRuns | None, cfg: ExperimentConfig, previous: str | None) -> str | None:
    """The experiment's parent MLflow run: the previous attempt's reopened on --resume (its unfinished child runs
    marked KILLED), else a new one with the config."""
    if runs is None:
        return None
    if previous and runs.store.exists(previous):
        from unispeech_platform.tracking.store import PARENT_TAG

        stale = [previous]
        while stale:  # the interrupted arm's run and its pretrain/finetune runs, left RUNNING by a killed process
            for run in runs.store.find_runs(runs.experiment_id, {PARENT_TAG: stale.pop()}):
                if run.info.status == "RUNNING":
                    runs.store.finish(run.info.run_id, "KILLED")
                    stale.append(run.info.run_id)
        return runs.store.reopen(previous)
    from unispeech_platform.config import loggable_params, to_yaml

    parent = runs.create(cfg.experiment.name, tags={EXPERIMENT_TAG: cfg.experiment.name, "machine": machine_line()})
    runs.store.log_params(parent, loggable_params(cfg))
    runs.store.log_text(parent, to_yaml(cfg), "config/experiment.yaml")
    return parent
