"""Run an experiment top to bottom with a numbered step line before every stage; a failing stage is named with
its reason (ExperimentStepError) instead of a bare traceback at the end of a long log."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from unispeech_platform.experiments.config import ExperimentConfig
from unispeech_platform.experiments.pretrain_health import PretrainHealth
from unispeech_platform.experiments.report import (
    ArmResult,
    aggregate_results,
    evaluation_speakers,
    method_note,
    parent_metrics,
    results_tables,
    timing_table,
)
from unispeech_platform.experiments.runs import ArmRuns, ExperimentRuns
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
from unispeech_platform.runtime.layout import RunLayout
from unispeech_platform.tracking import checked_tracking_uri


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


def run_arm(stages: ArmStages, seed: int, label: str, runs: ExperimentRuns | None, planned: ArmRuns | None,
            progress: Progress) -> ArmResult:
    """Pretrain, fine-tune and evaluate one arm with one seed; ``label`` names its runs (<arm> or <arm>-s<seed>),
    created ahead (``planned``, experiments.runs) and written best effort."""
    from unispeech_core.checkpoint import copy_ctc_head
    from unispeech_platform.evaluate.job import run_evaluation
    from unispeech_platform.evaluate.report import PREDICTIONS
    from unispeech_platform.evaluate.tracking import record_evaluation
    from unispeech_platform.experiments.statistics import read_utterance_errors
    from unispeech_platform.train import run_training

    secs: dict[str, float] = {}
    arm_run = planned.arm if planned else None
    if runs and planned:
        runs.start(planned.arm)
    ok = False
    try:
        rows = " (labeled rows only)" if stages.pretrain.data.labeled_only else ""  # a ctc_weight-1 arm
        with progress.step(f"{label}: pretraining on {stages.pretrain.data.path}{rows}", secs, "pretrain"):
            pre = run_training(stages.pretrain, run_id=runs.hand_over(planned.pretrain) if runs and planned else None)
        if stages.continued is not None:  # a two-stage arm: contrastive-only on the unlabeled target audio
            with progress.step(f"{label}: continued pretraining on the unlabeled rows of "
                               f"{','.join(stages.continued.data.langs or [])} from stage 1", secs, "continued"):
                pre = run_training(stages.continued,
                                   run_id=runs.hand_over(planned.continued) if runs and planned else None)
        if stages.init_dir != pre.export_dir:
            copy_ctc_head(pre.export_dir, stages.init_dir)
        with progress.step(f"{label}: CTC fine-tuning on {stages.finetune.data.path}", secs, "finetune"):
            run_training(stages.finetune, run_id=runs.hand_over(planned.finetune) if runs and planned else None)
        with progress.step(f"{label}: per-language PER", secs, "evaluate"):
            evaluation = run_evaluation(stages.evaluate)
            scores = evaluation.scores
            utterances = read_utterance_errors(Path(evaluation.out_dir) / PREDICTIONS,
                                               evaluation_speakers(stages.evaluate))
            if runs and planned:  # the arm's table scores, and the evaluation's own run at the model's update
                model_path = stages.evaluate.evaluate.model_path
                record_evaluation(runs.best, planned.arm, model_path=model_path, metrics=evaluation.metrics,
                                  out_dir=evaluation.out_dir, artifact_path="evaluation", job="evaluate")
                if planned.evaluate:
                    runs.start(planned.evaluate)
                    record_evaluation(runs.best, planned.evaluate, model_path=model_path, metrics=evaluation.metrics,
                                      out_dir=evaluation.out_dir, artifact_path="evaluation", job="evaluate",
                                      step=evaluation.step)
                    runs.finish(planned.evaluate, True)
        ok = True
    finally:
        if runs and planned:
            if secs:
                runs.best.log_metrics(planned.arm, {f"time/{k}_s": v for k, v in secs.items()}, 0)
            runs.finish(planned.arm, ok)
    return ArmResult(stages.name, scores, secs, arm_run, seed, label, utterances,
                     health=pretraining_health(stages, runs, planned))


def pretraining_health(stages: ArmStages, runs: ExperimentRuns | None, planned: ArmRuns | None
                       ) -> dict[str, PretrainHealth]:
    """Each pretraining stage's contrastive half from its MLflow history, best effort: a table row missing
    after an outage costs no result."""
    from unispeech_platform.config.redact import redact_uri
    from unispeech_platform.experiments.pretrain_health import read_health
    from unispeech_platform.runtime.errors import first_line
    from unispeech_platform.tracking.best_effort import held_spools
    from unispeech_platform.tracking.spool import spool_path

    if not (runs and planned):
        return {}
    out: dict[str, PretrainHealth] = {}
    for stage, job, run_id in (("pretrain", stages.pretrain, planned.pretrain),
                               ("continued", stages.continued, planned.continued)):
        if job is None or run_id is None:
            continue
        if held_spools([spool_path(RunLayout.of(job.checkpoint))]):  # MLflow was away: its history is partial
            print(f"WARNING: no pretraining health row for {stage} of {stages.name}: MLflow has not received its "
                  "whole history yet (an outage; replayed by --resume)", flush=True)
            continue
        try:
            out[stage] = read_health(runs.store, run_id, job.model.effective("num_negatives"),
                                     contrastive=job.model.effective("ctc_weight") < 1.0,
                                     groups=job.model.effective("num_codevector_groups"),
                                     collapse_perplexity=job.train.collapse_perplexity)
        except Exception as e:  # noqa: BLE001 - the result matters more than its health row
            print(f"WARNING: no pretraining health row for {stage} of {stages.name}: "
                  f"{first_line(e, clean=redact_uri)}", flush=True)
    return out


def check_stage_data(stages: list[ArmStages]) -> None:
    """Every stage's corpus (paths, splits, schema, a sample of data pages, vocabulary) before Ray starts:
    CorpusError (exit 3) names the file. Stages sharing a corpus and splits are checked once."""
    from unispeech_platform.data.validate import check_corpus

    seen: set[tuple] = set()
    for st in stages:
        continued = [(st.continued.data, st.continued.data.train_splits)] if st.continued else []
        for data, splits in ((st.pretrain.data, st.pretrain.data.train_splits), *continued,
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
    from unispeech_platform.runtime.console import progress_bars
    from unispeech_platform.runtime.ray_session import connect_ray

    exp = cfg.experiment
    # corpus, Ray, then per arm and seed: pretraining (+ a two-stage arm's continued stage), fine-tuning, evaluation
    progress = Progress(2 + (3 * len(exp.arms) + len(exp.continued)) * len(exp.seeds))
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
        build_corpora(cfg.corpus, progress=progress_bars())  # --no-progress: no synthesis bar
    check_stage_data([st for _, st in stages])
    labels = [exp.run_label(st.name, seed) for seed, st in stages]
    done = [load_arm_result(root, label, Path(st.evaluate.evaluate.output_dir) / PREDICTIONS,
                            evaluation_speakers(st.evaluate)) if resume else None
            for label, (_, st) in zip(labels, stages)]
    runs, parent, planned = None, None, {}
    record["attempt"] = record.get("attempt", -1) + 1  # 0, then 1 for the first --resume, ...
    if uri:
        runs = ExperimentRuns(uri, cfg, root, stage_runs(st for _, st in stages))
        parent = runs.open_parent(record.get("parent_run") if resume else None)
        planned = {label: runs.plan(label, parent, {"unispeech.arm": st.name, "unispeech.seed": str(seed)},
                                    continued=st.continued is not None)
                   for label, (seed, st), d in zip(labels, stages, done) if d is None}
    record["parent_run"] = parent
    write_marker(root, record)
    with progress.step("Ray: join RAY_ADDRESS or start a local Ray"):
        connect_ray(cfg.ray)
    results, kept, ok, ref = [], {}, False, exp.reference_arm or list(exp.arms)[-1]
    try:
        for label, (seed, st), finished in zip(labels, stages, done):
            if finished is not None:
                progress.skip(3, f"{label}: finished before this --resume, kept ({label}{RESULT_SUFFIX})")
                results.append(finished)
                kept[label] = finished.machine
                continue
            if resume:
                clear_arm(root, label)
            results.append(run_arm(st, seed, label, runs, planned.get(label), progress))
            save_arm_result(root, results[-1])
            if runs:
                runs.replay()  # what an outage left unrecorded, as soon as the server answers again
        aggs = aggregate_results(results, ref)
        table, seconds = results_tables(aggs), time.perf_counter() - progress.start
        if runs:  # at the attempt's step: a --resume that ran an arm again changes the aggregates
            runs.best.log_metrics(parent, {**parent_metrics(aggs), "time/total_s": seconds}, record["attempt"])
            runs.best.log_text(parent, f"{table}\n{method_note(aggs)}\n{timing_table(results)}", "results.md")
        ok = True
    finally:
        if runs:
            runs.cancel_waiting()
            runs.finish(parent, ok)
            if line := runs.pending_line():
                print(line, flush=True)
    return ExperimentResult(results, table, timing_table(results), seconds, parent, uri,
                            runs.experiment_id if runs else None, aggs, kept)


def stage_runs(stages: Iterable[ArmStages]) -> list[RunLayout]:
    """The run of every training stage: their records are replayed by the experiment, since a finished
    stage's job never starts again to replay them itself."""
    return [RunLayout.of(job.checkpoint) for st in stages
            for job in (st.pretrain, st.continued, st.finetune) if job is not None]
