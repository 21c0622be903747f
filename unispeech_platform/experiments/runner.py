"""Run an experiment top to bottom with a numbered step line before every stage; a failing stage is named with
its reason (ExperimentStepError) instead of a bare traceback at the end of a long log."""

from __future__ import annotations

import contextlib
import json
import os
import platform
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
from unispeech_platform.runtime.errors import JobSetupError
from unispeech_platform.tracking import RunStore, checked_tracking_uri

EXPERIMENT_TAG = "unispeech.experiment"
MARKER = "experiment.json"
"""Written first into <storage_path>/<experiment.name>: --overwrite only ever removes a directory holding it."""


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


def experiment_dir(cfg: ExperimentConfig) -> tuple[Path, Path]:
    """(storage root, <storage root>/<experiment.name>), both absolute."""
    storage = Path(cfg.experiment.storage_path).resolve()
    return storage, storage / cfg.experiment.name


def check_storage(cfg: ExperimentConfig, *, overwrite: bool) -> Path:
    """The experiment's directory, if it is free or may be replaced: a previous run is kept unless --overwrite,
    and only a directory this job made (it holds MARKER) strictly inside experiment.storage_path is replaced.
    Raises JobSetupError (exit 3) before anything is started or removed."""
    from unispeech_platform.runtime.removal import check_within

    storage, root = experiment_dir(cfg)
    if not os.path.lexists(root):
        return root
    if not overwrite:
        raise JobSetupError(f"{root} holds a previous run of experiment {cfg.experiment.name!r} (kept): pass "
                            "--overwrite to replace it, or set experiment.name to start another")
    check_within(storage, root)
    if root.is_symlink() or not (root / MARKER).is_file():
        raise JobSetupError(f"{root} exists but has no {MARKER}, so this job did not make it: --overwrite only "
                            "replaces an experiment's own directory; remove it yourself or set experiment.name")
    return root


def claim_storage(cfg: ExperimentConfig, *, overwrite: bool) -> Path:
    """Remove the previous run (after check_storage, --overwrite only), then create the directory with MARKER."""
    from unispeech_platform.runtime.removal import remove_tree_within

    root = check_storage(cfg, overwrite=overwrite)
    if root.exists():
        print(f"--overwrite: removing the previous run of this experiment: {root}")
        remove_tree_within(experiment_dir(cfg)[0], root, marker=MARKER)
    root.mkdir(parents=True)
    write_marker(root, {"experiment": cfg.experiment.name, "started": time.time(), "config": resumable_params(cfg)})
    return root


def write_marker(root: Path, record: dict) -> None:
    """Never half-written: --resume and --overwrite both trust it."""
    from unispeech_platform.data.summary import atomic_write_text

    atomic_write_text(root / MARKER, json.dumps(record) + "\n")


RESUME_FREE = ("ray.", "tracking.")
"""Keys a --resume may change: where Ray runs and where MLflow is do not change what the runs compute."""


def resumable_params(cfg: ExperimentConfig) -> dict:
    """The resolved config, flat and redacted, without the RESUME_FREE keys: what a --resume must match."""
    from unispeech_platform.config import loggable_params

    return {k: v for k, v in loggable_params(cfg).items() if not k.startswith(RESUME_FREE)}


def check_resumable(cfg: ExperimentConfig) -> tuple[Path, dict]:
    """The experiment's directory and marker for --resume: it must exist, be this job's (MARKER) and have been
    started with the same config (JobSetupError, exit 3, otherwise: the message names the differing keys)."""
    root = experiment_dir(cfg)[1]
    marker = root / MARKER
    if not marker.is_file():
        raise JobSetupError(f"--resume: {root} holds no run of experiment {cfg.experiment.name!r} "
                            f"(no {MARKER}); start it without --resume")
    record = json.loads(marker.read_text(encoding="utf-8"))
    stored, now = record.get("config"), resumable_params(cfg)
    if stored is None:
        raise JobSetupError(f"--resume: {marker} was written before runs could be resumed; start again with "
                            "--overwrite")
    stored = {k: v for k, v in stored.items() if not k.startswith(RESUME_FREE)}
    differ = sorted(k for k in stored.keys() | now.keys() if stored.get(k) != now.get(k))
    if differ:
        shown = "; ".join(f"{k}: {stored.get(k)!r} then, {now.get(k)!r} now" for k in differ[:5])
        more = f" (+{len(differ) - 5} more)" if len(differ) > 5 else ""
        raise JobSetupError(f"--resume: the config differs from the one {root} was started with ({shown}{more}): "
                            "resume with the same config, or start another experiment.name")
    return root, record


RESULT_SUFFIX = "-result.json"
"""<root>/<label>-result.json: one finished arm and seed (scores, times, MLflow run), written when it ends."""


def save_arm_result(root: Path, result: ArmResult) -> None:
    import dataclasses

    record = {"name": result.name, "seed": result.seed, "label": result.label, "run_id": result.run_id,
              "seconds": result.seconds, "scores": [dataclasses.asdict(s) for s in result.scores],
              "machine": result.machine or machine()}
    from unispeech_platform.data.summary import atomic_write_text

    atomic_write_text(root / f"{result.label}{RESULT_SUFFIX}", json.dumps(record) + "\n")


def load_arm_result(root: Path, label: str, predictions: Path) -> ArmResult | None:
    """A finished arm and seed from its result file and its evaluation's predictions (both written by this job,
    read as JSON), or None when it did not finish."""
    from unispeech_platform.evaluate.scoring import Score
    from unispeech_platform.experiments.statistics import read_utterance_errors

    path = root / f"{label}{RESULT_SUFFIX}"
    if not path.is_file():
        return None
    r = json.loads(path.read_text(encoding="utf-8"))
    return ArmResult(r["name"], [Score(**s) for s in r["scores"]], r["seconds"], r["run_id"], r["seed"],
                     r["label"], read_utterance_errors(predictions), r.get("machine", ""))


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


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}, {platform.system()}"


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

    parent = runs.create(cfg.experiment.name, tags={EXPERIMENT_TAG: cfg.experiment.name, "machine": machine()})
    runs.store.log_params(parent, loggable_params(cfg))
    runs.store.log_text(parent, to_yaml(cfg), "config/experiment.yaml")
    return parent


def clear_arm(root: Path, label: str) -> None:
    """What an unfinished arm and seed left in the experiment's own directory (its stage runs and evaluation),
    removed before it starts again: only inside ``root``, which holds MARKER (check_resumable)."""
    from unispeech_platform.runtime.removal import remove_tree_within

    for stage in ("pretrain", "finetune", "eval"):
        path = root / f"{label}-{stage}"
        if os.path.lexists(path):
            print(f"--resume: removing what the unfinished {label} left: {path}")
            remove_tree_within(root, path)
