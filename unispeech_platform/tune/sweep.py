"""``python -m jobs.sweep``: validate (no Ray) -> parent MLflow run -> Tuner over trial driver functions with ASHA
on ``trial_step`` -> trials table, knob plot and best-config YAML logged to the parent run."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unispeech_platform.config import (
    FinetuneJobConfig,
    PretrainJobConfig,
    load_config,
    to_yaml,
    with_overrides,
)
from unispeech_platform.runtime.errors import JobSetupError
from unispeech_platform.runtime.layout import RunLayout
from unispeech_platform.runtime.ray_session import connect_ray, decide_use_gpu
from unispeech_platform.tracking.uri import resolve_experiment
from unispeech_platform.tune.config import SweepJobConfig, SweepSection
from unispeech_platform.tune.search_space import (
    default_metric,
    grace_period,
    to_tune,
    trial_steps,
    validate_sweep,
)

if TYPE_CHECKING:
    from unispeech_platform.train.health import Objective, Thresholds
    from unispeech_platform.tune.driver import TrialSetup
    from unispeech_platform.tune.report import TrialObjective

log = logging.getLogger("unispeech.sweep")


@dataclass
class SweepResult:
    rows: list[dict[str, Any]]
    """The trials table."""
    best: dict[str, Any] | None
    best_config: str | None
    """Ready-to-run pretraining YAML of the best trial."""
    report_dir: str
    experiment_dir: str
    parent_run_id: str | None
    tracking_uri: str | None


def _abs_paths(job, overrides: dict[str, Any]) -> dict[str, Any]:
    """Trial actors run in their own directories: ship the data paths absolute (URIs unchanged). Flattened first:
    ``--set sweep.pretrain_overrides.data.path=...`` arrives nested (``{"data": {"path": ...}}``) beside the YAML's
    dotted ``data.path``, and applying both (flattened, in order) would set the nested, still relative, one last."""
    from unispeech_platform.config import flatten
    from unispeech_platform.data.storage import absolute

    out = {**flatten(overrides), "data.path": absolute(job.data.path)}
    if job.data.vocab_path:
        out["data.vocab_path"] = absolute(job.data.vocab_path)
    return out


def _concurrency(sweep: SweepSection, job: PretrainJobConfig) -> int:
    import ray

    if sweep.max_concurrent:
        return sweep.max_concurrent
    res = ray.cluster_resources()
    if decide_use_gpu(job.train.use_gpu, job.train.num_workers):
        return max(1, int(res.get("GPU", 0) // job.train.num_workers))
    per_trial = job.train.num_workers * job.train.cpus_per_worker + 1  # +1: the trial's Ray Data tasks
    return max(1, int(res.get("CPU", 1) // per_trial))


def _best_configs(sw: SweepSection, setup: TrialSetup, best: dict[str, Any], out: Path) -> str:
    """Ready-to-run stage YAMLs of the best trial: the trials' configs with its sampled values."""
    name = f"{sw.name}-best"
    pre = with_overrides(setup.pretrain, {**{k: best[k] for k in sw.search_space}, "checkpoint.name": name})
    (out / "best_pretrain.yaml").write_text(to_yaml(pre), encoding="utf-8")
    if setup.finetune is not None:
        ft = with_overrides(setup.finetune, {"finetune.init_from": RunLayout.of(pre.checkpoint).export_dir,
                                             "checkpoint.name": f"{name}-finetune"})
        (out / "best_finetune.yaml").write_text(to_yaml(ft), encoding="utf-8")
    return str(out / "best_pretrain.yaml")


def _trial_setup(cfg: SweepJobConfig, pre: PretrainJobConfig, ft: FinetuneJobConfig | None, runs_dir: Path,
                 uri: str | None, parent: str | None) -> TrialSetup:
    """What every trial gets: its stage configs, typed, with the sweep's fixed overrides and the data paths
    absolute (``pre``/``ft``: the validated stages, whose data paths those are)."""
    from unispeech_platform.tune.driver import TrialSetup

    sw = cfg.sweep
    finetune = None
    if ft is not None and sw.finetune_config:
        finetune = load_config(FinetuneJobConfig, sw.finetune_config, values=_abs_paths(ft, sw.finetune_overrides))
    return TrialSetup(
        pretrain=load_config(PretrainJobConfig, sw.pretrain_config, values=_abs_paths(pre, sw.pretrain_overrides)),
        finetune=finetune, metric=default_metric(sw), init_ctc_head=sw.init_ctc_head, runs_dir=str(runs_dir),
        tracking_uri=uri, experiment=resolve_experiment(cfg.tracking), parent_run_id=parent,
    )


def check_sweep_storage(exp_dir: Path, *, resume: bool) -> None:
    """A new sweep starts only where no sweep of that name left anything: its Tune directory, its trials'
    training runs (<name>-trials, which a new trial of the same id would silently resume) and its report
    (<name>-report) are kept, never replaced; --resume needs the Tune directory."""
    if resume:
        if not exp_dir.exists():
            raise JobSetupError(f"--resume: no sweep to resume at {exp_dir}")
        return
    for path in (exp_dir, exp_dir.with_name(f"{exp_dir.name}-trials"), exp_dir.with_name(f"{exp_dir.name}-report")):
        if os.path.lexists(path):
            raise JobSetupError(f"{path} exists (kept): pass --resume to continue that sweep, or set sweep.name")


def run_sweep(cfg: SweepJobConfig, *, resume: bool = False) -> SweepResult:
    """Validate and check everything before Ray, then fit (or resume) the Tuner and report."""
    from unispeech_platform.data.validate import check_corpus
    from unispeech_platform.tracking import checked_tracking_uri

    sw = cfg.sweep
    pre, ft = validate_sweep(sw)  # ConfigError before Ray
    storage = os.path.abspath(sw.storage_path)
    exp_dir = Path(storage, sw.name)
    check_sweep_storage(exp_dir, resume=resume)
    check_corpus(pre.data, pre.data.train_splits)  # trials would each fail on it after Ray started
    if ft is not None:
        check_corpus(ft.data, ft.data.train_splits)
    uri = checked_tracking_uri(cfg.tracking)

    connect_ray(cfg.ray)
    from ray import tune

    from unispeech_platform.tune.driver import run_trial
    from unispeech_platform.tune.mlflow_callback import open_parent_run, replay_earlier_attempt

    runs_dir = Path(storage, f"{sw.name}-trials")
    if uri and resume:
        replay_earlier_attempt(uri, runs_dir)
    parent = open_parent_run(uri, cfg.tracking, sw.name, resume=resume) if uri else None
    setup = _trial_setup(cfg, pre, ft, runs_dir, uri, parent)
    trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup), {"CPU": 0.01})
    if resume:
        tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = _new_tuner(cfg, trainable, setup)
    return _report(sw, tuner.fit(), setup, exp_dir)


def _new_tuner(cfg: SweepJobConfig, trainable: Any, setup: TrialSetup) -> Any:
    """A fresh sweep: its space logged to the parent run, ASHA (or FIFO) on trial_step, bounded concurrency."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    from unispeech_platform.tracking import RunStore
    from unispeech_platform.tune.mlflow_callback import CloseTrialRuns

    sw, uri, parent, pre = cfg.sweep, setup.tracking_uri, setup.parent_run_id, setup.pretrain
    metric, total_steps = setup.metric, trial_steps(setup.pretrain, setup.finetune)
    if uri:
        params = {"sweep.metric": metric, "sweep.num_samples": sw.num_samples, "sweep.scheduler": sw.scheduler,
                  **{f"space.{k}": d.model_dump(exclude_none=True) for k, d in sw.search_space.items()}}
        RunStore(uri).log_params(parent, params)
    scheduler = FIFOScheduler() if sw.scheduler == "fifo" else ASHAScheduler(
        time_attr="trial_step", max_t=total_steps, grace_period=grace_period(sw, pre),
        reduction_factor=sw.reduction_factor)
    return tune.Tuner(
        trainable,
        param_space=to_tune(sw.search_space),
        tune_config=tune.TuneConfig(
            metric=metric, mode=sw.mode, num_samples=sw.num_samples, scheduler=scheduler,
            # the generator enforces the limit itself (Tune ignores max_concurrent_trials with one given)
            search_alg=BasicVariantGenerator(random_state=sw.seed, max_concurrent=_concurrency(sw, pre)),
            reuse_actors=False,
        ),
        run_config=tune.RunConfig(
            name=sw.name, storage_path=os.path.abspath(sw.storage_path),
            callbacks=[CloseTrialRuns(uri, parent, total_steps)] if uri else [],
        ),
    )


def trial_objective(pretrain: PretrainJobConfig) -> TrialObjective:
    """A trial's sampled values -> the objective and detector thresholds its pretraining ran with (K, groups,
    ctc_weight, train.collapse_perplexity), for the trials table's "left chance" column."""
    from unispeech_platform.train.health import health_monitor

    def of(values: dict[str, Any]) -> tuple[Objective, Thresholds]:
        job = with_overrides(pretrain, {k: v for k, v in values.items() if k.startswith(("model.", "train."))})
        monitor = health_monitor(job.train, job.model.unispeech_config(), pretraining=True)
        return monitor.objective, monitor.limits

    return of


def _report(sw: SweepSection, results: Any, setup: TrialSetup, exp_dir: Path) -> SweepResult:
    """The trials table, knob plot and best-config YAMLs in <name>-report, and the sweep's end in its parent run."""
    from unispeech_platform.tune.mlflow_callback import finish_sweep_run
    from unispeech_platform.tune.report import best_row, knob_plot, trials_table, write_table

    keys, metric, uri, parent = list(sw.search_space), setup.metric, setup.tracking_uri, setup.parent_run_id
    rows = trials_table(results, keys, metric, sw.mode, trial_steps(setup.pretrain, setup.finetune),
                        trial_objective(setup.pretrain))
    report = exp_dir.with_name(f"{sw.name}-report")
    report.mkdir(parents=True, exist_ok=True)
    best = best_row(rows, metric, sw.mode)
    best_yaml = _best_configs(sw, setup, best, report) if best else None
    if rows:
        write_table(rows, report)
        knob_plot(rows, keys, metric, report / "metric_vs_knobs.png")
    if uri:
        finish_sweep_run(uri, parent, rows, report=report, metric=metric, best=best, failed=bool(results.errors),
                         runs_dir=Path(setup.runs_dir))
    return SweepResult(rows, best, best_yaml, str(report), str(exp_dir), parent, uri)
